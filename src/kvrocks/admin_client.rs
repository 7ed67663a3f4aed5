//! A small client for other leasegates' admin APIs, used by the failover
//! (talking to the target proxy) and by the `failover` / `ctl` commands.
//!
//! Its typed calls send and read the [`admin_api`](super::admin_api) wire
//! types; every failure is an [`AdminError`].

use std::time::Duration;

use crate::kvrocks::connector::Connector;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kvrocks::admin_api::{
    ErrorBody, FailoverReport, FailoverRequest, LeaseRequest, LeaseResponse, PauseRequest,
    PauseResponse, ProbeReport, ReloadResponse, Status, FAILOVER_FAILED_STATUS,
};

/// Largest admin answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a call to an admin API failed. `uri` is `http://<addr><path>` (or
/// the `https://` address given, with the path).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request could not be built (a malformed address).
    #[error("cannot build {method} {uri}: {source}")]
    Build {
        method: String,
        uri: String,
        source: hyper::http::Error,
    },
    /// The request body could not be encoded.
    #[error("cannot build {method} {uri}: cannot encode the body: {source}")]
    Encode {
        method: String,
        uri: String,
        source: serde_json::Error,
    },
    /// No connection, or the exchange broke off (an address that speaks
    /// no HTTP, such as a leasegate's RESP port: said so).
    #[error("{method} {uri}: {}{}", error_chain(.source), not_http_hint(.source))]
    Request {
        method: String,
        uri: String,
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body could not be read (or was over 1 MiB).
    #[error("{method} {uri}: cannot read the answer: {source}")]
    Read {
        method: String,
        uri: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete answer within the client's timeout.
    #[error("{method} {uri}: no answer within {timeout_ms} ms")]
    Timeout {
        method: String,
        uri: String,
        timeout_ms: u128,
    },
    /// A status other than 2xx; `body` is the answer, trimmed (an
    /// [`ErrorBody`] from a leasegate: see [`AdminError::server_message`]).
    #[error("{method} {uri} answered {status}: {body}")]
    Status {
        method: String,
        uri: String,
        status: u16,
        body: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("{method} {uri}: invalid JSON ({source})")]
    BadJson {
        method: String,
        uri: String,
        source: serde_json::Error,
    },
}

impl AdminError {
    /// The server's `{"error": "..."}` message, for a non-2xx answer that has one.
    pub fn server_message(&self) -> Option<String> {
        match self {
            AdminError::Status { body, .. } => serde_json::from_str::<ErrorBody>(body)
                .ok()
                .map(|b| b.error),
            _ => None,
        }
    }

    /// The HTTP status, for a non-2xx answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A keep-alive client for admin APIs.
/// An `https://` admin API named to the command line without its CAs.
pub const CLI_CA_MISSING: &str =
    "an https:// admin API needs the CAs to trust: set LEASEGATE_ADMIN_CA to their PEM file";
/// An `https://` target named to a running leasegate's failover without its CAs.
pub const SERVER_CA_MISSING: &str =
    "an https:// admin API needs admin.tls.ca_file (the CAs to trust)";

#[derive(Clone)]
pub struct AdminClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl AdminClient {
    /// Admin APIs are addressed as `host:port` (plain HTTP) or
    /// `https://host:port`, whose certificate must chain to `tls`'s CAs;
    /// `missing_ca` names where those come from, for an `https://` address
    /// without them ([`CLI_CA_MISSING`], [`SERVER_CA_MISSING`]).
    pub fn new(
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        missing_ca: &'static str,
    ) -> AdminClient {
        AdminClient {
            client: Client::builder(TokioExecutor::new())
                .build(Connector::new(timeout, tls, missing_ca)),
            timeout,
        }
    }

    /// `GET /v1/status`.
    pub async fn status(&self, addr: &str) -> Result<Status, AdminError> {
        self.exchange(addr, "GET", "/v1/status", None, None::<&()>, None)
            .await
    }

    /// `GET /v1/probe`.
    pub async fn probe(&self, addr: &str) -> Result<ProbeReport, AdminError> {
        self.exchange(addr, "GET", "/v1/probe", None, None::<&()>, None)
            .await
    }

    /// `POST /v1/lease`: grants (or, naming another node, revokes) the lease.
    /// A refused grant (stale epoch, bad TTL) is [`AdminError::Status`].
    pub async fn grant_lease(
        &self,
        addr: &str,
        token: Option<&str>,
        request: &LeaseRequest,
    ) -> Result<LeaseResponse, AdminError> {
        self.exchange(addr, "POST", "/v1/lease", token, Some(request), None)
            .await
    }

    /// Whether the admin API at `addr` accepts `token` for its changes,
    /// changing nothing: an empty `POST /v1/lease`, which a leasegate
    /// refuses for its token first (401) and only then for its body (400,
    /// no lease in it). Asked before a failover pauses anything, so that a
    /// token the target refuses is found before its node is promoted.
    pub async fn check_token(&self, addr: &str, token: Option<&str>) -> Result<(), AdminError> {
        let (status, text) = self
            .call(addr, "POST", "/v1/lease", token, Some(String::new()))
            .await?;
        match status {
            400 => Ok(()),
            _ => Err(AdminError::Status {
                method: "POST".into(),
                uri: uri(addr, "/v1/lease"),
                status,
                body: text.trim().to_string(),
            }),
        }
    }

    /// `POST /v1/pause`.
    pub async fn pause(
        &self,
        addr: &str,
        token: Option<&str>,
        request: &PauseRequest,
    ) -> Result<PauseResponse, AdminError> {
        self.exchange(addr, "POST", "/v1/pause", token, Some(request), None)
            .await
    }

    /// `POST /v1/unpause`.
    pub async fn unpause(
        &self,
        addr: &str,
        token: Option<&str>,
    ) -> Result<PauseResponse, AdminError> {
        let empty = serde_json::Map::new();
        self.exchange(addr, "POST", "/v1/unpause", token, Some(&empty), None)
            .await
    }

    /// `POST /v1/reload`: the leasegate re-reads its config file. A file it
    /// cannot use (nothing changed) is [`AdminError::Status`] 400.
    pub async fn reload(
        &self,
        addr: &str,
        token: Option<&str>,
    ) -> Result<ReloadResponse, AdminError> {
        let empty = serde_json::Map::new();
        self.exchange(addr, "POST", "/v1/reload", token, Some(&empty), None)
            .await
    }

    /// `POST /v1/failover` on the current master's leasegate; returns when
    /// the failover has finished. A failover that ran and failed is `Ok`
    /// with a `failed` report; a request that was refused (bad options,
    /// token) is [`AdminError::Status`].
    pub async fn failover(
        &self,
        addr: &str,
        token: Option<&str>,
        request: &FailoverRequest,
    ) -> Result<FailoverReport, AdminError> {
        self.exchange(
            addr,
            "POST",
            "/v1/failover",
            token,
            Some(request),
            Some(FAILOVER_FAILED_STATUS),
        )
        .await
    }

    /// Sends `body` as JSON and reads the answer as `T`: a 2xx answer, or
    /// one with the status `also` (an answer that carries a `T` too).
    async fn exchange<T: DeserializeOwned>(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&impl Serialize>,
        also: Option<u16>,
    ) -> Result<T, AdminError> {
        let body = body
            .map(serde_json::to_string)
            .transpose()
            .map_err(|source| AdminError::Encode {
                method: method.to_string(),
                uri: uri(addr, path),
                source,
            })?;
        let (status, text) = self.call(addr, method, path, token, body).await?;
        if !(200..300).contains(&status) && Some(status) != also {
            return Err(AdminError::Status {
                method: method.to_string(),
                uri: uri(addr, path),
                status,
                body: text.trim().to_string(),
            });
        }
        serde_json::from_str(&text).map_err(|source| AdminError::BadJson {
            method: method.to_string(),
            uri: uri(addr, path),
            source,
        })
    }

    /// `method` `path` on the admin API at `addr` (`host:port`), with an
    /// optional bearer token and JSON body. Returns the status and the body,
    /// whatever the status.
    pub async fn call(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, String), AdminError> {
        let uri = uri(addr, path);
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(t) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| AdminError::Build {
                method: method.to_string(),
                uri: uri.clone(),
                source,
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| AdminError::Request {
                        method: method.to_string(),
                        uri: uri.clone(),
                        source,
                    })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|source| AdminError::Read {
                    method: method.to_string(),
                    uri: uri.clone(),
                    source,
                })?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout {
                method: method.to_string(),
                uri: uri.clone(),
                timeout_ms: self.timeout.as_millis(),
            })?
    }
}

