//! Client → backend: frame every complete request, classify it, put it to
//! the Gate, and carry out the verdict (forward, answer locally, hold, or
//! move the session), keeping the transaction and in-flight accounting.

use bytes::{Buf, Bytes};
use tracing::debug;

use crate::command::{Class, LastLookup, Special};
use crate::guard::gate::{Admission, Gate, Policy, Verdict, Wait};
use crate::resp::request::RequestHead;

use super::blocking::is_blocking;
use super::state::{
    Expect, Held, Lifecycle, Owed, Peer, Stall, Stream, Transaction, Watch, WriteTicket,
};
use super::step::Step;
use super::Session;

pub(super) const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
impl Session {
    /// Frames, classifies and admits every complete request the client sent,
    /// in order, until one is held.
    pub(super) fn on_client_data(&mut self) {
        if !matches!(self.stall, Stall::None) {
            return; // framing resumes when the held request is released
        }
        let policy = self.gate.policy();
        let mut last = LastLookup::default();
        while self.lifecycle == Lifecycle::Open {
            let head = match self.requests.next(&self.from_client[self.run..]) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "client protocol error");
                    self.forward_run();
                    self.batch_forwarded();
                    self.owe_local(e.reply());
                    self.owed.push_back(Owed::Close);
                    self.lifecycle = Lifecycle::Ending;
                    self.from_client.clear();
                    break;
                }
            };
            if head.argc == 0 {
                // Ignored by the node as well: nothing to forward, nothing owed.
                self.forward_run();
                self.consume(head.len);
                continue;
            }
            if !self.admit(&policy, &mut last, head, false) {
                break;
            }
        }
        self.forward_whole_or_run();
        self.batch_forwarded();
        self.settle();
    }

    /// [`Session::forward_run`] at the end of a read. When the run is all
    /// the client sent and nothing waits to go to the node, the two buffers
    /// trade places instead (measured hot path: no copy at all for a read
    /// whose requests are all forwarded as they came, the common case at
    /// any depth; ~140 instructions a request at `-P 1`).
    #[inline]
    fn forward_whole_or_run(&mut self) {
        if self.run > 0 && self.run == self.from_client.len() && self.to_backend.is_empty() {
            std::mem::swap(&mut self.from_client, &mut self.to_backend);
            self.run = 0;
        } else {
            self.forward_run();
        }
    }

    /// What the client sent that is not handled yet: `from_client` less
    /// the run of forwarded requests at its head ([`Session::forward_run`]).
    /// The request being framed or admitted is at the head of this.
    #[inline]
    pub(super) fn unhandled(&self) -> &[u8] {
        &self.from_client[self.run..]
    }

    /// Copies the run of consecutive requests forwarded as they came (the
    /// first `run` bytes of `from_client`) to `to_backend` in one copy and
    /// takes them off `from_client`. Measured hot path: at `-P 16` one copy
    /// per read instead of one per request. Every other way of carrying out
    /// a verdict calls this first, so `to_backend` keeps the client's order
    /// and the request in hand is at the head of `from_client`; it is
    /// called before [`Session::on_client_data`] returns, so outside it the
    /// run is always empty.
    #[inline]
    pub(super) fn forward_run(&mut self) {
        if self.run > 0 {
            self.to_backend
                .extend_from_slice(&self.from_client[..self.run]);
            self.from_client.advance(self.run);
            self.run = 0;
        }
    }

    /// Puts the request at the head of `from_client` to the Gate and carries
    /// out the verdict. Returns `false` when the request is held. `last`
    /// remembers the command looked up before, in `policy`'s table.
    #[inline]
    pub(super) fn admit<'p>(
        &mut self,
        policy: &'p Policy,
        last: &mut LastLookup<'p>,
        head: RequestHead,
        verified: bool,
    ) -> bool {
        let bytes = &self.from_client[self.run..][..head.len];
        let words = head.words(bytes);
        let command = policy
            .commands
            .classify_after(&words.name, &words.sub, last);
        if self.peer == Peer::Replica {
            return self.replica_request(head, command.special);
        }
        let special = command.special;
        let own_class = if special == Special::ReadOnlyScript {
            self.read_only_script_class(command.class)
        } else {
            command.class
        };
        if self.pubsub_owed > 0
            && self.awaits_subscribe_mode(special, &words.name)
            && self.subscribe_pending_on_kvrocks()
        {
            self.behind_block = true;
            return false;
        }
        if (self.acks_owed > 0 || self.blocking_out > 0) && self.waits_on_kvrocks() {
            self.behind_block = true;
            return false;
        }
        if self.monitoring
            || self.stream == Stream::PubSub
            || matches!(
                special,
                Special::Monitor | Special::Hello | Special::Subscribe | Special::Unsubscribe
            )
        {
            if let Some(refusal) = self.mode_refusal(special, &words.name) {
                let refusal = Verdict::Reply(Bytes::from_static(refusal));
                return self.carry_out(head, own_class, special, refusal, None);
            }
        }
        if self.unreplicated && special != Special::None {
            self.before_special(special, &head);
            // The `WAIT` it sent goes first (Kvrocks).
            if self.waits_on_kvrocks() {
                self.behind_block = true;
                return false;
            }
        }
        let bytes = &self.from_client[self.run..][..head.len];
        let class = self.gated_class(special, own_class);
        let blocking = class == Class::Write && is_blocking(special, &head, bytes);
        // A write is counted in flight *before* the Gate looks at the pause,
        // and the failover pauses before it reads the count: whichever comes
        // second sees the other, so no write slips past a failover's count.
        let counted = class == Class::Write
            && !self.handed_over
            && self.stream != Stream::Monitor
            && !blocking;
        // Behind a blocking command the node runs nothing until it is
        // answered, which may be never: a write sent there would stay
        // counted in flight, and every failover would wait for it (an
        // audit: `BLPOP never 0` then `SET`, from any client). It waits
        // here instead, as it would at the node, and goes once the
        // blocking command is answered.
        if counted && self.blocking_out > 0 && self.blocking_owed() {
            self.behind_block = true;
            return false;
        }
        if counted {
            self.writes_out.add(&self.gate);
        }
        let verdict = match authenticate(&self.gate, special, &head, bytes) {
            Some((verdict, control)) => {
                if control {
                    self.peer = self.peer.max_control();
                    self.login_as_control();
                }
                verdict
            }
            None => self.gate.admit(&Admission {
                class,
                command,
                head: &head,
                bytes,
                control: matches!(self.peer, Peer::Control | Peer::Trusted),
                verified,
                covered: head.len <= self.confirmed,
                handed_over: self.handed_over,
                buffered: self.from_client.len() - self.run,
                peer: self.replica.peer,
            }),
        };
        // A write forwarded unconfirmed goes out like any other; only its
        // reply waits for the confirmation round. A forward is carried out
        // here without moving the verdict (measured hot path: two copies
        // of the enum per request before); every other verdict goes to
        // `carry_out`.
        let confirm = match verdict {
            Verdict::Forward => None,
            Verdict::ForwardUnconfirmed(round) => Some(round),
            _ => {
                if counted {
                    self.writes_out.answered(&self.gate);
                }
                return self.carry_out(head, own_class, special, verdict, None);
            }
        };
        // Both forwards own nothing: forgetting the verdict spares the call
        // to the enum's drop glue that the optimizer leaves in otherwise.
        std::mem::forget(verdict);
        // Taken after the Gate's lease check and before the write goes out:
        // the node applies it later, within this term if it is acknowledged.
        let write = (class == Class::Write).then(|| WriteTicket {
            blocking,
            counted,
            term: if self.handed_over {
                None
            } else {
                self.gate.write_term()
            },
            confirm,
        });
        self.carry_out_forward(head, own_class, special, write)
    }

    /// Carries out a forward. The common case (outside a transaction) is
    /// inlined into [`Session::admit`], the measured hot path: the request
    /// goes as it came, copied with the run it joins (`forward_run`);
    /// everything else is [`Session::carry_out`].
    #[inline(always)]
    fn carry_out_forward(
        &mut self,
        head: RequestHead,
        class: Class,
        special: Special,
        write: Option<WriteTicket>,
    ) -> bool {
        if self.transaction.is_none() && self.watch != Watch::Broken {
            self.forwarded(&head, class, special, write);
            self.run += head.len;
            self.confirmed = self.confirmed.saturating_sub(head.len);
            return true;
        }
        self.carry_out(head, class, special, Verdict::Forward, write)
    }

    /// Carries out a verdict for the request at the head of the unhandled
    /// bytes, any verdict (a plain forward outside a transaction takes
    /// [`Session::carry_out_forward`] from `admit`). `class` is the
    /// command's own class; `write` is set for a forwarded request the Gate
    /// judged as a write.
    #[inline(never)]
    pub(super) fn carry_out(
        &mut self,
        head: RequestHead,
        class: Class,
        special: Special,
        verdict: Verdict,
        write: Option<WriteTicket>,
    ) -> bool {
        self.forward_run();
        let verdict = self.role_change(&head, special, verdict);
        let step = self.in_transaction(special, verdict);
        // A write counted in flight that does not go out as it came (an
        // aborted EXEC, discarded where `commands.classes` makes EXEC a
        // write) is answered here: it stayed counted, and every failover
        // waited for it (an audit).
        if !matches!(step, Step::Forward) && write.is_some_and(|w| w.counted) {
            self.writes_out.answered(&self.gate);
        }
        match step {
            Step::Hold(wait) => {
                let arrived = self.from_client.len();
                self.stall = Stall::Held(Held {
                    head,
                    class,
                    special,
                    wait,
                    arrived,
                });
                return false;
            }
            Step::HandOver(target) => {
                // The request stays at the head until the session has moved.
                self.stall = Stall::HandingOver(target);
                return false;
            }
            Step::Forward
                if self.watch == Watch::Broken
                    && special == Special::Exec
                    && !self.transaction.is_none() =>
            {
                // The WATCH was on the old node: the transaction fails as a
                // WATCH conflict would, and nothing of it is applied.
                if write.is_some_and(|w| w.counted) {
                    self.writes_out.answered(&self.gate);
                }
                self.to_backend.extend_from_slice(DISCARD);
                self.owed
                    .push_back(Owed::Reply(Expect::Replace(self.null_reply())));
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
            }
            Step::Forward => {
                self.to_backend
                    .extend_from_slice(&self.from_client[..head.len]);
                self.forwarded(&head, class, special, write);
                self.requeue_add(head.len, special);
            }
            Step::Observe(effect) => {
                self.to_backend
                    .extend_from_slice(&self.from_client[..head.len]);
                self.owed.push_back(Owed::Reply(Expect::Observe(effect)));
                self.requeue_forget();
            }
            Step::Rewrite(request, answer) => {
                self.to_backend.extend_from_slice(&request);
                self.owed.push_back(Owed::Reply(answer.into()));
                self.requeue_forget();
            }
            Step::Answer(reply) => self.owe_local(reply),
            Step::Close(reply) => {
                self.owe_local(reply);
                self.owed.push_back(Owed::Close);
                self.lifecycle = Lifecycle::Ending;
            }
            Step::Discard(reply) => self.discard(reply),
            Step::DiscardAndMove(reply, target) => {
                self.discard(reply);
                self.consume(head.len);
                // The requests behind EXEC wait until the session has moved.
                self.stall = Stall::HandingOver(target);
                return false;
            }
            Step::RequeueAndMove(target) => {
                // EXEC stays at the head: it follows its transaction,
                // queued again where the session moves.
                self.requeue_for_move();
                self.stall = Stall::HandingOver(target);
                return false;
            }
        }
        self.consume(head.len);
        true
    }

    /// The backend holds an open transaction: it is closed without being
    /// applied, and EXEC answered with `reply`.
    pub(super) fn discard(&mut self, reply: Bytes) {
        self.to_backend.extend_from_slice(DISCARD);
        self.owed.push_back(Owed::Reply(Expect::Replace(reply)));
        self.transaction = Transaction::None;
        self.watch = Watch::Off; // DISCARD unwatches on the node
    }

    /// The wait of a held request is over: ask again (or refuse), then go on
    /// with the requests behind it.
    pub(super) fn release(&mut self, outcome: Result<(), Bytes>) {
        let Stall::Held(held) = std::mem::replace(&mut self.stall, Stall::None) else {
            return;
        };
        // Only a confirmation verifies; a pause's end does not, nor a
        // refusal turned into a wait for a switch to be followed (the
        // write is asked about again unconfirmed: `Gate::wait`).
        let verified = match held.wait {
            Wait::Verification(ticket) => {
                outcome.is_ok() && self.gate.confirmation(ticket) == Some(Ok(()))
            }
            _ => false,
        };
        if verified {
            self.confirmed = held.arrived;
        }
        // The old place in the pause buffer is given up before asking again.
        drop(held.wait);
        let admitted = match outcome {
            Ok(()) => {
                let policy = self.gate.policy();
                self.admit(&policy, &mut LastLookup::default(), held.head, verified)
            }
            Err(reply) => self.carry_out(
                held.head,
                held.class,
                held.special,
                Verdict::Reply(reply),
                None,
            ),
        };
        if admitted {
            self.on_client_data();
        } else {
            self.settle();
        }
    }

    /// Inside an open transaction, queued commands are only queued: the Gate
    /// judges the transaction at EXEC (a write if a queued command was).
    /// Before the node has confirmed MULTI, writes are judged one by one.
    #[inline]
    pub(super) fn gated_class(&self, special: Special, class: Class) -> Class {
        match self.transaction {
            Transaction::None => class,
            t if special == Special::Exec => {
                if t.has_writes() {
                    Class::Write
                } else {
                    class
                }
            }
            t if t.is_open() && class == Class::Write => Class::Read,
            _ => class,
        }
    }

    /// A request on a replication connection: only a replica's `REPLCONF`
    /// (`ACK <offset>`) is forwarded, with nothing owed, as the node answers
    /// it with nothing. Anything else is refused there: the connection no
    /// longer goes through the Gate, so nothing else may pass (no write, no
    /// denied command, no control command).
    #[cold]
    fn replica_request(&mut self, head: RequestHead, special: Special) -> bool {
        self.forward_run();
        if special != Special::ReplConf {
            self.owe_local(Bytes::from_static(
                b"-ERR leasegate: a replication connection carries only REPLCONF\r\n",
            ));
        } else {
            self.to_backend
                .extend_from_slice(&self.from_client[..head.len]);
        }
        self.consume(head.len);
        true
    }

    /// Book-keeping for a request that goes to the backend as it came.
    #[inline(always)]
    pub(super) fn forwarded(
        &mut self,
        head: &RequestHead,
        class: Class,
        special: Special,
        write: Option<WriteTicket>,
    ) {
        if class == Class::Write {
            self.transaction = self.transaction.with_write();
        }
        if let Some(ticket) = write {
            self.blocking_out += u32::from(ticket.blocking);
            if special == Special::Exec {
                // An EXEC of queued writes: the transaction ends on the node.
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
            }
            self.owed.push_back(Owed::Reply(Expect::Write(ticket)));
            self.unreplicated = true;
            return;
        }
        if special == Special::None {
            self.owed.push_back(Owed::Reply(Expect::Plain));
            return;
        }
        // A read that blocks: `XREAD ... BLOCK`, `WAIT`.
        if matches!(special, Special::Blocking | Special::BlockingWithOption)
            && self.transaction.is_none()
            && is_blocking(special, head, &self.unhandled()[..head.len])
        {
            self.blocking_out += 1;
            self.owed.push_back(Owed::Reply(Expect::BlockingRead));
            return;
        }
        self.forwarded_special(head, special);
    }

    /// A read-only script's class: a write where the node may be Kvrocks
    /// (an attack pass: `EVAL_RO` calling `ZDIFFSTORE` wrote on a fenced
    /// Kvrocks, acknowledged), its own (a read) on Redis.
    #[cold]
    fn read_only_script_class(&self, class: Class) -> Class {
        if self.gate.role().node.may_be_kvrocks() {
            Class::Write
        } else {
            class
        }
    }
}

/// AUTH/HELLO carrying the control password make the connection the
/// controller's; the password is checked by the Gate and never forwarded.
/// Returns what to do instead, and whether the connection is now the
/// controller's.
#[inline]
pub(super) fn authenticate(
    gate: &Gate,
    special: Special,
    head: &RequestHead,
    bytes: &[u8],
) -> Option<(Verdict, bool)> {
    if !matches!(special, Special::Auth | Special::Hello) {
        return None;
    }
    gate.authenticate(special, head, bytes)
}
