//! What a connection's mode lets through: a MONITOR connection takes
//! RESET and QUIT only; inside a transaction MONITOR, HELLO and the
//! subscribe commands are refused (their replies would come inside
//! EXEC's); a subscribed client of Kvrocks is held to the subscribe
//! commands, PING, QUIT and RESET, as Redis holds one in RESP2.

use crate::command::Special;

use super::state::{Owed, Stream};
use super::Session;

/// A request on a MONITOR connection ([`Session::monitoring`]).
const MONITORING: &[u8] =
    b"-ERR leasegate: this connection is in MONITOR mode: it takes RESET and QUIT only\r\n";
/// MONITOR in a transaction (Redis's answer: it would turn the connection
/// into a stream at EXEC, behind replies still owed).
const MONITOR_IN_TRANSACTION: &[u8] = b"-ERR Command not allowed inside a transaction\r\n";
/// HELLO in a transaction: the protocol it picks would change in the
/// middle of EXEC's reply (Redis switches there), and whether it ran is
/// known only from that reply.
const HELLO_IN_TRANSACTION: &[u8] = b"-ERR leasegate: HELLO is not taken inside a transaction (the protocol would change in the middle of EXEC's reply); send it before MULTI\r\n";
/// Any other command in subscribe mode on Kvrocks, which runs it (Redis
/// refuses it in RESP2): its reply could not be told from a message, an
/// array too (`LRANGE` of `message x y` was taken for one: every reply
/// after it was one off, and a write's stayed counted in flight for good,
/// an audit). Refused as Redis refuses it, in both protocols.
const KVROCKS_SUBSCRIBED: &[u8] = b"-ERR leasegate: only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context (Kvrocks' replies to other commands could not be told from its messages)\r\n";
/// A subscribe-family command in a transaction: its confirmations would
/// come inside EXEC's reply (Kvrocks refuses it there itself).
const SUBSCRIBE_IN_TRANSACTION: &[u8] = b"-ERR leasegate: (un)subscribing is not taken inside a transaction (its confirmations would come inside EXEC's reply); send it before MULTI\r\n";

impl Session {
    /// Whether `special` (named `name`) is a request whose fate depends on
    /// subscribe mode on Kvrocks: anything but the subscribe commands,
    /// `PING`, `QUIT` and `RESET`.
    pub(super) fn awaits_subscribe_mode(&self, special: Special, name: &[u8]) -> bool {
        !matches!(
            special,
            Special::Subscribe | Special::Unsubscribe | Special::Reset | Special::Quit
        ) && !name.eq_ignore_ascii_case(b"ping")
    }

    /// On Kvrocks, an (un)subscribe not yet confirmed: whether the session
    /// will be in subscribe mode when the next request runs is not known
    /// yet, so that request waits ([`Session::behind_block`]). Judged at
    /// forwarding time, an `LRANGE` pipelined behind `SUBSCRIBE` went out
    /// and its reply was taken for a message; one behind the last
    /// `UNSUBSCRIBE` was refused (a review).
    #[cold]
    pub(super) fn subscribe_pending_on_kvrocks(&self) -> bool {
        self.gate.role().node.is_kvrocks() && self.owed.iter().any(|o| matches!(o, Owed::PubSub(_)))
    }

    /// Why a request is not sent to a node that streams to a MONITOR (or
    /// a MONITOR, HELLO or (un)subscribe not sent inside a transaction), if
    /// it is not.
    #[cold]
    pub(super) fn mode_refusal(&self, special: Special, name: &[u8]) -> Option<&'static [u8]> {
        if self.monitoring && !matches!(special, Special::Reset | Special::Quit) {
            Some(MONITORING)
        } else if self.stream == Stream::PubSub
            && self.awaits_subscribe_mode(special, name)
            && self.gate.role().node.is_kvrocks()
        {
            Some(KVROCKS_SUBSCRIBED)
        } else if special == Special::Monitor && !self.transaction.is_none() {
            Some(MONITOR_IN_TRANSACTION)
        } else if self.transaction.is_none() {
            None
        } else if special == Special::Hello {
            Some(HELLO_IN_TRANSACTION)
        } else if matches!(special, Special::Subscribe | Special::Unsubscribe) {
            Some(SUBSCRIBE_IN_TRANSACTION)
        } else {
            None
        }
    }
}
