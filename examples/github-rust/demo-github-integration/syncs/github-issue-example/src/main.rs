//! The sync `github-issue-example` of nango.yaml: `sluice compile` builds
//! this crate because nango.yaml declares a sync of its name.

use github_helpers::{GithubIssue, Issue, Repository};
use serde_json::json;
use sluice_sdk::{Error, Nango, sync};

#[sync]
fn fetch_data(nango: &Nango) -> Result<(), Error> {
    let Repository { owner, repo } = nango.metadata()?;
    let mut request = nango
        .get(format!("/repos/{owner}/{repo}/issues"))
        .param("state", "all")
        .retries(3);
    if let Some(since) = nango.last_sync_date() {
        request = request.param("since", since);
    }
    // GitHub's pagination (a `Link` header) comes from the provider's
    // definition; `limit` sets the page size.
    for page in request.paginate::<Issue>(Some(json!({ "limit": 2 }))) {
        let issues: Vec<GithubIssue> = page?
            .into_iter()
            .filter(|issue| issue.pull_request.is_none())
            .map(GithubIssue::from)
            .collect();
        nango.log(format!("Saving {} issues of {owner}/{repo}", issues.len()));
        nango.batch_save(&issues, "GithubIssue")?;
    }
    Ok(())
}

fn main() {}
