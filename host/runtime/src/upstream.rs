//! Where a script's HTTP requests go: the network, the network with every
//! exchange kept (`dryrun --save-responses`), or recorded mocks (`sluice
//! test`). The proxy, the paginator and `info()` ask the [`Upstream`]; no
//! other part of the runtime knows which one it is.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use url::Url;

use crate::bindings::http::{HttpError, Request};
use crate::bindings::types::{NangoError, Response};
use crate::paginate::{Pager, Paginator};
use crate::proxy::Prepared;
use crate::replay::{RecordedCall, Replay, ReplayPager};

/// The network: one shared HTTP client, optionally sending every request to
/// another origin (after the egress check against the real one), as dry
/// runs against a mock API do.
#[derive(Debug, Clone)]
pub struct Network {
    pub client: reqwest::Client,
    /// For requests to a host a connection chose: resolves names to public
    /// addresses only ([`crate::proxy::public_only_client`]).
    pub public_client: reqwest::Client,
    pub redirect: Option<Url>,
}

impl Network {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            public_client: crate::proxy::public_only_client(),
            redirect: None,
        }
    }
}

/// The upstream exchanges of a recording upstream, final responses only.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<RecordedCall>>>);

impl Recorder {
    /// The exchanges kept so far, leaving none.
    pub fn take(&self) -> Vec<RecordedCall> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The network.
    Network(Network),
    /// The network, keeping each request's final response.
    Recording(Network, Recorder),
    /// Recorded mocks answer instead, with the original test harness's
    /// rules; no connection, credentials or network are involved.
    Replay(Arc<Replay>),
}

impl Upstream {
    /// The network through `client`.
    pub fn network(client: reqwest::Client) -> Self {
        Upstream::Network(Network::new(client))
    }

    /// True when recordings answer instead of the network.
    pub fn replaying(&self) -> bool {
        matches!(self, Upstream::Replay(_))
    }

    pub(crate) fn recordings(&self) -> Option<&Replay> {
        match self {
            Upstream::Replay(r) => Some(r),
            _ => None,
        }
    }

    /// A recorded answer to the script's request, when recordings answer.
    pub(crate) fn answer(
        &self,
        script: &str,
        variant: &str,
        req: &Request,
    ) -> Option<Result<Response, NangoError>> {
        self.recordings()
            .map(|r| r.answer(script, variant, req).map(|a| a.response))
    }

    /// Keeps the final response to a script's request when recording.
    pub(crate) fn observe(&self, req: &Request, resp: &Response) {
        if let Upstream::Recording(_, recorder) = self {
            recorder
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(RecordedCall::new(req, resp));
        }
    }

    /// A paginator for `req`: over the network, or over recordings.
    /// `zero_yaml`: the script's SDK is the zero-yaml format's (see
    /// [`crate::Execution::zero_yaml`]).
    pub(crate) fn pager(
        &self,
        req: Request,
        config: Map<String, Value>,
        zero_yaml: bool,
    ) -> Result<Pager, HttpError> {
        if self.replaying() {
            ReplayPager::new(req, config).map(|p| Pager::Replay(Box::new(p)))
        } else {
            Paginator::new(req, config).map(|p| Pager::Live(Box::new(p.zero_yaml(zero_yaml))))
        }
    }

    /// One attempt on the wire.
    pub(crate) async fn transmit(
        &self,
        prepared: &Prepared,
        max_response_bytes: usize,
    ) -> Result<Response, NangoError> {
        match self {
            Upstream::Network(n) | Upstream::Recording(n, _) => {
                // A dry run's redirect sends every request to its mock.
                let client = if prepared.public_only && n.redirect.is_none() {
                    &n.public_client
                } else {
                    &n.client
                };
                crate::proxy::transmit(client, n.redirect.as_ref(), max_response_bytes, prepared)
                    .await
            }
            Upstream::Replay(_) => Err(crate::proxy::nango_error(
                "mock_not_found",
                "replaying recordings: no request goes on the wire",
            )),
        }
    }
}
