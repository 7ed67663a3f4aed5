//! Replica acknowledgements on a session (`durability.min_replicas`,
//! [`crate::guard::durability`]): after a batch of writes the session sends
//! the node `WAIT <replicas> <timeout_ms>`, and every reply from the first
//! write's success on stays in `to_client`, unsent, until `WAIT` answers.
//! Enough replicas: the replies go as they came. Too few (or an error): each
//! held write success is replaced with the Gate's unknown-outcome reply, and
//! the rest (reads, errors, local replies) go as they came, in order.
//!
//! `WAIT` goes out at the end of a batch, and before anything after which
//! it could not follow at once: MULTI (a client that waits for the replies
//! before its EXEC would wait for ever), a blocking command, SUBSCRIBE,
//! MONITOR, a replication stream, QUIT, RESET, and a new login (AUTH,
//! HELLO: the `WAIT` would run as that user). Inside a transaction it
//! waits for EXEC. Its reply is swallowed (a muted client is not sent it
//! either) and it counts as a write in flight, so a failover's pause waits
//! for it as for the writes it covers.

use crate::command::Special;
use crate::resp::request::RequestHead;

use super::blocking::is_blocking;
use super::state::{Expect, Owed, Stream};
use super::Session;

/// Held replies: `to_client[at..]` waits for the `WAIT` owed next.
#[derive(Debug)]
pub(super) struct AckHold {
    /// Where the held bytes start in `to_client` (moves as bytes before it
    /// are sent).
    pub(super) at: usize,
    /// The held write successes, as ranges relative to `at`.
    writes: Vec<(usize, usize)>,
}

impl Session {
    /// The bytes that may be sent to the client now.
    #[inline]
    pub(super) fn client_bytes(&self) -> &[u8] {
        sendable(&self.to_client, &self.ack_hold)
    }