fn uri(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

/// An error with its causes (`connection refused` hides under hyper-util's
/// "client error (Connect)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A hint where the answer was not HTTP at all: the address is likely a
/// RESP port (`listen`), not the admin API's (`admin.listen`).
fn not_http_hint(source: &hyper_util::client::legacy::Error) -> &'static str {
    if error_chain(source).contains("invalid HTTP version") {
        " (is that the admin API's address, admin.listen, and not a RESP port?)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_error_keeps_the_answer_and_its_message() {
        let e = AdminError::Status {
            method: "POST".into(),
            uri: "http://h:1/v1/lease".into(),
            status: 401,
            body: r#"{"error":"wrong admin token"}"#.into(),
        };
        assert_eq!(
            e.to_string(),
            r#"POST http://h:1/v1/lease answered 401: {"error":"wrong admin token"}"#
        );
        assert_eq!(e.server_message().as_deref(), Some("wrong admin token"));
        assert_eq!(e.status(), Some(401));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unreachable_leasegate_is_a_request_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let client = AdminClient::new(Duration::from_secs(2), None, CLI_CA_MISSING);
        let e = client.status(&addr).await.expect_err("nothing listens");
        assert!(matches!(e, AdminError::Request { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("GET http://{addr}/v1/status: ")),
            "{text}"
        );
    }
}
