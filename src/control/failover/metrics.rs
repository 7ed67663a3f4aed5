//! The failover's metrics, next to what they measure: how many ran and
//! how they ended, how long they took, how long writes were held, and what
//! the promotion timing did.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::guard::gate::Gate;
use crate::kvrocks::admin_api::{FailoverReport, FailoverState, TimingOutcome};

const SUCCESS: &str = "success";
const FAILED: &str = "failed";
const REFUSED: &str = "refused";

/// A run's `result` label: a failure before writes were paused (a wrong
/// target, a replica behind, namespaces that differ: a refusal, nothing
/// held) is `refused`, not `failed`, so the alert on failed failovers is
/// not set off by a mistyped command (an operator walkthrough).
fn result_of(report: &FailoverReport) -> &'static str {
    let paused = report
        .steps
        .iter()
        .any(|s| s.state == FailoverState::PauseWrite);
    match report.result {
        FailoverState::Success => SUCCESS,
        _ if paused => FAILED,
        _ => REFUSED,
    }
}

/// `leasegate_failovers_total{result}`, `leasegate_failover_duration_seconds`
/// and `leasegate_failover_stall_seconds` (how long writes were held).
pub struct FailoverMetrics {
    runs: Family<Vec<(String, String)>, Counter>,
    /// `leasegate_failover_state{state}`: 1 for the current state.
    state: Family<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>,
    duration: Histogram,
    stall: Histogram,
    /// `leasegate_failover_promotion_seconds`: the promotion's own time.
    promotion: Histogram,
    /// `leasegate_failover_promotion_timing_total{outcome}`.
    timing: Family<Vec<(String, String)>, Counter>,
}

impl Default for FailoverMetrics {
    fn default() -> Self {
        // 1 ms to 16 s.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        FailoverMetrics {
            runs: Family::default(),
            state: Family::default(),
            duration: buckets(),
            stall: buckets(),
            promotion: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            timing: Family::default(),
        }
    }
}

impl FailoverMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // Every result exists from the start (at 0), so a rule's
        // `increase(...)` sees the first failure.
        for result in [SUCCESS, FAILED, REFUSED] {
            let _ = self
                .runs
                .get_or_create(&vec![("result".to_string(), result.to_string())]);
        }
        registry.register(
            "failover_state",
            "The graceful failover's state (Kvrocks' cluster_failover_state): 1 for the current one",
            self.state.clone(),
        );
        registry.register(
            "failovers",
            "Graceful failovers run from this leasegate, by result: success; failed (after writes were paused); refused (before: nothing was paused)",
            self.runs.clone(),
        );
        registry.register(
            "failover_duration_seconds",
            "Graceful failover run time, start to end",
            self.duration.clone(),
        );
        registry.register(
            "failover_stall_seconds",
            "How long a graceful failover held writes",
            self.stall.clone(),
        );
        for outcome in TimingOutcome::ALL {
            let _ = self
                .timing
                .get_or_create(&vec![("outcome".to_string(), outcome.as_str().to_string())]);
        }
        registry.register(
            "failover_promotion_seconds",
            "How long a failover's promotion took (the command that makes the target master, to its answer)",
            self.promotion.clone(),
        );
        registry.register(
            "failover_promotion_timing",
            "Failovers by what their promotion timing did: held (promoted at the planned tick), missed (a later tick), unused",
            self.timing.clone(),
        );
    }

    /// Sets the state gauge from `gate` (at each scrape).
    pub fn refresh(&self, gate: &Gate) {
        let now = gate.role().failover.state();
        for state in FailoverState::ALL {
            self.state
                .get_or_create(&vec![("state".to_string(), state.as_str().to_string())])
                .set(i64::from(state == now));
        }
    }

    pub(super) fn record(&self, report: &FailoverReport, took: Duration) {
        self.runs
            .get_or_create(&vec![("result".to_string(), result_of(report).to_string())])
            .inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(ms) = report.stall_ms {
            self.stall.observe(ms / 1000.0);
        }
        if let Some(ms) = report.promotion_ms {
            self.promotion.observe(ms / 1000.0);
        }
        if let Some(timing) = &report.timing {
            self.timing
                .get_or_create(&vec![(
                    "outcome".to_string(),
                    timing.outcome.as_str().to_string(),
                )])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvrocks::admin_api::Step;

    fn report(result: FailoverState, states: &[FailoverState]) -> FailoverReport {
        let mut report = FailoverReport::failed("");
        report.result = result;
        report.steps = states
            .iter()
            .map(|&state| Step { state, at_ms: 0.0 })
            .collect();
        report
    }

    #[test]
    fn a_failure_before_the_pause_is_a_refusal() {
        use FailoverState::*;
        let refused = report(Failed, &[Started, CheckSlave, Failed]);
        assert_eq!(result_of(&refused), "refused");
        let failed = report(Failed, &[Started, CheckSlave, PauseWrite, WaitSync, Failed]);
        assert_eq!(result_of(&failed), "failed");
        let done = report(
            Success,
            &[Started, CheckSlave, PauseWrite, Switching, Success],
        );
        assert_eq!(result_of(&done), "success");
    }
}