    /// `n` bytes of [`Session::client_bytes`] were sent.
    #[inline]
    pub(super) fn client_sent(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.to_client, n);
        if let Some(hold) = &mut self.ack_hold {
            hold.at -= n;
        }
    }

    /// The end of a batch of requests (everything admitted is in
    /// `to_backend`): writes forwarded since the last `WAIT` get theirs,
    /// unless a transaction is still queued.
    #[inline]
    pub(super) fn batch_forwarded(&mut self) {
        if self.unreplicated && self.transaction.is_none() {
            self.ask_replicas();
        }
        if self.login_unplaced {
            // Also at the end of a batch: where a login put the connection.
            self.ask_namespace();
        }
    }

    /// Before the request at the head of the unhandled bytes (`special`,
    /// `head`) is admitted: the writes before it get their `WAIT` now if
    /// it could not follow them later (see the module documentation).
    #[cold]
    pub(super) fn before_special(&mut self, special: Special, head: &RequestHead) {
        let blocking = matches!(special, Special::Blocking | Special::BlockingWithOption)
            && is_blocking(special, head, &self.unhandled()[..head.len]);
        if (blocking || ends_a_batch(special)) && self.transaction.is_none() {
            self.ask_replicas();
        }
    }

    /// Sends `WAIT` for the writes forwarded since the last one (when the
    /// rule is in force), after the requests forwarded so far.
    #[cold]
    fn ask_replicas(&mut self) {
        self.unreplicated = false;
        // A stream (MONITOR, replication) takes no write, nor does Redis's
        // RESP2 subscribe mode; RESP3's takes any command, and Kvrocks'
        // either (a subscribed RESP3 client's SET was acknowledged
        // unreplicated: an attack pass; a review, Kvrocks in RESP2).
        if self.stream != Stream::Replies
            && !(self.stream == Stream::PubSub
                && (self.resp3 || self.gate.role().node.may_be_kvrocks()))
        {
            return;
        }
        let Some(rule) = self.gate.replica_acks().rule() else {
            return;
        };
        self.forward_run();
        self.to_backend.extend_from_slice(&rule.request);
        // Behind a blocking command the node may never run it: counted,
        // it held every failover's pause (a review: `BLPOP never 0` alone,
        // with `durability.min_replicas`). The writes it covers are
        // counted themselves, or are the blocking command.
        let counted = !self.blocking_owed();
        self.owed.push_back(Owed::Reply(Expect::ReplicaAck {
            min_replicas: rule.min_replicas,
            timeout_ms: rule.timeout_ms,
            counted,
        }));
        self.acks_owed += 1;
        if counted {
            self.writes_out.add(&self.gate);
        }
    }

    /// The last blocking command before them was answered: the `WAIT`s
    /// sent behind it will run now, and are counted in flight from here
    /// (a failover's pause then waits for them, as for any: uncounted, a
    /// pop served just before a failover was answered `-UNKNOWN` once the
    /// demotion cut its `WAIT` short, a review).
    #[cold]
    pub(super) fn count_waits_unblocked(&mut self) {
        if self.acks_owed == 0 || self.blocking_owed() {
            return;
        }
        for owed in self.owed.iter_mut() {
            if let Owed::Reply(Expect::ReplicaAck { counted, .. }) = owed {
                if !*counted {
                    *counted = true;
                    self.writes_out.add(&self.gate);
                }
            }
        }
    }

    /// A write's success reply, to land at `to_client[at..at + len]`,
    /// waits for the `WAIT` owed after it.
    #[inline]
    pub(super) fn hold_for_replicas(&mut self, at: usize, len: usize) {
        let hold = self.ack_hold.get_or_insert(AckHold {
            at,
            writes: Vec::new(),
        });
        hold.writes.push((at - hold.at, at - hold.at + len));
    }

    /// The node answered `WAIT` (`reply`): the held replies go, with the
    /// write successes replaced if too few replicas confirmed them. Every
    /// reply before the `WAIT`'s is in `to_client` by now.
    #[cold]
    pub(super) fn replicas_answered(
        &mut self,
        reply: &[u8],
        (min_replicas, timeout_ms): (u32, u64),
        counted: bool,
    ) {
        self.acks_owed = self.acks_owed.saturating_sub(1);
        if counted {
            self.writes_out.answered(&self.gate);
        }
        let Some(hold) = self.ack_hold.take() else {
            return; // no write success waited (errors, or muted replies)
        };
        let writes = hold.writes.len();
        let Some(refusal) = self
            .gate
            .replicated(reply, min_replicas, timeout_ms, writes)
        else {
            return;
        };
        let held = self.to_client.split_off(hold.at);
        let mut from = 0;
        for (start, end) in hold.writes {
            self.to_client.extend_from_slice(&held[from..start]);
            self.to_client.extend_from_slice(&refusal);
            from = end;
        }
        self.to_client.extend_from_slice(&held[from..]);
    }

    /// Whether held replies wait for a `WAIT` that will never be answered
    /// (the node connection is gone): then they are not sent at all.
    pub(super) fn holds_for_replicas(&self) -> bool {
        self.ack_hold.is_some()
    }
}

/// What of `to_client` may be sent now, given the hold (for callers that
/// borrow the session's fields one by one).
#[inline]
pub(super) fn sendable<'a>(to_client: &'a [u8], hold: &Option<AckHold>) -> &'a [u8] {
    match hold {
        None => to_client,
        Some(hold) => &to_client[..hold.at],
    }
}

/// Requests after which the node would not answer a `WAIT` at once, or
/// not for the writes before them: after `AUTH` or `HELLO ... AUTH` it
/// runs as the new login, which may not be let run it (the writes, applied,
/// were answered `-UNKNOWN`: a differential fuzzer).
fn ends_a_batch(special: Special) -> bool {
    matches!(
        special,
        Special::Multi
            | Special::Subscribe
            | Special::Monitor
            | Special::ReplicationStream
            | Special::Quit
            | Special::Reset
            | Special::Auth
            | Special::Hello
    )
}
