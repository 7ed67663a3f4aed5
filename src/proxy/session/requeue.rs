//! A transaction whose `EXEC` meets a hand-over runs at the new master.
//!
//! A client's `MULTI` and the requests it queues go to the node the
//! session is on. When the node is demoted before `EXEC` (a failover
//! between the client's `MULTI` and its `EXEC`), the transaction is queued
//! on the old node, which must not run it. Discarding it and answering
//! `EXEC` null, as a WATCH conflict is answered, is correct, but clients
//! take it for an error: redis-py raises `WatchError` from a transaction
//! pipeline whether or not it watched (walkthrough 22).
//!
//! Nothing of a transaction runs before its `EXEC`, so the session queues
//! it again where it moves: the old node's transaction is discarded, the
//! session moves to the new master's leasegate (which judges it as any
//! transaction), `MULTI` and the queued requests go there again as the
//! client sent them, their answers (the client had them from the old
//! node) are dropped ([`super::mute::Mute::requeued`]), and `EXEC` follows:
//! its answer is the client's. A transaction is queued again only where
//! that is the same transaction:
//!
//! * no `WATCH` is on (it watched keys on the old node; `EXEC` stays null);
//! * every request was answered `+QUEUED` by the old node (one refused
//!   there made the client expect `EXECABORT`), also where the answer
//!   comes after `EXEC` was read (pipelined): the record taken for the
//!   move is then dropped, and `EXEC` answered null once moved;
//! * every request went out as the client sent it (none rewritten or
//!   answered by leasegate), within [`MAX_BYTES`];
//! * the client's reply mode is `ON`;
//! * the session moves to another leasegate (back home, its own Gate would
//!   have to judge requests it never admitted).
//!
//! Otherwise `EXEC` is answered null, as before. The record lives only
//! while a transaction is open, and is not carried across an upgrade (a
//! transaction open then fails at a later hand-over as before).

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{Expect, Owed, Transaction, Watch};
use super::Session;
use crate::command::Special;

/// The most bytes of one transaction kept to queue it again.
const MAX_BYTES: usize = 512 * 1024;

/// The open transaction's requests as sent, while it can be queued again.
#[derive(Debug, Default)]
pub(super) struct Requeue {
    /// `MULTI` and the requests queued after it; `None` when the
    /// transaction cannot be queued again (or none is open).
    record: Option<BytesMut>,
    /// How many requests `record` holds.
    requests: u32,
    /// Taken at `EXEC` for the move: queued again once the session is on
    /// its new connection.
    moving: Option<(Bytes, u32)>,
    /// A request of the transaction taken for the move was refused by the
    /// old node after its `EXEC` was read (a pipeline: the answers came
    /// after): it is not queued again, and `EXEC` is answered null.
    refused_late: bool,
}

impl Requeue {
    fn forget(&mut self) {
        self.record = None;
        self.requests = 0;
    }
}

impl Session {
    /// `MULTI` (its `len` bytes at the head of the unhandled requests) went
    /// out: a new record starts, unless a WATCH is on.
    pub(super) fn requeue_begin(&mut self, len: usize) {
        self.requeue.forget();
        if self.watch == Watch::Off {
            self.requeue.record = Some(BytesMut::from(&self.unhandled()[..len]));
            self.requeue.requests = 1;
        }
    }

    /// A request (`len` bytes at the head of `from_client`) went out as
    /// the client sent it: recorded while the transaction is open, its
    /// answer checked to be `+QUEUED` ([`Expect::Queued`]). The
    /// transaction's end forgets the record.
    pub(super) fn requeue_add(&mut self, len: usize, special: Special) {
        if special == Special::Multi || self.requeue.record.is_none() {
            return;
        }
        if !matches!(self.transaction, Transaction::Queued { .. }) {
            self.requeue.forget();
            return;
        }
        let fits = self
            .requeue
            .record
            .as_ref()
            .is_some_and(|r| r.len() + len <= MAX_BYTES);
        let plain = matches!(self.owed.back(), Some(Owed::Reply(Expect::Plain)));
        if !fits || !plain {
            self.requeue.forget();
            return;
        }
        if let Some(Owed::Reply(expect)) = self.owed.back_mut() {
            *expect = Expect::Queued;
        }
        let request = &self.from_client[..len];
        if let Some(record) = self.requeue.record.as_mut() {
            record.put_slice(request);
            self.requeue.requests += 1;
        }
    }

    /// A request of the transaction did not go out as the client sent it,
    /// or was not answered `+QUEUED`: the transaction cannot be queued
    /// again.
    pub(super) fn requeue_forget(&mut self) {
        self.requeue.forget();
        // Taken already: its client was told a request was refused, and
        // would see it run (an attack pass: `MULTI; INCR; RPUSH; EXEC`
        // pipelined to a demoted leasegate, both writes answered
        // `-READONLY` by the replica, then run at the new master).
        if self.requeue.moving.take().is_some() {
            self.requeue.refused_late = true;
        }
    }

    /// Whether the open transaction (its `EXEC` at the head) can be queued
    /// again at the new master.
    pub(super) fn requeue_possible(&self) -> bool {
        self.requeue.record.is_some()
            && self.watch == Watch::Off
            && self.mute.is_on()
            && matches!(self.transaction, Transaction::Queued { open: true, .. })
    }

    /// `EXEC` meets a hand-over ([`Session::requeue_possible`]): the old
    /// node's transaction is discarded (its `+OK` answers nothing) and the
    /// record kept for the move; `EXEC` stays at the head of the requests.
    pub(super) fn requeue_for_move(&mut self) {
        let requests = self.requeue.requests;
        if let Some(record) = self.requeue.record.take() {
            self.requeue.moving = Some((record.freeze(), requests));
        }
        self.requeue.forget();
        self.discard(Bytes::new());
    }

    /// The session moved: a transaction taken for the move goes in front
    /// of its `EXEC`, to be queued again there, its answers dropped (`away`:
    /// to another leasegate; otherwise, or when the move failed, it is
    /// dropped and `EXEC`, at the head, meets no transaction).
    pub(super) fn requeue_after_move(&mut self, away: bool) {
        if std::mem::take(&mut self.requeue.refused_late) && away {
            // As where the move was decided before any request was refused
            // ([`Session::in_transaction`]'s discard): null, nothing run.
            let null = self.null_reply();
            self.answer_held(crate::guard::gate::Verdict::Reply(null));
            return;
        }
        let Some((record, requests)) = self.requeue.moving.take() else {
            return;
        };
        if !away {
            return;
        }
        let mut requests_now = BytesMut::with_capacity(record.len() + self.from_client.len());
        requests_now.put_slice(&record);
        requests_now.put_slice(&self.from_client);
        self.from_client = requests_now;
        // The framer stopped at the head (`EXEC`, framed whole); what
        // arrived before a confirmation no longer starts there.
        self.requests.restart();
        self.confirmed = 0;
        self.mute.requeued(requests);
    }
}
