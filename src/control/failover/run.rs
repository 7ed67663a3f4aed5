//! A failover as it runs: what it needs of the config ([`Settings`]), the
//! guard that cleans up however it ends ([`RunGuard`]), and its record
//! ([`Run`]): steps, pause and release times, the promotion and its timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::{cluster, promotion, timing, FailoverError};
use crate::guard::gate::Gate;
use crate::kvrocks::admin_api::{FailoverRequest, FailoverState, Step};

/// What the failover needs of this proxy's config.
pub(super) struct Settings {
    /// The controller's API (`controller.url`, namespace, cluster), which a
    /// cluster-mode failover goes through.
    pub(super) controller: Option<cluster::Controller>,
    /// This node (`backend.addr`).
    pub(super) node: String,
    /// The login of leasegate's connections to the nodes (`backend.user`,
    /// `backend.password`): this one and the target's.
    pub(super) login: Option<crate::resp::login::Login>,
    /// The CAs the target's `https://` admin API is trusted with.
    pub(super) admin_ca: Option<Arc<rustls::ClientConfig>>,
    /// TLS to the nodes (`backend.tls`): this one and the target's.
    pub(super) node_tls: Option<Arc<crate::proxy::backend::NodeTls>>,
    /// Bound of every request to a node.
    pub(super) timeout: Duration,
    /// This proxy's admin token (the default for the target's).
    pub(super) admin_token: Option<String>,
    /// This proxy's client address (`listen`), where a replica re-attaches.
    pub(super) listen: String,
    /// What recent standalone failovers took from the pause to the promotion.
    pub(super) memory: Arc<timing::Memory>,
}

/// Owned by a running failover: however the run ends (returns, panics, or
/// its task is dropped), it ends the pause it started, withdraws the
/// hand-over target, reports `failed` unless the run reported its end, and
/// frees the next failover.
pub(super) struct RunGuard {
    pub(super) gate: Arc<Gate>,
    /// The failover's pause is on (it has not been ended by the run).
    pub(super) paused: bool,
}

impl RunGuard {
    /// `None` while another failover runs.
    pub(super) fn acquire(gate: &Arc<Gate>) -> Option<RunGuard> {
        if !gate.role().failover.try_start() {
            return None;
        }
        gate.role().failover.set(FailoverState::Started);
        Some(RunGuard {
            gate: Arc::clone(gate),
            paused: false,
        })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        // The lease and the demotion are left as the run left them: a run
        // that stops half-way leaves this node fenced, never unfenced.
        if self.paused {
            self.gate.pause().unpause();
        }
        self.gate.role().prepare_handover(None);
        let status = &self.gate.role().failover;
        if !status.state().is_final() {
            error!(
                state = status.state().as_str(),
                lease_valid = self.gate.lease().write_allowed(),
                "the failover stopped without finishing; it is reported failed"
            );
            status.set(FailoverState::Failed);
        }
        status.finished();
    }
}

pub(super) struct Run {
    pub(super) gate: Arc<Gate>,
    pub(super) guard: RunGuard,
    pub(super) settings: Settings,
    pub(super) request: FailoverRequest,
    pub(super) started: Instant,
    pub(super) steps: Vec<Step>,
    /// When writes were paused and released, in ms since the start.
    pub(super) paused_at: Option<f64>,
    pub(super) released_at: Option<f64>,
    /// The run ended with both nodes fenced.
    pub(super) both_fenced: bool,
    /// The promotion's timing, and what the promotion took.
    pub(super) timing: Option<promotion::Timing>,
    /// When the promotion was sent, and how long it took.
    pub(super) promotion: Option<(Instant, Duration)>,
    /// The pause, as an instant (the work before the promotion counts from it).
    pub(super) paused: Option<Instant>,
    /// The longest stall of pauses ended to be tried again, in ms.
    pub(super) earlier_stall: f64,
    /// When the replica was last found caught up (cluster mode measures the
    /// switch from it).
    pub(super) caught_up: Option<Instant>,
    /// Cluster mode, timed: the controller switched the shard before the
    /// pause (`cluster::switch_first`).
    pub(super) switched_first: bool,
    /// Cluster mode: how long after the pause ended the new master's lease
    /// came, where it came late (`cluster::finish`).
    pub(super) lease_late_ms: Option<f64>,
}

impl Run {
    pub(super) fn enter(&mut self, state: FailoverState) {
        self.gate.role().failover.set(state);
        let at_ms = self.now_ms();
        info!(state = state.as_str(), at_ms, "failover");
        self.steps.push(Step { state, at_ms });
    }

    pub(super) fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// How long writes were held: from the pause to its release (the
    /// longest, where a pause was tried again).
    pub(super) fn stall(&self) -> Option<f64> {
        Some((self.released_at? - self.paused_at?).max(self.earlier_stall))
    }

    /// Ends a pause that is to be tried again: the stall it caused counts
    /// towards the report's longest.
    pub(super) fn release_for_retry(&mut self) {
        self.release();
        if let Some(stall) = self.stall() {
            self.earlier_stall = self.earlier_stall.max(stall);
        }
    }

    /// Ends the failover's pause (held requests are asked about again).
    pub(super) fn release(&mut self) {
        if self.guard.paused {
            self.gate.pause().unpause();
            self.guard.paused = false;
            self.released_at = Some(self.now_ms());
        }
    }

    /// Runs `promotion`, the command that makes the target master, timed
    /// and (where the timing applies) with the replica's link poked at its
    /// tick.
    pub(super) async fn promote<T>(
        &mut self,
        promotion: impl std::future::Future<Output = T>,
    ) -> T {
        let sent = Instant::now();
        let done = match self.timing.as_ref() {
            Some(timing) => timing.promote(promotion).await,
            None => promotion.await,
        };
        self.promotion = Some((sent, sent.elapsed()));
        done
    }

    /// What the report says of the promotion.
    pub(super) fn promotion_report(
        &self,
    ) -> (Option<f64>, Option<crate::kvrocks::admin_api::TimingReport>) {
        (
            self.promotion.map(|(_, d)| d.as_secs_f64() * 1000.0),
            self.timing.as_ref().map(|t| t.report(self.promotion)),
        )
    }

    /// Fails with this node unfenced (nothing changed, or rolled back): the
    /// pause ends and the held writes go to this node.
    pub(super) fn abort<T>(&mut self, error: FailoverError) -> Result<T, FailoverError> {
        self.release();
        Err(error)
    }

    /// Fails with both nodes fenced: this node stays revoked and demoted,
    /// so the held writes released now are not applied to it.
    pub(super) fn both_fenced<T>(&mut self, error: FailoverError) -> Result<T, FailoverError> {
        self.both_fenced = true;
        self.release();
        Err(error)
    }
}

/// What check_slave learned about the target.
pub(super) struct Target {
    pub(super) node_id: String,
    /// The target node (`host:port`).
    pub(super) node: String,
    /// The target leasegate's client address.
    pub(super) proxy: String,
}
