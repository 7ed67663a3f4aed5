//! A client that just arrived: served with its own node connection, or by
//! the new master's leasegate where its node is down and was demoted, or
//! it waits for the node ([`super::node_down`]); else it is told why and
//! closed ([`refuse`]). A client that waits when leasegate is upgraded
//! moves to the successor, which serves it as one just arrived.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::moving::{MovedSession, Waiting};
use super::{ClientIo, Session, SessionContext};
use crate::proxy::backend;

/// Serves a client (plain or TLS) with a new node connection; if the node
/// cannot be reached, with the new master's leasegate where this node was
/// demoted; else, where a failover is to be expected (a controller or
/// Sentinels), once the node or a new master's leasegate takes it (at most
/// `node_lost_wait_ms`, as for the node's clients that were connected when
/// it went down); else it is told why and closed.
pub async fn serve_client<C: ClientIo>(
    client: C,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    let (addr, timeout) = (ctx.backend_addr.clone(), ctx.connect_timeout);
    let tls = ctx.node_tls.load_full();
    let e = match backend::connect_node(&addr, tls.as_deref(), timeout).await {
        Ok(backend) => return super::serve(client, backend, ctx, shutdown).await,
        Err(e) => e,
    };
    let peer = ctx.peer_tls::<C>();
    match backend::stand_in(ctx.gate.role(), peer.as_deref(), timeout).await {
        // The node is down and the controller named a new master: the
        // client is served there, not refused.
        Ok(there) => {
            info!("this node is down and was demoted: a new client is served by the new master's leasegate");
            return super::serve_handed_over(client, there, ctx, shutdown).await;
        }
        Err(why) => debug!(%why, "no stand-in for the node"),
    }
    serve_once_up(client, ctx, shutdown, e).await
}

/// Serves a client of a node that is down (`e`: why it could not be
/// reached) once the node or a new master's leasegate takes it; refuses it
/// where no failover is to be expected, or none came within
/// `node_lost_wait_ms`.
async fn serve_once_up<C: ClientIo>(
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
    // `None`: leasegate drains (it stops, or is upgraded).
    let quit = async {
        tokio::select! {
            left = super::while_node_is_down(&client, |input| super::while_down(&ctx, input), &mut unsent) => Some(left),
            _ = shutdown.cancelled() => None,
        }
    };
    let found = super::find_node(&ctx, peer.as_deref(), quit).await;
    let mut client = client;
    let answers_owed = matches!(found, Ok(_) | Err(Some(None)));
    if answers_owed && !unsent.is_empty() && client.write_all(&unsent).await.is_err() {
        return;
    }
    match found {
        Ok((node, false)) => super::serve(client, node, ctx, shutdown).await,
        Ok((new_master, true)) => super::serve_handed_over(client, new_master, ctx, shutdown).await,
        // An upgrade: the successor takes up the wait.
        Err(Some(None)) => move_new_client(client, &ctx),
        // It hung up: nobody to answer.
        Err(Some(Some(super::Left::HungUp))) => {}
        Err(refused) => {
            let why = match refused {
                Some(Some(super::Left::Refused(why))) => why,
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

/// How long a refused client is answered before its connection closes.
const REFUSE_FOR: Duration = Duration::from_secs(1);

/// Sends one error line (`up_front`), answers each request the client
/// sends within [`REFUSE_FOR`] with the same line, and closes. (Not up
/// front to a client whose requests waited: it would get one line more
/// than it sent requests.) Closed at once, a client
/// that sends a handshake before its command lost the error: redis-py
/// (`CLIENT SETINFO` twice, its errors ignored) read the line as the
/// handshake's reply and then only "connection closed" for the command.
pub async fn refuse<C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
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
            max_request_len: 1 << 20,
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

/// Moves a client that waits for its node that is down to the successor
/// at an upgrade ([`Waiting::NewClient`]); where the successor does not
/// take such clients (an older one), or leasegate stops, it is closed.
fn move_new_client<C: ClientIo>(mut client: C, ctx: &SessionContext) {
    if !ctx.mover.takes_waiting::<C>() || !client.may_move() {
        return;
    }
    let Some(moved) = client.into_moved() else {
        warn!("a client waiting for its node could not leave for the successor: closed");
        return;
    };
    // The successor serves it as a client just arrived: this state only
    // carries its TLS keys.
    let state = Session::new(ctx.limits, Arc::clone(&ctx.gate), ctx.max_client_output)
        .fresh_state()
        .with_tls(moved.tls, None);
    if !ctx.mover.send(MovedSession::waiting(
        moved.socket,
        state,
        Waiting::NewClient,
    )) {
        warn!("a client waiting for its node could not move to the successor: closed");
    }
}
