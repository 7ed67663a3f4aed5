//! Where a session's connections go other than where it began: to the new
//! master's leasegate (a hand-over, or back home), over a new connection
//! when its node closed between requests, and to the successor process at
//! an upgrade. Cold paths of [`Driver`], apart from its measured loop.

use super::super::{Session, SessionContext};
use super::{ClientIo, Driver, Preconnect, WokenRead};
use crate::proxy::session::state::Stall;

/// How often a session whose node connection closed looks for a node again.
const NODE_LOST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl<C: ClientIo> Driver<C> {
    /// Where the session moves now, once it is ready to
    /// ([`Session::handover_ready`]).
    #[inline]
    pub(super) fn move_due(s: &mut Session) -> Option<super::super::handover::Move> {
        // (The check in front spares the call on every turn of the loop.)
        let moving = matches!(s.stall, Stall::HandingOver(_));
        moving.then(|| s.handover_ready()).flatten()
    }

    /// Moves the session to `target` (or, failing that, refuses the held
    /// request and stays).
    pub(super) async fn hand_over(
        &mut self,
        target: super::super::handover::Move,
        s: &mut Session,
        ctx: &SessionContext,
    ) {
        let ready = Preconnect::take_for(&mut self.preconnect, &target);
        let tls = ctx.node_tls.load_full();
        let peer = ctx.peer_tls::<C>();
        match s
            .hand_over(
                target,
                ready,
                (&ctx.backend_addr, tls.as_deref()),
                peer.as_deref(),
                ctx.connect_timeout,
            )
            .await
        {
            Some(stream) => {
                ctx.metrics.handover(true);
                self.backend = stream;
                self.backend_read = WokenRead::default();
                self.backend_eof = false;
            }
            None => ctx.metrics.handover(false),
        }
        s.on_client_data();
    }

    /// The node connection closed with nothing owed: wait (at most
    /// `node_lost_patience`) for the new master's leasegate to hold the
    /// lease (this node demoted toward it) or for the node to answer again,
    /// and go on there. The client's requests wait unread meanwhile; a
    /// session that finds neither ends, as before.
    #[cold]
    pub(super) async fn outlive_node(&mut self, s: &mut Session, ctx: &SessionContext) {
        if ctx.node_lost_patience.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + ctx.node_lost_patience;
        loop {
            let found = match crate::proxy::backend::stand_in(
                ctx.gate.role(),
                ctx.peer_tls::<C>().as_deref(),
                ctx.connect_timeout,
            )
            .await
            {
                Ok(stream) => Some((stream, true)),
                Err(_) => crate::proxy::backend::answering(
                    &ctx.backend_addr,
                    ctx.node_tls.load_full().as_deref(),
                    ctx.connect_timeout,
                )
                .await
                .map(|stream| (stream, false)),
            };
            if let Some((stream, away)) = found {
                tracing::info!(
                    away,
                    "the node connection closed: the session goes on over a new one"
                );
                s.attach(away);
                ctx.metrics.handover(true);
                self.backend = stream;
                self.backend_read = WokenRead::default();
                self.backend_eof = false;
                return;
            }
            if tokio::time::Instant::now() >= deadline || self.stopping.is_cancelled() {
                ctx.metrics.handover(false);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(NODE_LOST_RETRY) => {}
                _ = self.stopping.cancelled() => {}
            }
        }
    }

    /// Whether the session may move to the successor now (see
    /// [`super::moving`]): between two requests, and nothing of its
    /// connections half-read or unsent.
    #[cold]
    pub(super) fn may_move(&mut self, s: &Session, ctx: &SessionContext) -> bool {
        s.movable()
            && ((!C::TLS && !self.backend.is_tls()) || ctx.mover.takes_tls())
            && self.backend.may_move()
            && self.client.may_move()
    }

    /// The session's sockets and state, for the successor (the caller saw
    /// [`Driver::may_move`]); `None` if a socket cannot leave after all
    /// (the session is then closed).
    #[cold]
    pub(super) fn move_out(mut self, mut s: Session) -> Option<super::super::moving::MovedSession> {
        // A connection opened ahead of a hand-over (the upgrade's hold is a
        // pause, and a failover may have named a target) is not needed:
        // the successor opens its own if it hands the session over.
        self.preconnect = None;
        let backend = self.backend.into_moved()?;
        let client = self.client.into_moved()?;
        Some(super::super::moving::MovedSession {
            client: client.socket,
            backend: backend.socket,
            state: s.take_state().with_tls(client.tls, backend.tls),
        })
    }
}
