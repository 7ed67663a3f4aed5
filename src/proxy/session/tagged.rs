//! What a tagged command (AUTH, MULTI, SUBSCRIBE, MONITOR, a replication
//! request, ...) changes in the session once it is forwarded, and the
//! reply the session now owes for it. Most requests carry no tag and
//! never come here.

use bytes::Bytes;

use crate::command::Special;
use crate::resp::reply::PubSubKind;
use crate::resp::request::RequestHead;

use super::handover::{Replay, ReplaySlot};
use super::state::{Confirmations, Expect, Lifecycle, Owed, Peer, Transaction, Watch};
use super::Session;

impl Session {
    /// Book-keeping for a tagged command (cold: most requests are not).
    pub(super) fn forwarded_special(&mut self, head: &RequestHead, special: Special) {
        let expect = match special {
            // Queued in a transaction: it takes effect at EXEC, if at all.
            Special::Auth | Special::Hello | Special::Select | Special::SetName
                if !self.transaction.is_none() =>
            {
                self.replay.set_in_transaction = true;
                Expect::Plain
            }
            Special::Auth | Special::Hello | Special::Select | Special::SetName => {
                if matches!(special, Special::Auth | Special::Hello) {
                    self.auth_sent();
                    self.login_unplaced |= special == Special::Auth || head.argc > 2;
                }
                let request = Bytes::copy_from_slice(&self.unhandled()[..head.len]);
                match ReplaySlot::of(special) {
                    Some(ReplaySlot::Hello) => Expect::Hello(Some(request)),
                    Some(slot) => Expect::Remember(slot, request),
                    None => Expect::Plain,
                }
            }
            Special::Multi if self.transaction.is_none() => {
                self.requeue_begin(head.len);
                self.multis += 1;
                self.transaction = Transaction::Queued {
                    multi: self.multis,
                    open: false,
                    writes: false,
                    role_change: false,
                };
                Expect::Multi(self.multis)
            }
            Special::Exec | Special::Discard => {
                if !self.transaction.is_none() {
                    // EXEC and DISCARD end a transaction and its WATCH;
                    // without MULTI the node refuses them and WATCH stays.
                    self.transaction = Transaction::None;
                    self.watch = Watch::Off;
                }
                Expect::Plain
            }
            Special::Watch => Expect::Watch,
            Special::Unwatch => {
                self.watch = Watch::Off;
                Expect::Plain
            }
            // The node closes after its reply: the session ends there and
            // does not wait for a node again. (Inside a transaction Kvrocks
            // queues it, and closes only after EXEC: ending here left the
            // client's EXEC unsent and its connection open for good, a
            // differential fuzzer. Redis runs it at once and closes, which
            // ends the session with its transaction open.)
            Special::Quit if self.transaction.is_none() => {
                self.lifecycle = Lifecycle::Ending;
                Expect::Plain
            }
            Special::Reset => {
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
                self.replay = Replay::default();
                self.tracking = false;
                self.monitoring = false;
                Expect::Reset
            }
            // Taken as on once sent (a refused one only makes the session
            // end where it would otherwise move).
            Special::Tracking => {
                let args =
                    crate::resp::request::arguments(&self.unhandled()[..head.len], head.inline);
                match args.get(2) {
                    Some(on) if on.eq_ignore_ascii_case(b"on") => self.tracking = true,
                    Some(off) if off.eq_ignore_ascii_case(b"off") => self.tracking = false,
                    _ => {}
                }
                Expect::Plain
            }
            // With their channel arguments (else the node answers an error).
            Special::Subscribe if head.argc >= 2 => {
                self.pubsub_owed = self.pubsub_owed.saturating_add(1);
                self.owed.push_back(Owed::PubSub(self.confirmations(head)));
                return;
            }
            Special::Unsubscribe => {
                self.pubsub_owed = self.pubsub_owed.saturating_add(1);
                self.owed.push_back(Owed::PubSub(self.confirmations(head)));
                return;
            }
            Special::Monitor => {
                self.monitoring = true;
                self.owed.push_back(Owed::Reply(Expect::Plain));
                self.owed.push_back(Owed::Monitor);
                return;
            }
            Special::ReplicationStream => {
                // From its reply on, the node streams; what the client sends
                // later (`REPLCONF ACK`) is answered by nothing.
                self.owed.push_back(Owed::Replication);
                self.peer = Peer::Replica;
                self.replica_stream_started(head);
                return;
            }
            Special::ReplConf => {
                self.replconf(head);
                Expect::Plain
            }
            Special::BareLine => Expect::BareLine,
            // A nested MULTI (the node refuses it; the transaction stays), and the rest.
            _ => Expect::Plain,
        };
        self.owed.push_back(Owed::Reply(expect));
    }

    /// The confirmations a subscribe-family request is answered with.
    fn confirmations(&self, head: &RequestHead) -> Confirmations {
        let name = head.name(&self.unhandled()[..head.len]);
        Confirmations::new(
            u32::try_from(head.argc.saturating_sub(1)).unwrap_or(u32::MAX),
            PubSubKind::of_command(name.as_bytes()),
        )
    }
}
