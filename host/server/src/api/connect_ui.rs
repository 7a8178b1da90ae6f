//! `GET /connect`: sluice's Connect UI, the page an app opens for its end
//! user (the frontend SDK's `openConnectUI({ baseURL: '<server>/connect/',
//! apiURL: '<server>' })`, or a session's `connect_link`). It speaks the
//! original's protocol with its opener (`ready`, `session_token`,
//! `connect`, `error`, `close`), reads `GET /connect/session`,
//! `/integrations` and `/providers/:provider` with the session's token,
//! and connects through the same routes the frontend SDK uses.
//!
//! One page, its script and style inline, allowed by their hashes: it
//! loads nothing else and runs nothing it was not built with. Any site
//! may frame it (the app's own page does); it sends no referrer (a
//! `connect_link`'s query holds the session's token).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const TEMPLATE: &str = include_str!("connect_ui/page.html");
const SCRIPT: &str = include_str!("connect_ui/connect.js");
const STYLE: &str = include_str!("connect_ui/connect.css");

struct Page {
    html: String,
    policy: String,
}

fn hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    // A browser hashes the text as parsed, its line breaks made `\n`: a
    // checkout with CRLF endings would otherwise be refused its own
    // script.
    let script = SCRIPT.replace("\r\n", "\n");
    let style = STYLE.replace("\r\n", "\n");
    // Neither may end its element early.
    debug_assert!(!script.contains("</script") && !style.contains("</style"));
    let html = TEMPLATE
        .replace("\r\n", "\n")
        .replacen(
            "<style>STYLE</style>",
            &format!("<style>{style}</style>"),
            1,
        )
        .replacen(
            "<script>SCRIPT</script>",
            &format!("<script>{script}</script>"),
            1,
        );
    // No `frame-ancestors`: any app frames it, an Electron or Capacitor
    // one too (their schemes match no source). `ws:` and `wss:` for the
    // flows' websocket, which older browsers do not take as 'self'.
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self' ws: wss:; \
         form-action 'none'; base-uri 'none'",
        hash(&script),
        hash(&style)
    );
    Page { html, policy }
});

/// `GET /connect` (and `/connect/`): the page. It takes no secret: the
/// session's token reaches it in its query (`session_token`) or from its
/// opener, and every call it makes is checked by the API.
pub async fn page() -> Response {
    let page = &*PAGE;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, page.policy.as_str()),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page.html.clone(),
    )
        .into_response()
}
