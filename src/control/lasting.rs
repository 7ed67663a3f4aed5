//! A condition worth a warning only when it lasts: the poller sees some
//! states for a moment in normal operation (the old master of a planned
//! failover is fenced at the topology version that still names it, until
//! the controller switches), and the same states for good after a mistake
//! (a hand-sent heartbeat naming another node). [`Lasting`] tells the two
//! apart by time, and says so once per topology version.

use std::time::{Duration, Instant};

/// Tracks one condition, seen at a topology version, poll after poll.
#[derive(Debug)]
pub struct Lasting {
    /// How long the condition must last at one version to be reported.
    after: Duration,
    /// The version it was seen at, since when, and whether reported.
    seen: Option<(u64, Instant, bool)>,
}

/// What to make of one sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// The first at this version, or not long enough yet.
    Brief,
    /// It lasted: report it now (once per version).
    Lasted(Duration),
    /// Reported already at this version.
    Reported,
}

impl Lasting {
    pub fn new(after: Duration) -> Lasting {
        Lasting { after, seen: None }
    }

    /// The condition holds at `version` now.
    pub fn seen(&mut self, version: u64, now: Instant) -> Sighting {
        match &mut self.seen {
            Some((v, since, reported)) if *v == version => {
                if *reported {
                    Sighting::Reported
                } else if now.saturating_duration_since(*since) >= self.after {
                    *reported = true;
                    Sighting::Lasted(now.saturating_duration_since(*since))
                } else {
                    Sighting::Brief
                }
            }
            _ => {
                self.seen = Some((version, now, false));
                Sighting::Brief
            }
        }
    }

    /// The condition ended: a later sighting starts anew.
    pub fn ended(&mut self) {
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_once_when_it_lasts_at_one_version() {
        let t0 = Instant::now();
        let mut l = Lasting::new(Duration::from_secs(5));
        assert_eq!(l.seen(7, t0), Sighting::Brief);
        assert_eq!(l.seen(7, t0 + Duration::from_secs(4)), Sighting::Brief);
        assert_eq!(
            l.seen(7, t0 + Duration::from_secs(5)),
            Sighting::Lasted(Duration::from_secs(5))
        );
        assert_eq!(l.seen(7, t0 + Duration::from_secs(9)), Sighting::Reported);
        // A new version starts its own count.
        assert_eq!(l.seen(8, t0 + Duration::from_secs(9)), Sighting::Brief);
    }

    #[test]
    fn a_brief_condition_is_never_reported() {
        let t0 = Instant::now();
        let mut l = Lasting::new(Duration::from_secs(5));
        assert_eq!(l.seen(7, t0), Sighting::Brief);
        l.ended();
        assert_eq!(l.seen(7, t0 + Duration::from_secs(6)), Sighting::Brief);
    }
}
