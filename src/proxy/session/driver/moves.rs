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

    /// The node connection closed with nothing owed: wait (at most
    /// `node_lost_patience`, [`super::super::find_node`]) for the new master's leasegate
    /// to hold the lease (this node demoted toward it) or for the node to
    /// answer again, and go on there. The client's requests wait unread
    /// meanwhile, except those addressed to the node itself, answered that
    /// it is down ([`super::super::while_down`]); a session that finds neither, or whose
    /// client hangs up or is refused, ends.
    #[cold]
    pub(super) async fn outlive_node(&mut self, s: &mut Session, ctx: &SessionContext) {
        // Given up (closed by the node, or its blocking command ended at
        // the node's demotion): the node sees it end now, so that nothing
        // left waiting on it (that command) can still take an element
        // while the session looks for a node.
        {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::time::timeout(ctx.connect_timeout, self.backend.shutdown()).await;
        }
        let peer = ctx.peer_tls::<C>();
        // A client that asked for no replies is answered none here, nor one
        // with requests already read (a reply now would overtake theirs):
        // its session ends instead, as it did with the node.
        let answers = s.mute.is_on() && s.from_client.is_empty();
        // Replies to node-addressed requests not yet sent when the wait ends.
        let mut unsent = Vec::new();
        let quit = async {
            tokio::select! {
                _ = self.stopping.cancelled() => {}
                _ = super::super::while_node_is_down(&self.client, |input| {
                    match super::super::while_down(ctx, input) {
                        super::super::WhileDown::Answer(..) if !answers => {
                            super::super::WhileDown::Refuse(String::new())
                        }
                        verdict => verdict,
                    }
                }, &mut unsent) => {}
            }
        };
        let found = super::super::find_node(ctx, peer.as_deref(), quit).await;
        if found.is_ok() && !unsent.is_empty() {
            use tokio::io::AsyncWriteExt;
            if self.client.write_all(&unsent).await.is_err() {
                return;
            }
        }
        let Ok((mut stream, away)) = found else {
            if !ctx.node_lost_patience.is_zero() {
                ctx.metrics.handover(false);
            }
            return;
        };
        let replay = s.replay_requests();
        if let Err(why) =
            super::super::restore::restore(&mut stream, &replay, ctx.connect_timeout).await
        {
            tracing::warn!(error = %why, away, "the node connection closed, and the session's connection state could not be restored on a new one: it ends");
            ctx.metrics.handover(false);
            // Its requests wait unread: the first is answered why (one
            // that asked for no replies gets none), then it closes.
            if s.mute.is_on() {
                use tokio::io::AsyncWriteExt;
                let _ = self
                    .client
                    .write_all(&super::super::restore::refused_reply(&why))
                    .await;
                let _ = self.client.flush().await;
            }
            return;
        }
        tracing::info!(
            away,
            "the node connection closed: the session goes on over a new one"
        );
        s.attach(away);
        ctx.metrics.handover(true);
        self.backend = stream;
        self.backend_read = WokenRead::default();
        self.backend_eof = false;
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
