//! A small client for other leasegates' admin APIs, used by the failover
//! (talking to the target proxy) and by the `failover` / `ctl` commands.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest admin answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// A keep-alive client for admin APIs.
#[derive(Clone)]
pub struct AdminClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(timeout: Duration) -> AdminClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        AdminClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// `method` `path` on the admin API at `addr` (`host:port`), with an
    /// optional bearer token and JSON body. Returns the status and the body.
    pub async fn call(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, String), String> {
        let uri = format!("http://{addr}{path}");
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(t) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("cannot build {method} {uri}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{method} {uri}: {}", error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{method} {uri}: cannot read the answer: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "{method} {uri}: no answer within {} ms",
                    self.timeout.as_millis()
                )
            })?
    }

    /// Like [`AdminClient::call`], but a non-2xx status is an error and the
    /// body is parsed as JSON.
    pub async fn json(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<serde_json::Value, String> {
        let (status, text) = self.call(addr, method, path, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} http://{addr}{path} answered {status}: {}",
                text.trim()
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("{method} http://{addr}{path}: invalid JSON ({e})"))
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
