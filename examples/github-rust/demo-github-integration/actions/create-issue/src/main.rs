//! The action `create-issue` of nango.yaml.

use github_helpers::{GithubIssue, Issue, Repository};
use serde::Deserialize;
use serde_json::json;
use sluice_sdk::{Error, Nango, action};

/// `CreateIssueInput` of nango.yaml.
#[derive(Debug, Deserialize)]
struct CreateIssueInput {
    title: Option<String>,
    body: Option<String>,
}

#[action]
fn run(nango: &Nango, input: CreateIssueInput) -> Result<GithubIssue, Error> {
    let Some(title) = input.title.filter(|t| !t.is_empty()) else {
        // An ActionError: the caller gets this payload.
        return Err(Error::action(json!({ "message": "title is required" })));
    };
    let Repository { owner, repo } = nango.metadata()?;
    let sent = nango
        .post(format!("/repos/{owner}/{repo}/issues"))
        .json(&json!({ "title": title, "body": input.body.unwrap_or_default() }))
        .send();
    match sent {
        Ok(response) => Ok(response.json::<Issue>()?.into()),
        Err(Error::Http(response)) if response.status == 410 => Err(Error::action(
            json!({ "message": format!("issues are disabled in {owner}/{repo}") }),
        )),
        Err(e) => Err(e),
    }
}

fn main() {}
