//! The poller's metrics: polls by outcome and their round-trip time, and
//! what each controller answered them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::kvrocks::controller_group::Heard;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `renewed`, `revoked`, `stale`, `fenced` (revoked at this version),
    /// `pending` (named master, its node not yet at that topology) or `error`.
    pub outcome: &'static str,
}

/// One controller of `controller.url`, and what it answered a poll.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// Its address as configured.
    pub controller: String,
    /// [`crate::kvrocks::controller_group::Heard::label`].
    pub answer: &'static str,
}

/// `leasegate_controller_polls_total{outcome}`,
/// `leasegate_controller_poll_duration_seconds` and
/// `leasegate_controller_answers_total{controller, answer}`.
#[derive(Debug)]
pub struct PollMetrics {
    pub polls: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
    pub answers: Family<MemberLabels, Counter>,
}

impl Default for PollMetrics {
    fn default() -> Self {
        Self {
            polls: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            answers: Family::default(),
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
        registry.register(
            "controller_answers",
            "What each controller of controller.url answered the polls: led (a topology, naming a raft leader), no_leader, error, late (no answer yet when the poll was decided: a majority had answered, or the timeout)",
            self.answers.clone(),
        );
    }

    pub(super) fn count(&self, outcome: &'static str) {
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts what the controller at `controller` answered a poll.
    pub(super) fn heard(&self, controller: &str, answer: Heard) {
        self.answers
            .get_or_create(&MemberLabels {
                controller: controller.to_string(),
                answer: answer.label(),
            })
            .inc();
    }
}
