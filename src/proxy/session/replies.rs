//! Backend → client: frame every reply, match it to what the client is owed,
//! apply what the reply says took effect, check write acknowledgements
//! against the lease (and, for writes forwarded unconfirmed, against their
//! mastership confirmation, which the reply waits for), and place local
//! replies where they are owed.

use bytes::{Buf, Bytes};

use crate::resp::reply::{pubsub_frame, pubsub_push, PubSubFrame, ReplyHead};

use super::handover::ReplaySlot;
use super::state::{Expect, Lifecycle, Owed, Peer, Stream, Watch, WriteTicket};
use super::Session;

/// A blocking command's answer when its node became a replica first.
const UNBLOCKED_BY_DEMOTION: &[u8] = b"-UNBLOCKED leasegate: the node became a replica while this command blocked; nothing was taken for it\r\n";

/// The reply side.
impl Session {
    /// Frames every complete backend reply and queues it (or its replacement)
    /// for the client, with local replies placed where they are owed.
    ///
    /// Replies that go to the client as they came are not copied one by
    /// one: `from_backend[passed..pos]` is the run of such replies not yet
    /// copied, copied in one go ([`Session::pass_run`]) before anything else
    /// reaches `to_client` (a replacement, a local reply) and at the end.
    /// Measured hot path: at `-P 16` one copy per read instead of one per
    /// reply.
    pub(super) fn on_backend_data(&mut self) -> Result<(), crate::resp::reply::ReplyError> {
        let mut pos = 0;
        let mut passed = 0;
        self.unconfirmed = None;
        loop {
            if self.stream == Stream::Replication {
                // The replication stream (an RDB, WAL batches, files): as it came.
                self.streamed(pos);
                pos = self.from_backend.len();
                break;
            }
            // One look at what is owed next (measured hot path): a write
            // forwarded unconfirmed, or a bare line, is not framed as usual.
            match self.owed.front() {
                Some(Owed::Reply(Expect::Write(WriteTicket {
                    confirm: Some(round),
                    ..
                }))) => {
                    // The confirmation round the next reply waits for,
                    // while no round at or after it has finished.
                    let round = *round;
                    if self.gate.confirmation(round).is_none() {
                        if pos < self.from_backend.len() {
                            // The next reply (and all behind it) stays in
                            // `from_backend` until the confirmation is settled.
                            self.unconfirmed = Some(round);
                        }
                        break;
                    }
                }
                Some(Owed::Reply(Expect::BareLine)) => match bare_line(&self.from_backend[pos..]) {
                    Some(len) => {
                        self.owed.pop_front();
                        pos += len;
                        self.pass_run(&mut passed, pos);
                        self.settle();
                        continue;
                    }
                    None => break,
                },
                _ => {}
            }
            let Some(head) = self.replies.next(&self.from_backend[pos..])? else {
                break;
            };
            let at = pos;
            pos += head.len;
            self.on_reply(head, at..pos, &mut passed);
        }
        if passed == 0 && pos > 0 && pos == self.from_backend.len() && self.to_client.is_empty() {
            // Every reply read went as it came and nothing waits to go to
            // the client: the two buffers trade places instead of a copy
            // (measured hot path, as for requests: `forward_whole_or_run`).
            std::mem::swap(&mut self.from_backend, &mut self.to_client);
        } else {
            self.pass_run(&mut passed, pos);
            self.from_backend.advance(pos);
        }
        Ok(())
    }

    /// Copies the run of replies passed as they came, `from_backend[*passed..upto]`,
    /// to `to_client`.
    #[inline]
    pub(super) fn pass_run(&mut self, passed: &mut usize, upto: usize) {
        if *passed < upto {
            self.to_client
                .extend_from_slice(&self.from_backend[*passed..upto]);
            *passed = upto;
        }
    }

