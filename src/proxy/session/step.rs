//! How the session carries out the Gate's verdict ([`Step`]), in and out
//! of a transaction: inside MULTI a refused EXEC must still close the
//! node's transaction, a refused queued command fails the whole
//! transaction at EXEC as the node would, and a hand-over met by EXEC
//! queues the transaction again at the new master.

use bytes::Bytes;

use crate::command::Special;
use crate::guard::gate::{Answer, Effect, Verdict, Wait};

use super::handover::Move;
use super::state::Transaction;
use super::Session;

const EXECABORT_PREVIOUS_ERRORS: &[u8] =
    b"-EXECABORT Transaction discarded because of previous errors.\r\n";
/// [`Session::admit`] turns `ForwardUnconfirmed` into `Forward` with the
/// round in the write's ticket; should one ever reach `carry_out`, the
/// write is refused rather than forwarded without its confirmation.
const UNCARRIED: &[u8] =
    b"-ERR leasegate internal error: a write forwarded unconfirmed lost its confirmation round\r\n";
const CLIENT_REPLY_IN_TRANSACTION: &[u8] =
    b"-ERR Command not allowed inside a transaction (CLIENT REPLY would leave EXEC's reply malformed)\r\n";

impl Session {
    /// What a verdict means for a session inside MULTI: a refused EXEC must
    /// still close the backend's transaction, and a refused queued command
    /// makes the whole transaction fail at EXEC, as the node would.
    #[inline]
    pub(super) fn in_transaction(&mut self, special: Special, verdict: Verdict) -> Step {
        if self.transaction.is_none() {
            return match verdict {
                Verdict::Forward => Step::Forward,
                Verdict::ForwardUnconfirmed(_) => Step::Answer(Bytes::from_static(UNCARRIED)),
                Verdict::Observe(effect) => Step::Observe(effect),
                Verdict::Reply(reply) => Step::Answer(reply),
                Verdict::Close(reply) => Step::Close(reply),
                Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
                Verdict::Hold(wait) => Step::Hold(wait),
                Verdict::HandOver(addr) => Step::HandOver(Move::Away(addr)),
                Verdict::ReturnHome => Step::HandOver(Move::Home),
            };
        }
        let exec = special == Special::Exec;
        match verdict {
            // Closing ends the transaction with the connection.
            Verdict::Close(reply) => Step::Close(reply),
            // The transaction is queued on the old node: EXEC fails like a
            // WATCH conflict, and the session moves right after (a client
            // that sends only transactions would otherwise stay there for
            // good); other commands keep queueing where the transaction is.
            // (MULTI itself does not move the session: a transaction of
            // commands addressed to the node, as Sentinel's promotion
            // `MULTI; SLAVEOF NO ONE; ...; EXEC`, must reach this node.)
            Verdict::HandOver(addr) if exec && self.requeue_possible() => {
                Step::RequeueAndMove(Move::Away(addr))
            }
            Verdict::HandOver(addr) if exec => {
                Step::DiscardAndMove(self.null_reply(), Move::Away(addr))
            }
            Verdict::ReturnHome if exec => Step::DiscardAndMove(self.null_reply(), Move::Home),
            // Addressed to the node inside a transaction queued elsewhere:
            // it cannot reach the node there (Sentinel's promotion
            // `MULTI; SLAVEOF NO ONE; ...` would run at the new master).
            Verdict::ReturnHome if special.addresses_node() => {
                Step::Close(Bytes::from_static(crate::guard::gate::NODE_ELSEWHERE))
            }
            Verdict::HandOver(_) | Verdict::ReturnHome if self.transaction.is_open() => {
                Step::Forward
            }
            // MULTI is not confirmed yet: wait for the node's answer before
            // deciding (see `handover_ready`); forwarding could run the write.
            Verdict::HandOver(addr) => Step::HandOver(Move::Away(addr)),
            Verdict::ReturnHome => Step::HandOver(Move::Home),
            Verdict::Hold(wait) => Step::Hold(wait),
            Verdict::Rewrite {
                answer: Answer::ReplyMode(_),
                ..
            } => {
                // Redis and Kvrocks both answer such an EXEC with a
                // malformed reply (Valkey 9 refuses it): refused here, and
                // the transaction fails at EXEC as for any refused command.
                self.transaction = self.transaction.aborted();
                Step::Answer(Bytes::from_static(CLIENT_REPLY_IN_TRANSACTION))
            }
            Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
            Verdict::Reply(reply) if exec => Step::Discard(reply),
            Verdict::Reply(reply) => {
                self.transaction = self.transaction.aborted();
                Step::Answer(reply)
            }
            Verdict::Forward if exec && matches!(self.transaction, Transaction::Aborted { .. }) => {
                Step::Discard(Bytes::from_static(EXECABORT_PREVIOUS_ERRORS))
            }
            Verdict::Forward => Step::Forward,
            Verdict::ForwardUnconfirmed(_) => Step::Answer(Bytes::from_static(UNCARRIED)),
            Verdict::Observe(effect) => Step::Observe(effect),
        }
    }
}

/// How the session carries out a verdict.
pub(super) enum Step {
    /// The request's bytes go to the backend.
    Forward,
    /// The request's bytes go to the backend; the Gate applies the effect
    /// if the node accepts it.
    Observe(Effect),
    /// Nothing is forwarded; the client gets this reply in the request's place.
    Answer(Bytes),
    /// Nothing is forwarded; the client gets this reply, then the connection
    /// closes.
    Close(Bytes),
    /// EXEC is replaced by DISCARD; the client gets this reply in its place.
    Discard(Bytes),
    /// As `Discard`, then the session moves (before the requests behind).
    DiscardAndMove(Bytes, Move),
    /// EXEC meets a hand-over: the transaction is discarded on the old
    /// node and queued again where the session moves, EXEC after it
    /// ([`super::requeue`]).
    RequeueAndMove(Move),
    /// Other bytes are forwarded; the answer is made from the node's reply.
    Rewrite(Bytes, Answer),
    /// Nothing yet: the request stays at the head of the buffer.
    Hold(Wait),
    /// Move the session first.
    HandOver(Move),
}
