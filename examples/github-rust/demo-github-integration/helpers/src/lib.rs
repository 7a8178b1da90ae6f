//! What the integration's scripts share: the model they save and return,
//! and GitHub's issue as its API answers it.

use serde::{Deserialize, Serialize};

/// `GithubIssue` of nango.yaml. Records are checked against it: a field
/// nango.yaml makes optional (`name?: type`) would be an `Option` marked
/// `#[serde(skip_serializing_if = "Option::is_none")]` (absent, not null).
#[derive(Debug, Serialize)]
pub struct GithubIssue {
    pub id: String,
    pub number: u64,
    pub title: String,
    pub state: String,
    pub author: String,
    pub url: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An issue as GitHub's API returns it (the fields the scripts read).
#[derive(Debug, Deserialize)]
pub struct Issue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub state: String,
    pub html_url: String,
    pub user: User,
    pub created_at: String,
    pub updated_at: String,
    /// Set on pull requests, which GitHub lists with the issues.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub login: String,
}

impl From<Issue> for GithubIssue {
    fn from(issue: Issue) -> Self {
        GithubIssue {
            id: issue.id.to_string(),
            number: issue.number,
            title: issue.title,
            state: issue.state,
            author: issue.user.login,
            url: issue.html_url,
            created_at: issue.created_at,
            updated_at: issue.updated_at,
        }
    }
}

/// The connection's metadata: which repository.
#[derive(Debug, Deserialize)]
pub struct Repository {
    pub owner: String,
    pub repo: String,
}
