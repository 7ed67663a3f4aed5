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

use super::state::{Expect, Lifecycle, Owed, Stall};
use super::Session;

/// What the client gets in place of the answer it was owed.
pub(super) const STOPPED: &[u8] = b"-ERR leasegate stopped before this was answered (drain_timeout_ms passed); the connection closes, and a write sent may or may not have been applied\r\n";

impl Session {
    /// The drain's deadline passed: queue [`STOPPED`] if anything is owed
    /// or held, and close once it is written.
    #[cold]
    pub(super) fn stop_now(&mut self) {
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
            self.to_client.extend_from_slice(STOPPED);
        }
        self.lifecycle = Lifecycle::Closing;
    }
}