    /// Handles the reply at `range` of `from_backend`. A reply that goes to
    /// the client as it came joins the run `from_backend[*passed..]`;
    /// anything else written to `to_client` first copies the run before it
    /// and starts a new one after the reply.
    #[inline]
    pub(super) fn on_reply(
        &mut self,
        head: ReplyHead,
        range: std::ops::Range<usize>,
        passed: &mut usize,
    ) {
        if !self.answers_request(&head, &range) {
            if !self.mute.is_on() {
                self.muted_stream_frame(&head, &range, passed);
            }
            // A subscribe-family request all of whose confirmations came:
            // what is owed after it goes on (local replies behind the run).
            if !matches!(self.owed.front(), None | Some(Owed::Reply(_))) {
                self.pass_run(passed, range.end);
                self.settle();
            }
            return;
        }
        while matches!(self.owed.front(), Some(Owed::PubSub(_))) {
            if self.pubsub_wait_answered(&range, passed) {
                return;
            }
        }
        if !self.mute.is_on() {
            return self.on_muted_reply(head, range, passed);
        }
        let (at, end) = (range.start, range.end);
        let owed = self.owed.pop_front();
        if let Some(Owed::Reply(Expect::Write(ticket))) = owed {
            // A write's ticket owns nothing: forgetting it spares the call
            // to the enum's drop glue that the optimizer leaves in for every
            // reply (measured hot path).
            std::mem::forget(owed);
            if let Some(instead) = self.on_write_reply(ticket, range) {
                self.pass_run(passed, at);
                self.to_client.extend_from_slice(&instead);
                *passed = end;
            } else if self.acks_owed > 0
                && !matches!(head.kind, b'-' | b'!')
                && &self.from_backend[at..end] != b"+QUEUED\r\n"
            {
                // (A write queued in a transaction is not applied yet: its
                // `+QUEUED` was replaced with `-UNKNOWN ... the node
                // applied it` when the `WAIT` after the `EXEC` failed, a
                // pass.) Where the run puts it in `to_client`.
                self.hold_for_replicas(self.to_client.len() + (at - *passed), end - at);
            }
        } else {
            self.on_other_reply(owed, &head, range, passed);
        }
        if !matches!(self.owed.front(), None | Some(Owed::Reply(_))) {
            // `settle` writes local replies: the run goes before them.
            self.pass_run(passed, end);
            self.settle();
        }
    }

    /// [`Session::on_reply`] while the client's reply mode drops replies
    /// (`CLIENT REPLY OFF|SKIP`, [`super::mute`]): the reply is handled as
    /// ever (counted, checked, its effects applied) and then dropped if
    /// the client is not to be sent it.
    #[cold]
    fn on_muted_reply(
        &mut self,
        head: ReplyHead,
        range: std::ops::Range<usize>,
        passed: &mut usize,
    ) {
        let (at, end) = (range.start, range.end);
        self.pass_run(passed, at);
        let keep = self.to_client.len();
        let owed = self.owed.pop_front();
        let delivered = match owed {
            None => {
                // A reply nobody asked for (Kvrocks answers a pipelined
                // `XREAD BLOCK` on a missing stream twice): a node under
                // OFF would not send it either.
                self.on_other_reply(None, &head, range, passed);
                !self.mute.drops_unrequested()
            }
            Some(Owed::Reply(Expect::ReplicaAck { .. } | Expect::Namespace)) => {
                // No request's answer: swallowed, and the mode unchanged.
                self.on_other_reply(owed, &head, range, passed);
                true
            }
            Some(Owed::Reply(Expect::ReplyMode(mode))) => {
                let dropped = self.mute.next_answer();
                self.reply_mode_answered(mode, &range, dropped)
            }
            Some(Owed::Reply(Expect::Reset))
                if &self.from_backend[range.clone()] == b"+RESET\r\n" =>
            {
                let delivered = self.mute.reset();
                self.on_state_reply(Expect::Reset, &head, &range);
                delivered
            }
            Some(Owed::Reply(Expect::Write(ticket))) => {
                let delivered = !self.mute.next_answer();
                if let Some(instead) = self.on_write_reply(ticket, range) {
                    self.to_client.extend_from_slice(&instead);
                    *passed = end;
                } else if delivered && self.acks_owed > 0 && !matches!(head.kind, b'-' | b'!') {
                    self.hold_for_replicas(self.to_client.len(), end - at);
                }
                delivered
            }
            other => {
                let delivered = !self.mute.next_answer();
                self.on_other_reply(other, &head, range, passed);
                delivered
            }
        };
        self.pass_run(passed, end);
        if !delivered {
            self.to_client.truncate(keep);
        }
        if !matches!(self.owed.front(), None | Some(Owed::Reply(_))) {
            self.settle();
        }
    }

