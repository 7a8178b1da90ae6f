//! The providers whose tokens the original asks for with code of its own
//! (its `ProviderClient`) instead of its generic OAuth2 client: the request
//! each sends for an authorization code or a refresh, and what it keeps of
//! the answer. The one place that says which providers these are
//! ([`ProviderClient::of`]); nothing here sends anything:
//! [`crate::refresh::Connections::client_grant`] does, with the generic
//! path's egress checks, bounds, timeout and redaction.
//!
//! What a client keeps of an answer is what the connection stores as its
//! `raw` credentials, as the original stores it (TikTok Ads' token and
//! advertisers at the top, not under the answer's `data`).

use serde_json::{Map, Value};
use sluice_runtime::connection::Credentials;

/// Coros says its tokens last 30 days from a refresh, which answers no
/// expiry.
const COROS_EXPIRES_IN: i64 = 2_592_000;

/// Stripe Apps' access tokens last an hour; its answer says nothing of it.
const STRIPE_APP_EXPIRES_IN: i64 = 3600;

/// A provider the original asks for tokens its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProviderClient {
    /// `figma`, `figjam`: JSON, the redirect URI in the code request's
    /// query, refreshes at `refresh_url` keeping the refresh token.
    Figma,
    /// `coros`, `coros-sandbox`: a form; its answers say `result` and
    /// `message`, a refresh only whether it worked.
    Coros,
    /// `facebook`: JSON; no refresh token, a token is exchanged for a
    /// longer-lived one (`fb_exchange_token`).
    Facebook,
    /// `tiktok-ads`: JSON with TikTok's own names; tokens do not expire.
    TiktokAds,
    /// `tiktok-accounts`: JSON, the tokens under the answer's `data`.
    TiktokAccounts,
    /// `stripe-app`, `stripe-app-sandbox`: a form, the client secret alone
    /// as Basic.
    StripeApp,
    /// `braintree`, `braintree-sandbox`: Braintree's SDK in the original;
    /// refused here (see [`ProviderClient::unsupported`]).
    Braintree,
}

/// How a connection of such a provider gets a new access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// With its refresh token, as the generic path.
    RefreshToken,
    /// With its access token (Facebook's exchange).
    AccessToken,
    /// Never: its token is used as it is.
    Never,
}

/// Which of the provider's URLs a request goes to (each a template,
/// expanded and checked as the generic path's token URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `token_url`.
    Token,
    /// `refresh_url`.
    Refresh,
}

/// What a request carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// Nothing (Facebook's refresh: all in the query).
    Empty,
    /// `application/json`.
    Json(Map<String, Value>),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
}

/// One token request of a provider client, a POST.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientRequest {
    pub endpoint: Endpoint,
    /// Added to the URL's query.
    pub query: Vec<(String, String)>,
    pub body: Body,
    /// `Authorization: Basic` of this user and password, as they are.
    pub basic: Option<(String, String)>,
}

