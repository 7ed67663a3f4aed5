//! Clients arriving: the plain and TLS listeners, the `limits.max_clients`
//! bound, and the hand-off of each connection to a session thread, where it
//! is served with its own node connection (or a stand-in for a lost node);
//! sessions moved here by an upgrade are admitted the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Server, ServerError};
use crate::control::upgrade::Inherited;
use crate::proxy::session::{self, MovedSession};
use crate::proxy::workers::Workers;

impl Server {
    /// Serves a session moved here from the predecessor.
    pub(super) fn admit_moved(
        &self,
        moved: MovedSession,
        tracker: &TaskTracker,
        workers: &Workers,
        active: &Arc<AtomicUsize>,
    ) {
        // Counted like any client, never refused: it is connected already.
        active.fetch_add(1, Ordering::AcqRel);
        self.sessions.inc();
        let slot = ClientSlot(Arc::clone(active), self.sessions.clone());
        let ctx = self.sessions_context.load_full();
        let shutdown = self.shutdown.clone();
        workers.spawn(tracker, async move {
            let _slot = slot;
            session::serve_moved(moved, ctx, shutdown).await;
        });
    }

    pub(super) fn admit_client(
        &self,
        client: TcpStream,
        tls: bool,
        tracker: &TaskTracker,
        workers: &Workers,
        active: &Arc<AtomicUsize>,
    ) {
        let _ = client.set_nodelay(true);
        let config = self.shared.config.load();
        let tls = match tls.then(|| self.shared.client_tls.load_full()) {
            None => None,
            Some(Some(tls)) => Some((tls, config.tls.handshake_timeout)),
            Some(None) => {
                // Not reached: the listener exists only with its settings.
                warn!("a TLS client came without TLS settings: closed");
                return;
            }
        };
        let over_limit = active.fetch_add(1, Ordering::AcqRel) >= config.limits.max_clients;
        if over_limit {
            active.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.sessions.inc();
        }
        let slot = (!over_limit).then(|| ClientSlot(Arc::clone(active), self.sessions.clone()));
        let ctx = self.sessions_context.load_full();
        let shutdown = self.shutdown.clone();
        // The socket moves to a worker's poller.
        let client = match client.into_std() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot hand the connection to a worker");
                return;
            }
        };
        workers.spawn(tracker, async move {
            let _slot = slot;
            let Ok(client) = TcpStream::from_std(client) else {
                return;
            };
            let Some((tls, timeout)) = tls else {
                return match over_limit {
                    true => session::refuse(client, MAX_CLIENTS_REPLY.to_vec(), true).await,
                    false => session::serve_client(client, ctx, shutdown).await,
                };
            };
            let peer = client.peer_addr().ok();
            match crate::proxy::tls::handshake(client, tls, timeout).await {
                Ok(client) => {
                    ctx.metrics.tls_handshake("ok");
                    match over_limit {
                        true => session::refuse(client, MAX_CLIENTS_REPLY.to_vec(), true).await,
                        false => session::serve_client(client, ctx, shutdown).await,
                    }
                }
                Err(e) => {
                    ctx.metrics.tls_handshake(e.outcome());
                    info!(?peer, error = %e, "TLS handshake failed: connection closed");
                }
            }
        });
    }

    /// The TLS client listener (`tls.listen`), taken over or bound.
    pub(super) async fn tls_listener(
        &self,
        inherited: Option<&mut Inherited>,
    ) -> Result<Option<TcpListener>, ServerError> {
        let Some(addr) = self.config.tls.listen else {
            return Ok(None);
        };
        if self.shared.client_tls.load().is_none() {
            return Err(ServerError::Tls(format!(
                "tls.listen {addr}: its certificate files cannot be used (see above)"
            )));
        }
        let bind_error = |source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = match inherited.and_then(|i| i.listener("tls", &addr.to_string())) {
            Some(l) => listen_on(l).map_err(bind_error)?,
            None => TcpListener::bind(addr).await.map_err(bind_error)?,
        };
        self.handoff.offer("tls", &listener);
        info!(tls_listen = %addr, "TLS clients are served");
        Ok(Some(listener))
    }
}

/// A listener handed over by the predecessor, on this runtime's poller.
pub(super) fn listen_on(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Releases a `max_clients` slot when the session ends.
struct ClientSlot(Arc<AtomicUsize>, Gauge);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// Accepts on `listener`; never, without one.
pub(super) async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The last time [`accept_failed`] logged.
static ACCEPT_FAILED: crate::guard::clock::EverySecond = crate::guard::clock::EverySecond::new();

/// An accept failed (out of file descriptors, and the like): logged at
/// most once a second (it fails again every back-off while clients wait:
/// an attack pass saw 5,200 lines a minute under `ulimit -n 64`), then a
/// short back-off. `now` is on the lease clock.
pub(super) async fn accept_failed(e: &std::io::Error, now: crate::guard::clock::Nanos) {
    if ACCEPT_FAILED.due(now) {
        tracing::warn!(error = %e, "accept failed (logged at most once a second)");
    }
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

/// What a client past `limits.max_clients` is told before it is closed.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";
