//! A session still owed an answer when the proxy stops: once
//! `drain_timeout_ms` has passed (SIGTERM, or an upgrade whose successor
//! cannot take this session, such as one blocked in `BLPOP 0`), the client
//! is told why its connection closes instead of seeing it cut.
//!
//! It gets one error in place of the first answer it is owed, after every
//! reply that was already complete; what the node may still send is not
//! read. A write that was forwarded may or may not have been applied, and
//! the error says so. Replies held for a confirmation or for replicas are
//! not sent: nothing is acknowledged that the Gate did not let through.
//!
//! A node whose replies came out of order (its answer to leasegate's own
//! `WAIT` was neither a count nor an error) ends its session the same way,
//! with an error that says so ([`Session::out_of_step`]).

use super::state::{Expect, Lifecycle, Owed, Stall};
use super::Session;

/// What the client gets when the node's replies came out of step.
const OUT_OF_STEP: &str =
    "-ERR leasegate: the node's replies came out of order (its answer to leasegate's WAIT was ";

/// What the client gets in place of the answer it was owed.
pub(super) const STOPPED: &[u8] = b"-ERR leasegate stopped before this was answered (drain_timeout_ms passed); the connection closes, and a write sent may or may not have been applied\r\n";

impl Session {
    /// The drain's deadline passed: queue [`STOPPED`] if anything is owed
    /// or held, and close once it is written.
    #[cold]
    pub(super) fn stop_now(&mut self) {
        self.end_owing(STOPPED);
    }

    /// The node answered leasegate's own `WAIT` with neither a count nor an
    /// error (`reply`, at `from_backend[reply]`): its replies are out of
    /// order (Kvrocks answered a `MULTI` sent behind one first, an attack
    /// pass), so every reply after it would reach the wrong request. The
    /// client is told so and closed, nothing held sent.
    #[cold]
    pub(super) fn out_of_step(&mut self, reply: std::ops::Range<usize>) {
        let shown = crate::guard::durability::shown(&self.from_backend[reply], 60);
        tracing::warn!(reply = %shown, "the node's replies came out of order: the client is closed");
        let text = format!(
            "{OUT_OF_STEP}{shown}); the connection closes, and a write sent may or may not have been applied\r\n"
        );
        self.end_owing(text.as_bytes());
    }

    /// Queues `error` if anything is owed or held, and closes once it is
    /// written.
    fn end_owing(&mut self, error: &[u8]) {
        // (A `CLIENT INFO` of leasegate's own is owed no client.)
        let owes = self
            .owed
            .iter()
            .any(|o| matches!(o, Owed::Reply(e) if !matches!(e, Expect::Namespace)))
            || matches!(self.stall, Stall::Held(_))
            || self.unconfirmed.is_some()
            || self.ack_hold.is_some();
        if let Some(hold) = self.ack_hold.take() {
            // The held replies wait for replicas that did not answer.
            self.to_client.truncate(hold.at);
        }
        self.unconfirmed = None;
        self.owed.clear();
        self.pubsub_owed = 0;
        self.owed_local = 0;
        self.stall = Stall::None;
        if owes {
            self.to_client.extend_from_slice(error);
        }
        self.lifecycle = Lifecycle::Closing;
    }
}