fn json_body(pairs: &[(&str, &str)]) -> Body {
    Body::Json(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

fn form_body(pairs: &[(&str, &str)]) -> Body {
    Body::Form(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The `keys` of `from` that it has (a `null` kept as one).
fn kept(from: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some((k.to_string(), from.get(*k)?.clone())))
        .collect()
}

/// A value of a provider's answer shown in a message.
fn shown(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "none".into(),
    }
}

/// TikTok's answer's `data` (where its tokens are), or why not.
fn tiktok_data(answer: &Map<String, Value>) -> Result<&Map<String, Value>, String> {
    answer
        .get("data")
        .and_then(Value::as_object)
        .filter(|d| d.get("access_token").is_some_and(Value::is_string))
        .ok_or_else(|| {
            format!(
                "TikTok's answer has no token in its `data` (code {}, message {})",
                shown(answer.get("code")),
                shown(answer.get("message"))
            )
        })
}

const TIKTOK_ACCOUNTS_KEPT: [&str; 7] = [
    "access_token",
    "token_type",
    "scope",
    "expires_in",
    "refresh_token",
    "refresh_token_expires_in",
    "open_id",
];

impl ProviderClient {
    /// The client of provider `name` (the integration's provider, as the
    /// original chooses), if the original has one sluice follows.
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "figma" | "figjam" => Self::Figma,
            "coros" | "coros-sandbox" => Self::Coros,
            "facebook" => Self::Facebook,
            "tiktok-ads" => Self::TiktokAds,
            "tiktok-accounts" => Self::TiktokAccounts,
            "stripe-app" | "stripe-app-sandbox" => Self::StripeApp,
            "braintree" | "braintree-sandbox" => Self::Braintree,
            _ => return None,
        })
    }

    /// Why provider `name`'s tokens cannot be had at all, if they cannot.
    pub(crate) fn unsupported(self, name: &str) -> Option<String> {
        (self == Self::Braintree).then(|| {
            format!(
                "sluice does not support the token exchange of provider `{name}`: the original asks Braintree for tokens through Braintree's SDK (its gateway's own API: an API version header and XML answers), not an OAuth2 token endpoint, so sluice can neither connect nor refresh `{name}` connections."
            )
        })
    }

    /// How a connection gets a new access token.
    pub(crate) fn renewal(self) -> Renewal {
        match self {
            Self::Facebook => Renewal::AccessToken,
            Self::TiktokAds => Renewal::Never,
            Self::Figma
            | Self::Coros
            | Self::TiktokAccounts
            | Self::StripeApp
            | Self::Braintree => Renewal::RefreshToken,
        }
    }

    /// Whether a refresh goes to the provider's `refresh_url` (whose host
    /// a connection's value must not choose, as the token URL's).
    pub(crate) fn uses_refresh_url(self) -> bool {
        matches!(self, Self::Figma | Self::Coros | Self::TiktokAccounts)
    }

    /// The request exchanging `code` (sent back to `callback`, with PKCE's
    /// `verifier` if the flow made one) for tokens, with the client
    /// `(id, secret)`.
    pub(crate) fn code_request(
        self,
        name: &str,
        code: &str,
        callback: &str,
        verifier: Option<&str>,
        (id, secret): (&str, &str),
    ) -> Result<ClientRequest, String> {
        let to_token_url = |query: Vec<(String, String)>, body: Body| ClientRequest {
            endpoint: Endpoint::Token,
            query,
            body,
            basic: None,
        };
        let redirect_query = vec![("redirect_uri".to_string(), callback.to_string())];
        Ok(match self {
            Self::Figma => to_token_url(
                redirect_query,
                json_body(&[
                    ("client_id", id),
                    ("client_secret", secret),
                    ("code", code),
                    ("grant_type", "authorization_code"),
                ]),
            ),
            Self::Coros => to_token_url(
                Vec::new(),
                form_body(&[
                    ("client_id", id),
                    ("redirect_uri", callback),
                    ("code", code),
                    ("client_secret", secret),
                    ("grant_type", "authorization_code"),
                ]),
            ),
            Self::Facebook => {
                let mut body = vec![
                    ("client_id", id),
                    ("client_secret", secret),
                    ("code", code),
                    ("redirect_uri", callback),
                ];
                body.extend(verifier.map(|v| ("code_verifier", v)));
                to_token_url(redirect_query, json_body(&body))
            }
            Self::TiktokAds => to_token_url(
                Vec::new(),
                json_body(&[("secret", secret), ("app_id", id), ("auth_code", code)]),
            ),
            Self::TiktokAccounts => to_token_url(
                Vec::new(),
                json_body(&[
                    ("client_id", id),
                    ("client_secret", secret),
                    ("grant_type", "authorization_code"),
                    ("auth_code", code),
                    ("redirect_uri", callback),
                ]),
            ),
            Self::StripeApp => ClientRequest {
                basic: Some((secret.to_string(), String::new())),
                ..to_token_url(
                    Vec::new(),
                    form_body(&[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", callback),
                    ]),
                )
            },
            Self::Braintree => return Err(self.unsupported(name).unwrap_or_default()),
        })
    }

    /// What the connection keeps of the answer to a code: its `raw`
    /// credentials, whose `access_token`, `refresh_token` and expiry
    /// (`expires_in`) it uses.
    pub(crate) fn code_tokens(
        self,
        answer: &Map<String, Value>,
    ) -> Result<Map<String, Value>, String> {
        match self {
            Self::Figma => Ok(kept(
                answer,
                &["access_token", "refresh_token", "expires_in"],
            )),
            Self::Coros => {
                let token = answer.get("access_token").and_then(Value::as_str);
                if token.is_none_or(str::is_empty) {
                    return Err(format!(
                        "Coros gave no access token: result {}, message {}",
                        shown(answer.get("result")),
                        shown(answer.get("message"))
                    ));
                }
                Ok(kept(
                    answer,
                    &["access_token", "refresh_token", "expires_in", "openId"],
                ))
            }
            Self::Facebook => Ok(kept(answer, &["access_token", "expires_in"])),
            Self::TiktokAds => {
                let data = tiktok_data(answer)?;
                let mut tokens = kept(data, &["access_token", "advertiser_ids", "scope"]);
                tokens.extend(kept(answer, &["request_id"]));
                Ok(tokens)
            }
            Self::TiktokAccounts => {
                let mut tokens = kept(tiktok_data(answer)?, &TIKTOK_ACCOUNTS_KEPT);
                tokens.extend(kept(answer, &["request_id"]));
                Ok(tokens)
            }
            Self::StripeApp => Ok(stripe_tokens(answer)),
            // No request was made.
            Self::Braintree => Err("Braintree's tokens are not asked for by sluice".into()),
        }
    }

    /// The request renewing a connection's token, whose credentials are
    /// `credentials`, with the client `(id, secret)`.
    pub(crate) fn refresh_request(
        self,
        name: &str,
        credentials: &Credentials,
        (id, secret): (&str, &str),
    ) -> Result<ClientRequest, String> {
        let field = |k: &str| {
            credentials
                .field(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the connection has no {}", k.replace('_', " ")))
        };
        let to = |endpoint: Endpoint, body: Body| ClientRequest {
            endpoint,
            query: Vec::new(),
            body,
            basic: None,
        };
        Ok(match self {
            Self::Figma => to(
                Endpoint::Refresh,
                json_body(&[
                    ("client_id", id),
                    ("client_secret", secret),
                    ("refresh_token", field("refresh_token")?),
                ]),
            ),
            Self::Coros => to(
                Endpoint::Refresh,
                form_body(&[
                    ("client_id", id),
                    ("refresh_token", field("refresh_token")?),
                    ("client_secret", secret),
                    ("grant_type", "refresh_token"),
                ]),
            ),
            Self::Facebook => ClientRequest {
                query: [
                    ("client_id", id),
                    ("client_secret", secret),
                    ("grant_type", "fb_exchange_token"),
                    ("fb_exchange_token", field("access_token")?),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..to(Endpoint::Token, Body::Empty)
            },
            Self::TiktokAccounts => to(
                Endpoint::Refresh,
                json_body(&[
                    ("client_id", id),
                    ("client_secret", secret),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", field("refresh_token")?),
                ]),
            ),
            Self::StripeApp => ClientRequest {
                basic: Some((secret.to_string(), String::new())),
                ..to(
                    Endpoint::Token,
                    form_body(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", field("refresh_token")?),
                    ]),
                )
            },
            Self::TiktokAds => {
                return Err(format!(
                    "provider `{name}`'s tokens are not refreshed (they do not expire)"
                ));
            }
            Self::Braintree => return Err(self.unsupported(name).unwrap_or_default()),
        })
    }

    /// What the connection keeps of the answer to a refresh (its new
    /// `raw`; a refresh token it lacks is the connection's own, kept).
    pub(crate) fn refresh_tokens(
        self,
        answer: &Map<String, Value>,
        credentials: &Credentials,
    ) -> Result<Map<String, Value>, String> {
        match self {
            Self::Figma => {
                let mut tokens = kept(answer, &["access_token", "expires_in"]);
                if let Some(r) = credentials.field("refresh_token") {
                    tokens.insert("refresh_token".into(), Value::String(r.into()));
                }
                Ok(tokens)
            }
            Self::Coros => {
                if answer.get("result").and_then(Value::as_str) != Some("0000") {
                    return Err(format!(
                        "Coros refused the refresh: result {}, message {}",
                        shown(answer.get("result")),
                        shown(answer.get("message"))
                    ));
                }
                // Coros answers only that it worked: the tokens stay.
                let mut tokens = kept(credentials.as_map(), &["access_token", "refresh_token"]);
                tokens.insert("expires_in".into(), COROS_EXPIRES_IN.into());
                Ok(tokens)
            }
            Self::Facebook => Ok(kept(answer, &["access_token", "expires_in"])),
            Self::TiktokAccounts => {
                let mut tokens = kept(tiktok_data(answer)?, &TIKTOK_ACCOUNTS_KEPT);
                tokens.extend(kept(answer, &["request_id"]));
                Ok(tokens)
            }
            Self::StripeApp => Ok(stripe_tokens(answer)),
            Self::TiktokAds | Self::Braintree => {
                Err("this provider's tokens are not refreshed by sluice".into())
            }
        }
    }
}