    /// The node's reply to the `CLIENT REPLY ON` sent for `mode`: `+OK`
    /// puts `mode` in force. Returns whether the reply goes to the client
    /// (`dropped`: it is a skipped or muted request's answer).
    fn reply_mode_answered(
        &mut self,
        mode: crate::command::ReplyMode,
        range: &std::ops::Range<usize>,
        dropped: bool,
    ) -> bool {
        if &self.from_backend[range.clone()] != b"+OK\r\n" {
            // A node without the command: its error, and no mode change.
            return !dropped;
        }
        let kvrocks = self.gate.role().node.is_kvrocks();
        self.mute.accepted(mode, kvrocks)
    }

    /// A frame that answers no request (a message, a confirmation, a
    /// MONITOR line) while replies are muted: dropped where the node would
    /// not have sent it ([`super::mute`]).
    #[cold]
    fn muted_stream_frame(
        &mut self,
        head: &ReplyHead,
        range: &std::ops::Range<usize>,
        passed: &mut usize,
    ) {
        let frame = &self.from_backend[range.clone()];
        let dropped = match self.stream {
            Stream::Monitor => self.mute.drops_monitor_line(),
            _ => {
                self.mute.drops_confirmation()
                    && matches!(
                        if head.kind == b'>' {
                            pubsub_push(frame)
                        } else {
                            pubsub_frame(frame)
                        },
                        Some(PubSubFrame::Subscribed { .. } | PubSubFrame::Unsubscribed { .. })
                    )
            }
        };
        if dropped {
            self.pass_run(passed, range.start);
            *passed = range.end;
        }
    }

    /// [`Session::on_reply`] for what is owed but a write's reply.
    #[inline]
    fn on_other_reply(
        &mut self,
        owed: Option<Owed>,
        head: &ReplyHead,
        range: std::ops::Range<usize>,
        passed: &mut usize,
    ) {
        let (at, end) = (range.start, range.end);
        match owed {
            Some(Owed::Reply(Expect::Plain)) => {}
            Some(Owed::Reply(Expect::BlockingRead)) => {
                self.blocking_out = self.blocking_out.saturating_sub(1);
                self.count_waits_unblocked();
            }
            Some(Owed::Reply(Expect::Queued)) => {
                if &self.from_backend[range] != b"+QUEUED\r\n" {
                    self.requeue_forget();
                }
            }
            Some(Owed::Reply(Expect::Replace(reply))) => {
                self.pass_run(passed, at);
                self.to_client.extend_from_slice(&reply);
                *passed = end;
            }
            Some(Owed::Reply(Expect::Namespace)) => {
                self.pass_run(passed, at);
                *passed = end;
                self.namespace_answered(range);
            }
            Some(Owed::Reply(Expect::ReplicaAck {
                min_replicas,
                timeout_ms,
                counted,
            })) => {
                self.pass_run(passed, at);
                *passed = end;
                if !matches!(head.kind, b':' | b'-' | b'!') {
                    self.out_of_step(range);
                    return;
                }
                let reply = bytes::Bytes::copy_from_slice(&self.from_backend[range]);
                self.replicas_answered(&reply, (min_replicas, timeout_ms), counted);
            }
            Some(Owed::Reply(Expect::Heartbeat { renewed })) => {
                self.pass_run(passed, at);
                let report = self
                    .gate
                    .heartbeat_reply(&self.from_backend[range], renewed);
                self.to_client.extend_from_slice(&report);
                *passed = end;
            }
            Some(Owed::Reply(Expect::Info { section })) => {
                self.pass_run(passed, at);
                let reply = self.gate.info_reply(&self.from_backend[range], section);
                self.to_client.extend_from_slice(&reply);
                *passed = end;
            }
            Some(Owed::Reply(Expect::ReplyMode(mode))) => {
                if !self.reply_mode_answered(mode, &range, false) {
                    self.pass_run(passed, at);
                    *passed = end;
                }
            }
            Some(Owed::Reply(expect)) => self.on_state_reply(expect, head, &range),
            other => {
                // A reply nobody asked for (the queue's head is always a
                // backend reply or empty after `settle`): pass it on.
                if let Some(o) = other {
                    self.owed.push_front(o);
                } else if self.lifecycle == Lifecycle::Closing {
                    // Ended (stopped, or the node's replies out of step):
                    // nothing more of the node's reaches the client (a
                    // review: after the out-of-step error, the `:1` the
                    // node still sent reached the client, taken for the
                    // answer to a request the node never ran).
                    self.pass_run(passed, at);
                    *passed = end;
                }
            }
        }
    }

