//! Blocking commands (BLPOP & co., `XREAD ... BLOCK`): which requests
//! block, and the requests behind one. The node runs nothing on a
//! connection until its blocking command is answered, which may be
//! never: a write behind one waits in the session instead of at the node
//! ([`Session::behind_block`]), so that it is counted in flight only once
//! it can run.

use crate::command::Special;
use crate::resp::request::{arguments, RequestHead};

use super::state::Owed;
use super::Session;

impl Session {
    /// Whether a blocking command's reply is owed, first or behind others.
    #[cold]
    pub(super) fn blocking_owed(&self) -> bool {
        self.blocking_out > 0 && self.owed.iter().any(Owed::is_blocking)
    }

    /// A request waited ([`Session::behind_block`]) for a blocking
    /// command, or a Kvrocks (un)subscribe, before it, which is answered
    /// now: the requests from it on are admitted. Whether it did.
    pub(super) fn resume_behind_block(&mut self) -> bool {
        if !self.behind_block
            || self.blocking_owed()
            || (self.pubsub_owed > 0 && self.subscribe_pending_on_kvrocks())
            || self.waits_on_kvrocks()
        {
            return false;
        }
        self.behind_block = false;
        self.on_client_data();
        true
    }

    /// Whether a request must wait for a `WAIT` (leasegate's own, of
    /// `durability.min_replicas`) sent before it to be answered: on
    /// Kvrocks (2025), a `MULTI` sent right behind a `WAIT` is run, and
    /// answered, before it, and every reply after it with it (an attack
    /// pass captured eleven replies ahead of one, every later reply of the
    /// connection then one place off; the writes the `WAIT` covered were
    /// answered `-UNKNOWN` with the `MULTI`'s `+OK` as its count). So there
    /// nothing goes behind a `WAIT` until it is answered, nor behind a
    /// blocking command (the client's own `WAIT` is one), which the node
    /// would not run before it anyway.
    #[inline]
    pub(super) fn waits_on_kvrocks(&self) -> bool {
        // (Kvrocks first: the owed queue is scanned only there.)
        self.gate.role().node.is_kvrocks() && (self.acks_owed > 0 || self.blocking_owed())
    }
}

/// Requests that may block for a long time before they answer (writes so
/// are not counted in flight). `XREAD` and `XREADGROUP` block only with a
/// `BLOCK` option.
#[inline]
pub(super) fn is_blocking(special: Special, head: &RequestHead, bytes: &[u8]) -> bool {
    match special {
        Special::Blocking => true,
        Special::BlockingWithOption => has_block_option(&arguments(bytes, head.inline)),
        _ => false,
    }
}

/// Whether `XREAD [COUNT n] [BLOCK ms] STREAMS ...` or `XREADGROUP GROUP g
/// c [COUNT n] [BLOCK ms] [NOACK] STREAMS ...` has a `BLOCK` option: read
/// where options go, so that a stream, group or consumer named `block`
/// does not count (a review: `XREAD STREAMS block 0` was taken for a
/// blocking read).
fn has_block_option<A: AsRef<[u8]>>(args: &[A]) -> bool {
    let group = args
        .first()
        .is_some_and(|name| name.as_ref().eq_ignore_ascii_case(b"xreadgroup"));
    let mut at = if group { 4 } else { 1 };
    while let Some(arg) = args.get(at).map(AsRef::as_ref) {
        if arg.eq_ignore_ascii_case(b"block") {
            return true;
        }
        if arg.eq_ignore_ascii_case(b"streams") {
            return false;
        }
        at += if arg.eq_ignore_ascii_case(b"count") {
            2
        } else {
            1
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_block_option;

    #[test]
    fn only_a_block_option_makes_a_stream_read_blocking() {
        let blocks = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            has_block_option(&args)
        };
        assert!(blocks(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]));
        assert!(blocks(&[
            "xread", "count", "5", "block", "10", "streams", "s", "$"
        ]));
        assert!(blocks(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">"
        ]));
        assert!(!blocks(&["XREAD", "STREAMS", "block", "0"]));
        assert!(!blocks(&["XREAD", "COUNT", "block", "STREAMS", "s", "0"]));
        assert!(!blocks(&[
            "XREADGROUP",
            "GROUP",
            "block",
            "block",
            "STREAMS",
            "s",
            ">"
        ]));
        assert!(!blocks(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "NOACK",
            "STREAMS",
            "block",
            ">"
        ]));
    }
}
