//! `sluice init` (a starter nango-integrations folder) and `sluice
//! generate` (models.ts, the JSON schemas, and a file for every declared
//! script that has none; existing files are never touched).

use std::path::{Path, PathBuf};

use sluice_nango_yaml::{self as yaml, NangoYaml, ScriptKind};

use crate::compile::{self, CompileError};

/// Why init or generate stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already has a nango.yaml: sluice init only creates new folders")]
    Exists(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
}

fn write(path: &Path, text: &str) -> Result<(), InitError> {
    let err = |source| InitError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)
}

const INTEGRATION: &str = "demo-github-integration";

const NANGO_YAML: &str = r#"# Integrations, their scripts and the models they produce. `sluice compile`
# checks this file and generates models.ts from it.
integrations:
    demo-github-integration:
        syncs:
            github-issue-example:
                description: Fetches the issues of the repository named in the connection's metadata
                runs: every half hour
                output: GithubIssue
                sync_type: incremental
                endpoint: GET /github/issues
        actions:
            create-issue:
                description: Opens an issue in the repository named in the connection's metadata
                input: CreateIssueInput
                output: GithubIssue
                endpoint: POST /github/issues

models:
    GithubIssue:
        id: string
        number: number
        title: string
        state: string
        author: string
        url: string
        created_at: date
        updated_at: date
    CreateIssueInput:
        title: string
        body?: string
"#;

const SYNC: &str = r#"import type { NangoSync, GithubIssue } from '../../models';

interface Repository {
    owner: string;
    repo: string;
}

interface Issue {
    id: number;
    number: number;
    title: string;
    state: string;
    html_url: string;
    user: { login: string };
    created_at: string;
    updated_at: string;
    pull_request?: unknown;
}

export function toIssue(issue: Issue): GithubIssue {
    return {
        id: String(issue.id),
        number: issue.number,
        title: issue.title,
        state: issue.state,
        author: issue.user.login,
        url: issue.html_url,
        created_at: new Date(issue.created_at),
        updated_at: new Date(issue.updated_at)
    };
}

export default async function fetchData(nango: NangoSync): Promise<void> {
    const { owner, repo } = await nango.getMetadata<Repository>();
    const params: Record<string, string> = { state: 'all' };
    if (nango.lastSyncDate) {
        params['since'] = nango.lastSyncDate.toISOString();
    }
    // GitHub's pagination (a `Link` header) comes from the provider's
    // definition; `limit` sets the page size.
    for await (const page of nango.paginate<Issue>({ endpoint: `/repos/${owner}/${repo}/issues`, params, paginate: { limit: 2 }, retries: 3 })) {
        const issues = page.filter((issue) => !issue.pull_request).map(toIssue);
        await nango.log(`Saving ${issues.length} issues of ${owner}/${repo}`);
        await nango.batchSave<GithubIssue>(issues, 'GithubIssue');
    }
}
"#;

const ACTION: &str = r#"import type { NangoAction, GithubIssue, CreateIssueInput } from '../../models';
import { toIssue } from '../syncs/github-issue-example';

export default async function runAction(nango: NangoAction, input: CreateIssueInput): Promise<GithubIssue> {
    if (!input?.title) {
        throw new nango.ActionError({ message: 'title is required' });
    }
    const { owner, repo } = await nango.getMetadata<{ owner: string; repo: string }>();
    try {
        const response = await nango.post({ endpoint: `/repos/${owner}/${repo}/issues`, data: { title: input.title, body: input.body ?? '' } });
        return toIssue(response.data);
    } catch (error: any) {
        if (error.response?.status === 410) {
            throw new nango.ActionError({ message: `issues are disabled in ${owner}/${repo}` });
        }
        throw error;
    }
}
"#;

const CONNECTIONS: &str = r#"# Local connections for `sluice dryrun`. The host injects the credentials
# according to their type; scripts never see them in requests they build.
connections:
    - connection_id: demo
      provider_config_key: demo-github-integration
      provider: github
      credentials:
          type: OAUTH2
          access_token: demo-token
      metadata:
          owner: octocat
          repo: hello-world
"#;

const MOCK_API: &str = r#"# A small slice of GitHub's API for `sluice dryrun --mock-upstream mock-api.yaml`:
# two pages of issues (the first links to the second) and issue creation.
routes:
    - path: /repos/octocat/hello-world/issues
      query: { per_page: "2", state: all }
      require_headers: { authorization: Bearer demo-token }
      headers:
          link: '<https://api.github.com/repos/octocat/hello-world/issues?per_page=2&state=all&page=2>; rel="next"'
      body:
          - { id: 1001, number: 1, title: Found a bug, state: open, html_url: "https://github.com/octocat/hello-world/issues/1", user: { login: octocat }, created_at: "2024-05-01T10:00:00Z", updated_at: "2024-05-02T10:00:00Z" }
          - { id: 1002, number: 2, title: Add a README, state: closed, html_url: "https://github.com/octocat/hello-world/issues/2", user: { login: hubot }, created_at: "2024-05-03T10:00:00Z", updated_at: "2024-05-04T10:00:00Z" }
    - path: /repos/octocat/hello-world/issues
      query: { per_page: "2", state: all, page: "2" }
      require_headers: { authorization: Bearer demo-token }
      body:
          - { id: 1003, number: 3, title: Crash on start, state: open, html_url: "https://github.com/octocat/hello-world/issues/3", user: { login: octocat }, created_at: "2024-05-05T10:00:00Z", updated_at: "2024-05-06T10:00:00Z" }
          - { id: 1004, number: 4, title: Fix the crash, state: open, html_url: "https://github.com/octocat/hello-world/pull/4", user: { login: hubot }, created_at: "2024-05-07T10:00:00Z", updated_at: "2024-05-07T10:00:00Z", pull_request: { url: "https://api.github.com/repos/octocat/hello-world/pulls/4" } }
    - method: POST
      path: /repos/octocat/hello-world/issues
      require_headers: { authorization: Bearer demo-token }
      status: 201
      body: { id: 1005, number: 5, title: New issue, state: open, html_url: "https://github.com/octocat/hello-world/issues/5", user: { login: octocat }, created_at: "2024-05-08T10:00:00Z", updated_at: "2024-05-08T10:00:00Z" }
