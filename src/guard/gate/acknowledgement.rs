//! A write's reply, checked before its client sees it: a success reaches
//! the client only if the lease held without a break from the write's
//! admission to the reply ([`Gate::acknowledgement`]), and a write
//! forwarded unconfirmed (`verify.hold: acknowledgement`) only once its
//! confirmation round passed ([`Gate::unconfirmed_reply`]). Otherwise the
//! client gets [`UNKNOWN_OUTCOME`]: the node may have applied the write,
//! but not under the lease.

use bytes::Bytes;
use tracing::warn;

use super::{Gate, UNCONFIRMED_HEAD, UNKNOWN_OUTCOME};
use crate::guard::lease::{LeaseMode, Term};
use crate::guard::verify::Ticket;

impl Gate {
    /// The confirmation of a write forwarded unconfirmed: `None` while
    /// pending, then its round's outcome ([`crate::guard::verify::Verifier::confirmation`]).
    /// Only a verifier hands out rounds, so without one there is nothing to
    /// wait for.
    #[inline]
    pub fn confirmation(&self, ticket: Ticket) -> Option<Result<(), Bytes>> {
        match &self.verifier {
            Some(v) => v.confirmation(ticket),
            None => Some(Ok(())),
        }
    }

    /// The reply to a write forwarded unconfirmed, once its confirmation is
    /// settled: `None` passes `reply`; `Some(instead)` replaces it. After a
    /// refusal, only a reply that says nothing took effect (an error,
    /// `+QUEUED`, an aborted EXEC) passes; a success becomes the
    /// unknown-outcome error with the refusal's cause, because the node may
    /// have applied a write the controller did not confirm.
    #[cold]
    pub fn unconfirmed_reply(&self, refusal: &[u8], reply: &[u8]) -> Option<Bytes> {
        if !is_acknowledgement(reply) {
            return None;
        }
        self.metrics.unknown_outcomes.inc();
        let cause = refusal.strip_prefix(b"-TRYAGAIN ").unwrap_or(refusal);
        let cause = cause.strip_suffix(b"\r\n").unwrap_or(cause);
        Some(Bytes::from(format!(
            "{UNCONFIRMED_HEAD}{}; the write may or may not have been applied\r\n",
            String::from_utf8_lossy(cause)
        )))
    }

    /// The term a write is admitted in, when its acknowledgement will be
    /// checked (`None` with `lease.mode: disabled`).
    #[inline]
    pub fn write_term(&self) -> Option<Term> {
        (self.lease.mode() != LeaseMode::Disabled).then(|| self.lease.term())
    }

    /// Checks the reply to a write admitted in `term`: `None` passes it,
    /// `Some(reply)` replaces it. Errors and `+QUEUED` pass (nothing was
    /// acknowledged); a success after the lease ended or was revoked is
    /// replaced by [`UNKNOWN_OUTCOME`] in block-write, counted in log-only.
    #[inline]
    pub fn acknowledgement(&self, term: Term, reply: &[u8]) -> Option<&'static [u8]> {
        if self.lease.acknowledgeable(term) || !is_acknowledgement(reply) {
            return None;
        }
        self.late_acknowledgement()
    }

    #[cold]
    fn late_acknowledgement(&self) -> Option<&'static [u8]> {
        if self.lease.mode() != LeaseMode::BlockWrite {
            self.metrics.late_acknowledgements_log_only.inc();
            return None;
        }
        self.metrics.unknown_outcomes.inc();
        if self.last_unknown_outcome_warning.due(self.lease.now()) {
            warn!(
                unknown_outcomes = self.metrics.unknown_outcomes.get(),
                "the node acknowledged a write after the master lease ended; the client gets an unknown-outcome error instead"
            );
        }
        Some(UNKNOWN_OUTCOME)
    }
}

/// Whether a reply may say that a write took effect: anything but an error,
/// `+QUEUED` (not applied yet) or RESP2's null array (an EXEC aborted by
/// WATCH, a blocking pop that timed out: nothing applied). Other nulls count
/// as acknowledgements: `SET k v GET` answers a null bulk after applying.
#[inline]
fn is_acknowledgement(reply: &[u8]) -> bool {
    !matches!(reply, [b'-' | b'!', ..] | b"+QUEUED\r\n" | b"*-1\r\n")
}
