//! A shard failover asked of kvrocks-controller (`POST .../shards/{n}/failover`),
//! as a graceful failover in cluster mode asks it: who answered, and
//! whether the controller may have acted when the answer says nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{describe_error, redirected, MAX_ANSWER, MAX_REDIRECTS};
use crate::kvrocks::connector::Connector;

/// Why a shard failover request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardFailoverError {
    /// The controller certainly did not act: the request was never
    /// delivered, or it was answered with a client error (4xx).
    #[error("{0}")]
    Refused(String),
    /// The request never reached the controller (no connection): another
    /// controller of the group may be asked.
    #[error("{0}")]
    Unreachable(String),
    /// The controller may have acted: no answer, a broken exchange, or a
    /// server error (5xx, e.g. a topology pushed to only some nodes).
    #[error("{0}")]
    Unknown(String),
}

/// `{"data":{"new_master_id":"..."}}`, the field this client reads.
#[derive(Debug, Deserialize)]
struct FailoverAnswer {
    data: FailoverData,
}

#[derive(Debug, Deserialize)]
struct FailoverData {
    #[serde(default)]
    new_master_id: Option<String>,
}

/// Asks the controller at `url` (the full [`super::shard_failover_url`]) to fail
/// the shard over to `preferred` (`{"preferred_node_id": ...}`), following
/// the `307`s of non-leaders, within `timeout`. Returns the new master's id
/// when the answer names it.
pub async fn request_shard_failover(
    url: &str,
    preferred: &str,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Option<String>, ShardFailoverError> {
    let body = serde_json::json!({ "preferred_node_id": preferred }).to_string();
    let client: Client<Connector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(Connector::new(
            timeout,
            tls,
            crate::kvrocks::connector::CONTROLLER_CA_MISSING,
        ));
    let exchange = async {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| ShardFailoverError::Refused(format!("bad controller url '{url}': {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let request = hyper::Request::post(uri.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::ACCEPT, "application/json")
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(|e| {
                    ShardFailoverError::Refused(format!("cannot build the request to {uri}: {e}"))
                })?;
            let response = client.request(request).await.map_err(|e| {
                let text = format!(
                    "POST {uri}: {}",
                    crate::kvrocks::admin_client::error_chain(&e)
                );
                if e.is_connect() {
                    ShardFailoverError::Unreachable(text)
                } else {
                    ShardFailoverError::Unknown(text)
                }
            })?;
            let status = response.status();
            if status.is_redirection() {
                uri = redirected(&uri, &response).map_err(ShardFailoverError::Refused)?;
                continue;
            }
            let answer = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    ShardFailoverError::Unknown(format!("cannot read the controller's answer: {e}"))
                })?
                .to_bytes();
            if status.is_client_error() {
                return Err(ShardFailoverError::Refused(describe_error(
                    status.as_u16(),
                    &answer,
                )));
            }
            if !status.is_success() {
                return Err(ShardFailoverError::Unknown(describe_error(
                    status.as_u16(),
                    &answer,
                )));
            }
            return Ok(serde_json::from_slice::<FailoverAnswer>(&answer)
                .ok()
                .and_then(|a| a.data.new_master_id));
        }
        Err(ShardFailoverError::Refused(format!(
            "more than {MAX_REDIRECTS} redirects from the controller"
        )))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        ShardFailoverError::Unknown(format!(
            "POST {url}: no answer within {} ms",
            timeout.as_millis()
        ))
    })?
}