    /// A write's reply: counted back, and passed on (`None`) only if its
    /// confirmation (when it was forwarded unconfirmed) did not fail and it
    /// came while the lease it was admitted under still held; else the
    /// reply to send instead (unknown outcome).
    #[inline]
    pub(super) fn on_write_reply(
        &mut self,
        ticket: WriteTicket,
        range: std::ops::Range<usize>,
    ) -> Option<Bytes> {
        if ticket.counted {
            self.writes_out.answered(&self.gate);
        }
        if ticket.blocking {
            self.blocking_out = self.blocking_out.saturating_sub(1);
            // Before the role hears of the completion: a failover that
            // waits for it reads the count next.
            self.count_waits_unblocked();
            self.gate.role().blocking_write_completed();
        }
        let reply = &self.from_backend[range];
        // A blocking pop's null, whatever its type (`$-1` from Kvrocks,
        // `*-1` from Redis, `_` in RESP3), says it timed out: nothing was
        // applied. (Elsewhere a null may follow a write that was: `SET ...
        // GET`.)
        if ticket.blocking && matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n") {
            return None;
        }
        if let Some(round) = ticket.confirm {
            if let Some(Err(refusal)) = self.gate.confirmation(round) {
                if let Some(instead) = self.gate.unconfirmed_reply(&refusal, reply) {
                    return Some(instead);
                }
            }
        }
        ticket
            .term
            .and_then(|t| self.gate.acknowledgement(t, reply))
            .map(Bytes::from_static)
    }

    /// Replies that change what the session knows about the connection.
    pub(super) fn on_state_reply(
        &mut self,
        expect: Expect,
        head: &ReplyHead,
        range: &std::ops::Range<usize>,
    ) {
        let ok = &self.from_backend[range.clone()] == b"+OK\r\n";
        match &expect {
            Expect::Remember(ReplaySlot::Auth, _) | Expect::Hello(Some(_)) => {
                self.auth_answered(!matches!(head.kind, b'-' | b'!'));
            }
            Expect::Reset if head.kind == b'+' => self.logged_out(),
            _ => {}
        }
        match expect {
            Expect::Multi(n) => self.transaction = self.transaction.on_multi_reply(n, ok),
            Expect::Watch if ok && self.watch == Watch::Off => self.watch = Watch::On,
            Expect::Observe(effect) if ok => self.gate.accepted(&effect),
            Expect::Observe(effect) => self.gate.refused(&effect),
            Expect::Hello(request) if !matches!(head.kind, b'-' | b'!') => {
                self.resp3 = head.kind == b'%';
                if let Some(request) = request {
                    self.replay.hello_accepted(request);
                }
            }
            Expect::Remember(slot, request) if !matches!(head.kind, b'-' | b'!') => {
                *self.replay.slot(slot) = Some(request);
            }
            Expect::Reset if head.kind == b'+' => {
                // RESET drops the connection's authentication too, and
                // what a login answered after it was sent had set.
                self.replay = super::handover::Replay::default();
                if self.peer == Peer::Control {
                    self.peer = Peer::Ordinary;
                }
                self.resp3 = false;
                self.stream = Stream::Replies;
                self.subscriptions = 0;
                self.patterns = 0;
                self.shard_subscriptions = 0;
            }
            _ => {}
        }
    }

    /// Whether a backend frame answers a request, as opposed to a push, a
    /// pub/sub message or a MONITOR line. Updates the subscribe-mode state.
    #[inline]
    pub(super) fn answers_request(
        &mut self,
        head: &ReplyHead,
        range: &std::ops::Range<usize>,
    ) -> bool {
        if head.kind == b'>' {
            if self.stream == Stream::PubSub {
                self.pubsub_push(range);
            }
            return false;
        }
        if self.stream == Stream::Monitor {
            // Only RESET's own reply ends a MONITOR stream.
            let is_reset = &self.from_backend[range.clone()] == b"+RESET\r\n";
            return is_reset && matches!(self.owed.front(), Some(Owed::Reply(Expect::Reset)));
        }
        if self.stream != Stream::PubSub || head.kind != b'*' {
            return true;
        }
        if self.resp3 {
            // Kvrocks sends pub/sub messages as arrays even in RESP3; Redis
            // pushes them, so an array there answers a request.
            return !(self.gate.role().node.is_kvrocks()
                && pubsub_frame(&self.from_backend[range.clone()]) == Some(PubSubFrame::Message));
        }
        match pubsub_frame(&self.from_backend[range.clone()]) {
            None => true,
            Some(frame) => {
                self.pubsub_frame(frame);
                false
            }
        }
    }

    /// The (Kvrocks) node became a replica while the command at the head
    /// of the queue blocked (BLPOP & co.): Kvrocks does not unblock it, so
    /// the driver gives the node connection up and the client is told. A
    /// reply the node wrote before was read first, and a replica pops
    /// nothing: nothing was taken for it. The session then goes on at a
    /// new node connection where nothing else is owed, as after any node
    /// close between requests.
    pub(super) fn unblocked_by_demotion(&mut self) {
        let blocking_first = self.owed.front().is_some_and(Owed::is_blocking);
        if !blocking_first {
            return;
        }
        self.blocking_out = self.blocking_out.saturating_sub(1);
        self.owed.pop_front();
        if self.mute.is_on() || !self.mute.next_answer() {
            self.to_client.extend_from_slice(UNBLOCKED_BY_DEMOTION);
        }
        self.settle();
    }

    /// Writes out local replies and applies mode changes that have reached
    /// the head of the queue, until a backend reply is owed first.
    #[inline]
    pub(super) fn settle(&mut self) {
        while let Some(front) = self.owed.front() {
            match front {
                Owed::Reply(_) => return,
                Owed::Local(reply) => {
                    self.owed_local -= reply.len();
                    if self.mute.is_on() || !self.mute.next_answer() {
                        self.to_client.extend_from_slice(reply);
                    }
                }
                Owed::PubSub(confirmations) => {
                    if confirmations.is_reached() {
                        return; // its confirmations are still coming
                    }
                    let kind = confirmations.kind;
                    let held = self.subscriptions_of(kind);
                    if let Some(Owed::PubSub(confirmations)) = self.owed.front_mut() {
                        confirmations.reached(held);
                    }
                    if !self.mute.is_on() {
                        self.mute.subscribe_answer();
                    }
                    self.stream = Stream::PubSub;
                    return;
                }
                Owed::Monitor => self.stream = Stream::Monitor,
                Owed::Replication => self.stream = Stream::Replication,
                Owed::Close => {
                    self.lifecycle = Lifecycle::Closing;
                    self.owed.clear();
                    self.pubsub_owed = 0;
                    self.owed_local = 0;
                    return;
                }
            }
            self.owed.pop_front();
        }
    }
}

/// The length of a bare line (Kvrocks' `_db_name` answer: `<name>\r\n`, or an
/// error line), CRLF included, once complete.
fn bare_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n").map(|at| at + 2)
}
