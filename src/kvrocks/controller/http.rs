//! The keep-alive HTTP client the poller and verification read the
//! topology with, following the `307`s non-leaders answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{describe_error, redirected, MAX_ANSWER, MAX_REDIRECTS};
use crate::kvrocks::connector::Connector;

/// The pooled keep-alive HTTP client used to talk to the controller.
pub type HttpClient = Client<Connector, Empty<Bytes>>;

/// A keep-alive client whose connects give up after `timeout`; `https://`
/// URLs are trusted with `tls` (`controller.ca_file`).
pub fn http_client(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(Connector::new(
            timeout,
            tls,
            crate::kvrocks::connector::CONTROLLER_CA_MISSING,
        ))
}

/// One request for the cluster topology: GET, following redirects; the
/// body of the `200` answer, unparsed.
pub async fn fetch_answer(client: &HttpClient, url: &str) -> Result<Bytes, String> {
    let (status, body) = get(client, url).await?;
    if status != StatusCode::OK {
        let said = describe_error(status.as_u16(), &body);
        // kvrocks-controller 1.2.0 answers a namespace or cluster it does
        // not have `500 ... key not found`; a wrong path or port, 404.
        let hint = if status == StatusCode::NOT_FOUND || said.contains("not found") {
            " (no such namespace or cluster there: controller.namespace and controller.cluster \
             must name the registered cluster, and controller.url the controller's HTTP \
             address without a path)"
        } else {
            ""
        };
        return Err(format!("GET {url}: {said}{hint}"));
    }
    Ok(body)
}

/// A GET, following redirects: the final answer's status and body.
pub(in crate::kvrocks) async fn get(
    client: &HttpClient,
    url: &str,
) -> Result<(StatusCode, Bytes), String> {
    let mut uri: Uri = url
        .parse()
        .map_err(|e| format!("bad controller url '{url}': {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let request = hyper::Request::get(uri.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request to {uri}: {e}"))?;
        let response = client.request(request).await.map_err(|e| {
            format!(
                "cannot reach the controller at {uri}: {}",
                crate::kvrocks::admin_client::error_chain(&e)
            )
        })?;
        let status = response.status();
        if status.is_redirection() {
            uri = redirected(&uri, &response)?;
            continue;
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("cannot read the controller's answer: {e}"))?
            .to_bytes();
        return Ok((status, body));
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects from the controller"
    ))
}