"#;

const GITIGNORE: &str = "# sluice's build outputs\n.sluice/\n";

/// Creates a starter folder: nango.yaml with a sync and an action, their
/// scripts, a local connection and a mock of the API they call.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    if dir.join("nango.yaml").exists() {
        return Err(InitError::Exists(dir.display().to_string()));
    }
    let files = [
        (PathBuf::from("nango.yaml"), NANGO_YAML),
        (
            Path::new(INTEGRATION).join("syncs/github-issue-example.ts"),
            SYNC,
        ),
        (
            Path::new(INTEGRATION).join("actions/create-issue.ts"),
            ACTION,
        ),
        (PathBuf::from("connections.yaml"), CONNECTIONS),
        (PathBuf::from("mock-api.yaml"), MOCK_API),
        (PathBuf::from(".gitignore"), GITIGNORE),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        write(&path, text)?;
        written.push(path);
    }
    let loaded = yaml::load(dir).map_err(CompileError::from)?;
    compile::generate_models(dir, &loaded.config)?;
    written.push(dir.join("models.ts"));
    Ok(written)
}

/// The file a missing script gets.
fn scaffold(config: &NangoYaml, pck: &str, name: &str, kind: ScriptKind) -> String {
    let integration = config.integration(pck);
    match kind {
        ScriptKind::Sync => {
            let sync = integration.and_then(|i| i.sync(name));
            let models = sync.map(|s| s.output.join(", ")).unwrap_or_default();
            let first = sync
                .and_then(|s| s.output.first().cloned())
                .unwrap_or_else(|| "Model".into());
            let mut text = format!(
                "import type {{ NangoSync, {models} }} from '../../models';\n\n\
                 export default async function fetchData(nango: NangoSync): Promise<void> {{\n    \
                 // Fetch with nango.get / nango.paginate, then save:\n    \
                 // await nango.batchSave<{first}>(records, '{first}');\n\
                 }}\n"
            );
            if sync.is_some_and(|s| !s.webhook_subscriptions.is_empty()) {
                text.push_str(
                    "\nexport async function onWebhookPayloadReceived(nango: NangoSync, payload: any): Promise<void> {\n    \
                     // Handle one webhook delivery.\n\
                     }\n",
                );
            }
            text
        }
        ScriptKind::Action => {
            let action = integration.and_then(|i| i.action(name));
            let input = action.and_then(|a| a.input.clone());
            let output = action
                .and_then(|a| a.output.first().cloned())
                .unwrap_or_else(|| "void".into());
            let mut types = vec!["NangoAction".to_string()];
            types.extend(input.iter().cloned());
            if output != "void" {
                types.push(output.clone());
            }
            let param = input.map(|i| format!(", input: {i}")).unwrap_or_default();
            format!(
                "import type {{ {} }} from '../../models';\n\n\
                 export default async function runAction(nango: NangoAction{param}): Promise<{output}> {{\n    \
                 // Call the API with nango.get / nango.post and return the result.\n    \
                 // Throw new nango.ActionError({{ message }}) to fail with a payload.\n    \
                 throw new nango.ActionError({{ message: 'not implemented' }});\n\
                 }}\n",
                types.join(", ")
            )
        }
        ScriptKind::OnEvent => "import type { NangoAction } from '../../models';\n\n\
             export default async function onEvent(nango: NangoAction): Promise<void> {\n    \
             // Runs after a connection is created or before it is deleted.\n\
             }\n"
        .to_string(),
    }
}

/// `sluice generate`: models.ts, `.nango/schema.json`, and a scaffold for
/// every declared script without a file. Returns the files written.
pub fn generate(dir: &Path) -> Result<(Vec<PathBuf>, Vec<yaml::Diagnostic>), InitError> {
    let loaded = yaml::load(dir).map_err(CompileError::from)?;
    let config = &loaded.config;
    compile::generate_models(dir, config)?;
    let mut written = vec![dir.join("models.ts"), dir.join(".nango/schema.json")];
    for integration in &config.integrations {
        let pck = &integration.provider_config_key;
        for (name, kind) in integration.scripts() {
            if compile::find_source(dir, pck, name, kind).is_some() {
                continue;
            }
            let path = dir
                .join(pck)
                .join(compile::kind_dir(kind))
                .join(format!("{name}.ts"));
            write(&path, &scaffold(config, pck, name, kind))?;
            written.push(path);
        }
    }
    Ok((written, loaded.warnings))
}