/// What a Stripe App connection keeps of a token answer.
fn stripe_tokens(answer: &Map<String, Value>) -> Map<String, Value> {
    let mut tokens = kept(
        answer,
        &[
            "access_token",
            "livemode",
            "refresh_token",
            "scope",
            "stripe_publishable_key",
            "stripe_user_id",
            "token_type",
        ],
    );
    tokens.insert("expires_in".into(), STRIPE_APP_EXPIRES_IN.into());
    tokens
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn credentials(v: Value) -> Credentials {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn each_provider_and_only_these_have_a_client() {
        for (name, client) in [
            ("figma", ProviderClient::Figma),
            ("figjam", ProviderClient::Figma),
            ("coros", ProviderClient::Coros),
            ("coros-sandbox", ProviderClient::Coros),
            ("facebook", ProviderClient::Facebook),
            ("tiktok-ads", ProviderClient::TiktokAds),
            ("tiktok-accounts", ProviderClient::TiktokAccounts),
            ("stripe-app", ProviderClient::StripeApp),
            ("stripe-app-sandbox", ProviderClient::StripeApp),
            ("braintree", ProviderClient::Braintree),
            ("braintree-sandbox", ProviderClient::Braintree),
        ] {
            assert_eq!(ProviderClient::of(name), Some(client), "{name}");
        }
        for name in ["github", "tiktok-personal", "stripe", "figma2", ""] {
            assert_eq!(ProviderClient::of(name), None, "{name}");
        }
        let refused = ProviderClient::Braintree
            .code_request("braintree-sandbox", "c", "cb", None, ("id", "s"))
            .unwrap_err();
        assert!(
            refused.contains("`braintree-sandbox`") && refused.contains("does not support"),
            "{refused}"
        );
        assert!(ProviderClient::Figma.unsupported("figma").is_none());
    }

    #[test]
    fn coros_keeps_its_tokens_and_names_a_refusal() {
        let got = ProviderClient::Coros
            .code_tokens(&map(json!({"access_token": "a", "refresh_token": "r",
                "expires_in": 100, "openId": "o", "other": 1})))
            .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"access_token": "a", "refresh_token": "r", "expires_in": 100, "openId": "o"})
        );
        let refused = ProviderClient::Coros
            .code_tokens(&map(
                json!({"result": "5002", "message": "Unauthorized client ID"}),
            ))
            .unwrap_err();
        assert!(
            refused.contains("5002") && refused.contains("Unauthorized client ID"),
            "{refused}"
        );
        let old = credentials(json!({"type": "OAUTH2", "access_token": "a", "refresh_token": "r"}));
        let refused = ProviderClient::Coros
            .refresh_tokens(
                &map(json!({"result": "1001", "message": "Service exceptions"})),
                &old,
            )
            .unwrap_err();
        assert!(
            refused.contains("1001") && refused.contains("Service exceptions"),
            "{refused}"
        );
        // `0000` as a number is not Coros' success.
        assert!(
            ProviderClient::Coros
                .refresh_tokens(&map(json!({"result": 0})), &old)
                .is_err()
        );
    }

    #[test]
    fn a_tiktok_answer_without_data_names_its_code() {
        for client in [ProviderClient::TiktokAds, ProviderClient::TiktokAccounts] {
            let refused = client
                .code_tokens(&map(
                    json!({"code": 40001, "message": "bad auth_code", "data": {}}),
                ))
                .unwrap_err();
            assert!(
                refused.contains("40001") && refused.contains("bad auth_code"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_refresh_needs_the_token_it_sends() {
        let no_refresh = credentials(json!({"type": "OAUTH2", "access_token": "a"}));
        let e = ProviderClient::Figma
            .refresh_request("figma", &no_refresh, ("i", "s"))
            .unwrap_err();
        assert!(e.contains("no refresh token"), "{e}");
        let asked = ProviderClient::Facebook
            .refresh_request("facebook", &no_refresh, ("i", "s"))
            .unwrap();
        assert_eq!(asked.body, Body::Empty);
        assert!(
            asked
                .query
                .contains(&("fb_exchange_token".into(), "a".into()))
        );
    }
}
