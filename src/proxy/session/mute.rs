//! The client's reply mode (`CLIENT REPLY ON|OFF|SKIP`), kept by the
//! session: which of the node's replies the client is not sent.
//!
//! The node itself is always sent `CLIENT REPLY ON`
//! ([`crate::command::ReplyMode`]), so it answers every request: replies
//! stay matched to requests, a write counts as in flight until its reply
//! comes, and an acknowledgement is still checked against the lease. The
//! session then drops, in request order, what the node would not have sent,
//! leasegate's own replies (a fenced write, a refusal) included.
//!
//! What each node does, measured on redis-server 7.0 and Kvrocks 2.14
//! (`tests/client_reply.rs` compares them byte for byte):
//!
//! * `OFF`: no reply until `CLIENT REPLY ON`, whose `+OK` is sent.
//! * `SKIP`: no reply to the `SKIP` itself nor to the next request (an
//!   error, an unknown command, a blocking pop's timeout alike); `ON` as
//!   the skipped request still answers `+OK`. Under `OFF`, Redis ignores
//!   `SKIP`; Kvrocks turns `OFF` into `SKIP`.
//! * `RESET` (Redis) ends `OFF` and answers `+RESET`.
//! * Pushes and pub/sub messages are delivered in every mode; MONITOR lines
//!   are not under `OFF`. Redis delivers subscribe confirmations in every
//!   mode (they are pushes there); Kvrocks drops them as replies.

use crate::command::ReplyMode;

/// The session's reply mode and what it drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Mute {
    mode: Mode,
    /// The node is Kvrocks, as far as leasegate knows: its `SKIP` ends
    /// `OFF`, and it drops subscribe confirmations with replies.
    kvrocks: bool,
    /// The last request's answer was dropped: so are its other frames
    /// (Kvrocks drops a skipped subscribe's confirmations, and the second
    /// reply it gives a pipelined `XREAD BLOCK` on a missing stream).
    dropped_last: bool,
    /// Answers still to be dropped, whatever the mode: those of a
    /// transaction queued again at a new master ([`super::requeue`]), which
    /// the client had from the old node. (Absent from a predecessor's state.)
    #[serde(default)]
    requeued: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
enum Mode {
    #[default]
    On,
    Off,
    /// The next request's answer is dropped.
    Skip,
}

impl Mute {
    /// Whether every reply goes to the client (the hot path's one check).
    #[inline]
    pub(super) fn is_on(&self) -> bool {
        self.mode == Mode::On && !self.dropped_last
    }

    /// The next `answers` answers are dropped, whatever the mode. Marked as
    /// a dropped answer, so the hot path's one check sends the replies the
    /// careful way until they are used up (no second check per reply).
    pub(super) fn requeued(&mut self, answers: u32) {
        self.requeued += answers;
        if answers > 0 {
            self.dropped_last = true;
        }
    }

    /// The next request's answer (a node reply, a local reply, a subscribe
    /// request's turn) is at hand: whether it is dropped. A `SKIP` is used
    /// up by it.
    pub(super) fn next_answer(&mut self) -> bool {
        if self.requeued > 0 {
            self.requeued -= 1;
            self.dropped_last = true;
            return true;
        }
        self.dropped_last = match self.mode {
            Mode::On => false,
            Mode::Off => true,
            Mode::Skip => {
                self.mode = Mode::On;
                true
            }
        };
        self.dropped_last
    }

    /// A subscribe-family request's turn (it owes no reply; its
    /// confirmations come as frames of their own).
    pub(super) fn subscribe_answer(&mut self) {
        self.next_answer();
    }

    /// The node answered `+OK` to the `CLIENT REPLY ON` sent for `mode`
    /// (after [`Mute::next_answer`] for that request): the mode takes
    /// effect. Returns whether the `+OK` goes to the client, as only `ON`'s
    /// does.
    pub(super) fn accepted(&mut self, mode: ReplyMode, kvrocks: bool) -> bool {
        self.kvrocks = kvrocks;
        match mode {
            ReplyMode::On => {
                self.mode = Mode::On;
                self.dropped_last = false;
                true
            }
            ReplyMode::Off => {
                self.mode = Mode::Off;
                false
            }
            ReplyMode::Skip => {
                // Redis ignores SKIP while OFF; Kvrocks replaces OFF with it.
                if self.mode != Mode::Off || kvrocks {
                    self.mode = Mode::Skip;
                }
                false
            }
        }
    }

