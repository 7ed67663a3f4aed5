//! The poller's metrics: polls by outcome and their round-trip time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `renewed`, `revoked`, `stale`, `fenced` (revoked at this version),
    /// `pending` (named master, its node not yet at that topology) or `error`.
    pub outcome: &'static str,
}

/// `leasegate_controller_polls_total{outcome}` and
/// `leasegate_controller_poll_duration_seconds`.
#[derive(Debug)]
pub struct PollMetrics {
    pub polls: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
}

impl Default for PollMetrics {
    fn default() -> Self {
        Self {
            polls: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        }
    }
}

impl PollMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_polls",
            "Controller polls by outcome (renewed, revoked, stale, fenced, pending, error)",
            self.polls.clone(),
        );
        registry.register(
            "controller_poll_duration_seconds",
            "Round-trip time of a controller poll, redirects included",
            self.duration.clone(),
        );
    }

    pub(super) fn count(&self, outcome: &'static str) {
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
