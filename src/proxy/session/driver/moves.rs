//! Where a session's connections go other than where it began: to the new
//! master's leasegate (a hand-over, or back home), over a new connection
//! when its node closed between requests, and to the successor process at
//! an upgrade. Cold paths of [`Driver`], apart from its measured loop.

use super::super::{Session, SessionContext};
use super::{ClientIo, Driver, Preconnect, WokenRead};
use crate::proxy::session::state::Stall;

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
        if !self.namespace_before_moving(s, ctx).await {
            ctx.metrics.handover(false);
            s.on_client_data();
            return;
        }
        let ready = Preconnect::take_for(&mut self.preconnect, &target);
        let tls = ctx.node_tls.load_full();
        let peer = ctx.peer_tls::<C>();
        match s
            .hand_over(
                target,
                ready,
                (&ctx.backend_addr, tls.as_deref()),
                peer.as_deref(),
                (ctx.connect_timeout, ctx.node_lost_patience),
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

    /// A session with a login to a Kvrocks node, about to move, whose
    /// namespace was not learned after the login ([`Session::ask_namespace`]):
    /// asks its connection which namespace it is in, for the replayed login
    /// to be checked against ([`super::super::restore`]); once per login
    /// (the answer stays true where the check passed). `false`: no clean
    /// answer, and the session has ended (its connection may still owe
    /// that answer, so it cannot stay either).
    async fn namespace_before_moving(&mut self, s: &mut Session, ctx: &SessionContext) -> bool {
        if s.replay.auth.is_none()
            || s.replay.namespace.is_some()
            || !ctx.gate.role().node.is_kvrocks()
        {
            return true;
        }
        match super::super::restore::namespace_of(&mut self.backend, ctx.connect_timeout).await {
            Ok(namespace) => {
                s.replay.namespace = namespace;
                true
            }
            Err(why) => {
                let why = format!("its namespace could not be read where it was: {why}");
                if super::super::restore::UNRESTORED_WARNING.due(ctx.gate.lease().now()) {
                    tracing::warn!(error = %why, "the session cannot move: it ends (logged at most once a second)");
                }
                s.end_unrestored(&why);
                false
            }
        }
    }

    /// The node connection closed with nothing owed: the session waits
    /// for the node or the new master's leasegate and goes on there
    /// ([`super::super::node_down::outlive`]); `true` when it is to move
    /// to the successor instead, waiting ([`Driver::move_waiting`]).
    #[cold]
    pub(super) async fn outlive_node(&mut self, s: &mut Session, ctx: &SessionContext) -> bool {
        // Given up (closed by the node, or its blocking command ended at
        // the node's demotion): the node sees it end now, so that nothing
        // left waiting on it (that command) can still take an element
        // while the session looks for a node.
        {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::time::timeout(ctx.connect_timeout, self.backend.shutdown()).await;
        }
        use super::super::node_down::{outlive, Outlived};
        match outlive(&mut self.client, s, ctx, &self.stopping).await {
            Outlived::Found(stream, away) => {
                s.attach(away);
                self.backend = stream;
                self.backend_read = WokenRead::default();
                self.backend_eof = false;
                false
            }
            Outlived::Moving => true,
            Outlived::Ended => false,
        }
    }

    /// A session waiting for its node, for the successor: its client
    /// socket and state, no node socket ([`super::super::moving::Waiting::NodeLost`]);
    /// `None` if its socket cannot leave after all (it is then closed).
    #[cold]
    pub(super) fn move_waiting(self, mut s: Session) -> Option<super::super::moving::MovedSession> {
        super::super::moving::MovedSession::node_lost(self.client, &mut s)
    }

    /// Whether the session may move to the successor now (see
    /// [`super::super::moving`]): between two requests, and nothing of its
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
            backend: Some(backend.socket),
            state: s.take_state().with_tls(client.tls, backend.tls),
        })
    }
}
