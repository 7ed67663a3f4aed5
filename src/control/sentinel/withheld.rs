//! Polls of the Sentinels that renewed nothing (the `withheld` outcome):
//! counted, and worth a warning only when it lasts. Right after every
//! failover the Sentinels flag the master they just named disconnected
//! for a poll or three, while they connect to it: 45 of the 53 warnings in
//! a full test run were that, one or two per failover, on leases that
//! then came a moment later. A node that stays silent, or Sentinels that
//! stay unsure, are warned of after [`WARN_AFTER`], before the lease
//! (`sentinel.max_lease_ms`) runs out.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::control::ControlContext;

/// How long polls may renew nothing before it is worth a warning.
pub(super) const WARN_AFTER: Duration = Duration::from_secs(1);
/// Once warned of, polls that renew nothing are logged every this many.
const LOG_EVERY: u64 = 50;

/// Polls in a row that renewed nothing, and since when.
#[derive(Debug, Default)]
pub(super) struct Withheld {
    polls: u64,
    since: Option<Instant>,
    warned: bool,
}

impl Withheld {
    /// A poll renewed nothing, for `why`.
    pub(super) fn poll(&mut self, ctx: &ControlContext, why: &str) {
        ctx.metrics.sentinel.count("withheld");
        self.note(why, Instant::now());
    }

    fn note(&mut self, why: &str, now: Instant) {
        self.polls += 1;
        let lasted = now.saturating_duration_since(*self.since.get_or_insert(now));
        let due = if self.warned {
            self.polls % LOG_EVERY == 0
        } else {
            lasted >= WARN_AFTER
        };
        if due {
            self.warned = true;
            warn!(
                polls = self.polls,
                lasted_ms = lasted.as_millis() as u64,
                why,
                "the Sentinels do not vouch for this node; the lease is not renewed"
            );
        } else {
            debug!(polls = self.polls, why, "this poll renews no lease");
        }
    }

    /// The Sentinels vouch for this node again.
    pub(super) fn vouched(&mut self) {
        if self.warned {
            info!(
                polls = self.polls,
                "the Sentinels vouch for this node again"
            );
        }
        *self = Withheld::default();
    }

    /// They name another master: the count starts anew.
    pub(super) fn reset(&mut self) {
        *self = Withheld::default();
    }

    /// Whether the polls so far were warned of.
    #[cfg(test)]
    fn warned(&self) -> bool {
        self.warned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brief_withholding_is_not_warned_of_a_lasting_one_is() {
        let t0 = Instant::now();
        let mut w = Withheld::default();
        w.note("x", t0);
        w.note("x", t0 + Duration::from_millis(300));
        assert!(!w.warned(), "a failover's moment");
        w.vouched();
        w.note("x", t0 + Duration::from_secs(2));
        assert!(!w.warned(), "counted anew after the Sentinels vouched");
        w.note("x", t0 + Duration::from_secs(3));
        assert!(w.warned(), "lasted a second");
    }
}
