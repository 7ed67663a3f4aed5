//! A transaction that changes the node's role, as Redis Sentinel sends it
//! to a promoted replica and to every node it reconfigures:
//! `MULTI; SLAVEOF host port; CONFIG REWRITE; CLIENT KILL TYPE normal;
//! CLIENT KILL TYPE pubsub; EXEC`.
//!
//! The `CLIENT KILL TYPE normal` is there so that clients reconnect and
//! find the new master. Behind leasegate they need not: each session
//! follows the role change itself (a demoted node's writes go to the new
//! master's leasegate, a promoted node's are let through once it holds the
//! lease). The kill would only close, at the node, the connections of
//! leasegate's sessions; one idle at that moment goes on over a new node
//! connection, but one with a request in flight loses it, and its client
//! sees its connection closed (walkthroughs 13 and 15: 10 errors in 6
//! failovers there and back). So inside such a transaction that kill is
//! not sent: `PING` takes its place (its entry in `EXEC`'s answer is
//! `PONG`, which Sentinel discards). `TYPE pubsub` still goes: a
//! subscriber's session cannot go on over another connection unseen.

use bytes::Bytes;

use crate::command::Special;
use crate::guard::gate::{Answer, Verdict};
use crate::resp::request::{arguments, RequestHead};

use super::Session;

/// What takes the kill's place.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

impl Session {
    /// Notes a role change queued in a transaction, and turns the kill of
    /// every normal client queued after it into a `PING`; any other
    /// verdict passes unchanged.
    #[inline]
    pub(super) fn role_change(
        &mut self,
        head: &RequestHead,
        special: Special,
        verdict: Verdict,
    ) -> Verdict {
        match special {
            Special::ReplicaOf => {
                self.transaction = self.transaction.with_role_change();
                verdict
            }
            Special::ClientKill
                if self.transaction.changes_role()
                    && matches!(verdict, Verdict::Forward)
                    && kills_normal_clients(&self.unhandled()[..head.len], head.inline) =>
            {
                tracing::debug!("a role change's CLIENT KILL TYPE normal: not sent, the sessions follow the role change");
                Verdict::Rewrite {
                    request: Bytes::from_static(PING),
                    answer: Answer::Node,
                }
            }
            _ => verdict,
        }
    }
}

/// Whether the request is exactly `CLIENT KILL TYPE normal` (any case).
fn kills_normal_clients(bytes: &[u8], inline: bool) -> bool {
    let args = arguments(bytes, inline);
    args.len() == 4
        && args[2].eq_ignore_ascii_case(b"type")
        && args[3].eq_ignore_ascii_case(b"normal")
}

#[cfg(test)]
mod tests {
    use super::kills_normal_clients;

    #[test]
    fn only_the_kill_of_every_normal_client_is_recognised() {
        let resp = |args: &[&str]| {
            let mut b = format!("*{}\r\n", args.len());
            for a in args {
                b.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            b.into_bytes()
        };
        assert!(kills_normal_clients(
            &resp(&["CLIENT", "KILL", "TYPE", "normal"]),
            false
        ));
        assert!(kills_normal_clients(
            &resp(&["client", "kill", "type", "NORMAL"]),
            false
        ));
        assert!(kills_normal_clients(b"CLIENT KILL TYPE normal\r\n", true));
        assert!(!kills_normal_clients(
            &resp(&["CLIENT", "KILL", "TYPE", "pubsub"]),
            false
        ));
        assert!(!kills_normal_clients(
            &resp(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"]),
            false
        ));
        assert!(!kills_normal_clients(
            &resp(&["CLIENT", "KILL", "127.0.0.1:6379"]),
            false
        ));
    }
}