    /// `RESET` answered `+RESET`. Returns whether that reply goes to the
    /// client. Redis clears `OFF` before answering (not a `SKIP`), and the
    /// mode is `ON` after it; Kvrocks' RESET leaves the mode alone.
    pub(super) fn reset(&mut self) -> bool {
        let was_off = self.mode == Mode::Off;
        let dropped = self.next_answer();
        if self.kvrocks {
            return !dropped;
        }
        self.mode = Mode::On;
        if was_off {
            self.dropped_last = false;
        }
        was_off || !dropped
    }

    /// Whether a reply that answers no request is dropped: it belongs with
    /// the last request's answer.
    pub(super) fn drops_unrequested(&self) -> bool {
        self.mode == Mode::Off || self.dropped_last
    }

    /// Whether a subscribe or unsubscribe confirmation is dropped.
    pub(super) fn drops_confirmation(&self) -> bool {
        self.kvrocks && (self.mode == Mode::Off || self.dropped_last)
    }

    /// Whether a MONITOR line is dropped.
    pub(super) fn drops_monitor_line(&self) -> bool {
        self.mode == Mode::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs requests through a mute: each is `Some(mode)` for an accepted
    /// `CLIENT REPLY <mode>`, `None` for any other request; returns which
    /// were answered.
    fn answered(kvrocks: bool, requests: &[Option<ReplyMode>]) -> Vec<bool> {
        let mut m = Mute::default();
        requests
            .iter()
            .map(|r| {
                let dropped = m.next_answer();
                match r {
                    Some(ReplyMode::On) => m.accepted(ReplyMode::On, kvrocks),
                    Some(mode) => m.accepted(*mode, kvrocks) && !dropped,
                    None => !dropped,
                }
            })
            .collect()
    }

    use ReplyMode::{Off, On, Skip};

    #[test]
    fn off_drops_everything_until_on() {
        assert_eq!(
            answered(false, &[Some(Off), None, None, Some(On), None]),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn skip_drops_itself_and_the_next_answer() {
        assert_eq!(
            answered(false, &[Some(Skip), None, None]),
            [false, false, true]
        );
        // A SKIP skipped arms another: the request after it is dropped too.
        assert_eq!(
            answered(false, &[Some(Skip), Some(Skip), None, None]),
            [false, false, false, true]
        );
        // ON answers even as the skipped request.
        assert_eq!(
            answered(false, &[Some(Skip), Some(On), None]),
            [false, true, true]
        );
    }

    #[test]
    fn skip_under_off_is_ignored_by_redis_and_ends_off_on_kvrocks() {
        let requests = [Some(Off), Some(Skip), None, None];
        assert_eq!(answered(false, &requests), [false, false, false, false]);
        assert_eq!(answered(true, &requests), [false, false, false, true]);
    }

    #[test]
    fn reset_ends_off_and_answers_unless_skipped() {
        let mut m = Mute::default();
        m.next_answer();
        m.accepted(Off, false);
        assert!(m.reset(), "RESET after OFF answers");
        assert!(!m.next_answer(), "and the mode is ON");
        m.accepted(Skip, false);
        assert!(!m.reset(), "RESET as the skipped request does not");
        assert!(!m.next_answer());
    }

    #[test]
    fn kvrocks_reset_leaves_the_mode_and_extra_replies_go_with_their_request() {
        let mut m = Mute::default();
        m.next_answer();
        m.accepted(Off, true);
        assert!(!m.reset(), "dropped under OFF");
        assert!(m.next_answer(), "still OFF");
        m.accepted(Skip, true);
        assert!(m.next_answer(), "the skipped request");
        assert!(m.drops_unrequested(), "its second reply");
        assert!(!m.next_answer());
        assert!(!m.drops_unrequested());
    }

    #[test]
    fn confirmations_are_dropped_only_on_kvrocks() {
        let mut redis = Mute::default();
        redis.next_answer();
        redis.accepted(Off, false);
        assert!(!redis.drops_confirmation());
        assert!(redis.drops_monitor_line());

        let mut kvrocks = Mute::default();
        kvrocks.next_answer();
        kvrocks.accepted(Skip, true);
        kvrocks.subscribe_answer();
        assert!(kvrocks.drops_confirmation(), "the skipped SUBSCRIBE's");
        assert!(!kvrocks.is_on());
        assert!(!kvrocks.next_answer());
        assert!(!kvrocks.drops_confirmation(), "past the next answer");
        assert!(kvrocks.is_on());
    }
}
