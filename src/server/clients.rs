//! Clients arriving: the plain and TLS listeners, the `limits.max_clients`
//! bound, and the hand-off of each connection to a session thread, where it
//! is served with its own node connection (or a stand-in for a lost node);
//! sessions moved here by an upgrade are admitted the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Server, ServerError};
use crate::control::upgrade::Inherited;
use crate::proxy::backend;
use crate::proxy::session::{self, MovedSession, SessionContext};
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
                    true => refuse(client, MAX_CLIENTS_REPLY.to_vec(), true).await,
                    false => serve_client(client, ctx, shutdown).await,
                };
            };
            let peer = client.peer_addr().ok();
            match crate::proxy::tls::handshake(client, tls, timeout).await {
                Ok(client) => {
                    ctx.metrics.tls_handshake("ok");
                    match over_limit {
                        true => refuse(client, MAX_CLIENTS_REPLY.to_vec(), true).await,
                        false => serve_client(client, ctx, shutdown).await,
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

/// Serves a client (plain or TLS) with a new node connection; if the node
/// cannot be reached, with the new master's leasegate where this node was
/// demoted; else, where a failover is to be expected (a controller or
/// Sentinels), once the node or a new master's leasegate takes it (at most
/// `node_lost_wait_ms`, as for the node's clients that were connected when
/// it went down); else it is told why and closed.
async fn serve_client<C: session::ClientIo>(
    client: C,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    let (addr, timeout) = (ctx.backend_addr.clone(), ctx.connect_timeout);
    let tls = ctx.node_tls.load_full();
    let e = match backend::connect_node(&addr, tls.as_deref(), timeout).await {
        Ok(backend) => return session::serve(client, backend, ctx, shutdown).await,
        Err(e) => e,
    };
    let peer = ctx.peer_tls::<C>();
    match backend::stand_in(ctx.gate.role(), peer.as_deref(), timeout).await {
        // The node is down and the controller named a new master: the
        // client is served there, not refused.
        Ok(there) => {
            info!("this node is down and was demoted: a new client is served by the new master's leasegate");
            return session::serve_handed_over(client, there, ctx, shutdown).await;
        }
        Err(why) => debug!(%why, "no stand-in for the node"),
    }
    serve_once_up(client, ctx, shutdown, e).await
}

/// Serves a client of a node that is down (`e`: why it could not be
/// reached) once the node or a new master's leasegate takes it; refuses it
/// where no failover is to be expected, or none came within
/// `node_lost_wait_ms`.
async fn serve_once_up<C: session::ClientIo>(
    client: C,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
    e: backend::BackendError,
) {
    let addr = ctx.backend_addr.clone();
    let peer = ctx.peer_tls::<C>();
    // A node that died is replaced within the failover's detection time:
    // the client waits for it as a connected client does, rather than
    // being refused (a cluster client took the refusal for an answer and
    // failed each request; a walkthrough saw 1,452 such errors before the
    // controller's failover). Its requests wait unread.
    if !ctx.node_lost_patience.is_zero() && NODE_DOWN_NOTICE.due(ctx.gate.lease().now()) {
        info!(
            backend = %addr,
            error = %e,
            wait_ms = ctx.node_lost_patience.as_millis() as u64,
            "the node is down: new clients wait for it or for the new master (logged at most once a second)"
        );
    }
    // Replies to node-addressed requests not yet sent when the wait ends.
    let mut unsent = Vec::new();
    let quit = async {
        tokio::select! {
            left = session::while_node_is_down(&client, |input| session::while_down(&ctx, input), &mut unsent) => left,
            _ = shutdown.cancelled() => session::Left::HungUp,
        }
    };
    let found = session::find_node(&ctx, peer.as_deref(), quit).await;
    let mut client = client;
    if found.is_ok() && !unsent.is_empty() && client.write_all(&unsent).await.is_err() {
        return;
    }
    match found {
        Ok((node, false)) => session::serve(client, node, ctx, shutdown).await,
        Ok((new_master, true)) => {
            session::serve_handed_over(client, new_master, ctx, shutdown).await
        }
        // It hung up (or leasegate stops): nobody to answer.
        Err(Some(session::Left::HungUp)) => {}
        Err(refused) => {
            let why = match refused {
                Some(session::Left::Refused(why)) => why,
                _ => format!(
                    "neither the node nor a new master within {} ms",
                    ctx.node_lost_patience.as_millis()
                ),
            };
            ctx.metrics.backend_connect_errors.inc();
            // At most once a second: clients that reconnect in a loop
            // while the node is down logged a line each (1,722 lines in
            // a few seconds, seen in a walkthrough).
            if UNAVAILABLE_WARNING.due(ctx.gate.lease().now()) {
                warn!(
                    backend = %addr,
                    error = %e,
                    refused_so_far = ctx.metrics.backend_connect_errors.get(),
                    %why,
                    "backend unavailable: new clients are refused (logged at most once a second)"
                );
            }
            // Up front only where the client was refused at once: one
            // that waited has its requests answered, one line each.
            let waited = !ctx.node_lost_patience.is_zero();
            refuse(client, backend::unavailable_reply(&addr, &e), !waited).await;
        }
    }
}

/// When "the node is down" was last logged.
static NODE_DOWN_NOTICE: crate::guard::clock::EverySecond = crate::guard::clock::EverySecond::new();

/// When "backend unavailable" was last logged.
static UNAVAILABLE_WARNING: crate::guard::clock::EverySecond =
    crate::guard::clock::EverySecond::new();

/// Accepts on `listener`; never, without one.
pub(super) async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// How long a refused client is answered before its connection closes.
const REFUSE_FOR: Duration = Duration::from_secs(1);

/// Sends one error line (`up_front`), answers each request the client
/// sends within [`REFUSE_FOR`] with the same line, and closes. (Not up
/// front to a client whose requests waited: it would get one line more
/// than it sent requests.) Closed at once, a client
/// that sends a handshake before its command lost the error: redis-py
/// (`CLIENT SETINFO` twice, its errors ignored) read the line as the
/// handshake's reply and then only "connection closed" for the command.
async fn refuse<C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut client: C,
    reply: Vec<u8>,
    up_front: bool,
) {
    use tokio::io::AsyncReadExt;
    let answered = tokio::time::timeout(REFUSE_FOR, async {
        if up_front {
            client.write_all(&reply).await?;
        }
        // Small limits: nothing the client sends here is kept.
        let mut framer = crate::resp::request::RequestFramer::new(crate::resp::request::Limits {
            max_bulk_len: 64 * 1024,
            max_multibulk_len: 1024,
            max_inline_len: 64 * 1024,
        });
        let mut buf = Vec::with_capacity(4096);
        while client.read_buf(&mut buf).await? > 0 {
            while let Ok(Some(head)) = framer.next(&buf) {
                buf.drain(..head.len);
                if head.argc > 0 {
                    client.write_all(&reply).await?;
                }
            }
            if buf.len() > 128 * 1024 {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(answered, Ok(Err(_))) {
        let _ = tokio::time::timeout(Duration::from_millis(100), client.shutdown()).await;
    }
}

/// What a client past `limits.max_clients` is told before it is closed.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";
