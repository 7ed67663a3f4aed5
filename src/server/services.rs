//! The services started beside the sessions: the admin API, the
//! controller poller or Sentinel, verification's drivers (one per session
//! thread), the node probe, command learning, and giving freed memory back.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{clients::listen_on, Server, ServerError};
use crate::control::upgrade::Inherited;
use crate::control::{admin, poll, probe, sentinel};
use crate::proxy::backend;
use crate::proxy::session;
use crate::proxy::workers::Workers;

impl Server {
    /// Idle sessions drop their buffers ([`session::trim`]); glibc keeps
    /// freed memory inside its heaps until asked, so every few seconds in
    /// which a session did so, leasegate asks it to return what is free.
    pub(super) fn start_memory_return(&self) {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MEMORY_RETURN_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                if session::trim::take_trimmed() {
                    let _ = tokio::task::spawn_blocking(return_free_memory).await;
                }
            }
        });
    }

    /// Starts the node probe (`lease.probe_interval_ms`; with 0 it idles
    /// until a reload sets an interval).
    pub(super) fn start_probe(&self) {
        let shared = Arc::clone(&self.shared);
        supervise("node probe", self.shutdown.clone(), move || {
            probe::run(Arc::clone(&shared))
        });
    }

    /// Waits for the probe's first look at the node, bounded by two of its
    /// timeouts: what the node is (Kvrocks or Redis) decides how a session
    /// mutes replies under `CLIENT REPLY` and tells RESP3 pub/sub messages
    /// from replies, and a client served before the answer would be
    /// treated as on Redis (a reply owed to it dropped). Clients that
    /// connect meanwhile wait in the listener's backlog. A successor
    /// (`--take-over`) has it from its predecessor; with the probe off,
    /// Redis is assumed, as documented.
    pub(super) async fn first_look_at_the_node(&self) {
        let config = self.shared.config.load();
        let interval = config.lease.probe_interval;
        if interval.is_zero() {
            return;
        }
        let bound = interval.min(config.connect_timeout()) * 2 + Duration::from_millis(50);
        if !happened_within(bound, self.shared.role.node.first_look()).await {
            warn!(
                waited_ms = bound.as_millis() as u64,
                "the node probe has not said what the node is; serving clients as on Redis until it does"
            );
        }
    }

    /// With a controller to poll, waits for the poll's first answer (or
    /// failure), bounded by `controller.timeout_ms`: a leasegate restarted
    /// outside an upgrade answered its first writes `-READONLY master lease
    /// expired` (the cold start's lease) for about one poll, a replica's
    /// leasegate too, which hands them to the master once the poll has
    /// named it. Clients that connect meanwhile wait in the backlog.
    pub(super) async fn first_word_of_the_controller(&self) {
        let config = self.shared.config.load();
        if config.controller.url.is_none() {
            return;
        }
        let bound = config.controller.timeout + Duration::from_millis(50);
        if !happened_within(bound, self.shared.role.first_poll.wait()).await {
            warn!(
                waited_ms = bound.as_millis() as u64,
                "the controller's first poll is not answered yet; serving clients with the lease as it starts"
            );
        }
    }

    /// Starts the admin API and the controller poller.
    pub(super) async fn start_services(
        &self,
        inherited: Option<&mut Inherited>,
    ) -> Result<(), ServerError> {
        let admin = &self.config.admin.listen;
        if !admin.is_empty() {
            let bind_error = |source| ServerError::AdminBind {
                addr: admin.clone(),
                source,
            };
            let listener = match inherited.and_then(|i| i.listener("admin", admin)) {
                Some(l) => listen_on(l).map_err(bind_error)?,
                None => TcpListener::bind(admin).await.map_err(bind_error)?,
            };
            self.handoff.offer("admin", &listener);
            tokio::spawn(admin::serve(listener, Arc::clone(&self.shared)));
        }
        // Not restarted ([`supervise`]): the polls start tasks of their
        // own (fences, announcements) that a restart would start again
        // beside the first ones, and the `FAILOVER` runner's state would
        // stay "in progress" (a review). A panic there ends the process.
        if self.config.controller.url.is_some() {
            exit_on_panic("controller poll", poll::poll(Arc::clone(&self.shared)));
        }
        if self.config.sentinel.enabled() {
            exit_on_panic("Sentinel poll", sentinel::run(Arc::clone(&self.shared)));
        }
        exit_on_panic(
            "FAILOVER command",
            crate::control::failover_command::serve(Arc::clone(&self.shared)),
        );
        Ok(())
    }

    /// Starts verification's drivers, each on its session thread (see
    /// [`crate::guard::verify`]), when there is a controller to ask.
    pub(super) fn start_verification(&self, workers: &Workers) {
        let (Some(verifier), Some(url)) = (self.gate.verifier(), &self.config.controller.url)
        else {
            return;
        };
        let c = &self.config.controller;
        let urls: Arc<[String]> =
            crate::kvrocks::controller::cluster_urls(url.as_slice(), &c.namespace, &c.cluster)
                .into();
        for driver in 0..verifier.drivers() {
            workers.spawn_on(
                driver,
                Arc::clone(verifier).run_driver(
                    driver,
                    Arc::clone(self.gate.role()),
                    (Arc::clone(&urls), Arc::clone(&self.shared.controller_tls)),
                    self.verification_stop.clone(),
                ),
            );
        }
    }

    /// Learns command flags from the node, retrying in the background until
    /// it answers (with the running `backend.password` of each attempt).
    pub(super) fn start_learning(&self) {
        // Taken over with what the predecessor learned: the node is not
        // asked to build its `COMMAND` reply again while clients wait.
        if !self.config.commands.learn_from_backend || !self.shared.learned().is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let addr = self.config.backend.addr.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let config = shared.config.load_full();
                match backend::learn_commands(
                    &addr,
                    shared.node_tls().as_deref(),
                    config.backend.login().as_ref(),
                    config.connect_timeout(),
                )
                .await
                {
                    Ok(commands) => {
                        info!(
                            commands = commands.len(),
                            "learned command flags from the backend"
                        );
                        shared.learned_commands(commands);
                        return;
                    }
                    Err(e) => warn!(
                        error = %e,
                        "cannot learn command flags from the backend; using the built-in table, retrying"
                    ),
                }
                tokio::select! {
                    _ = tokio::time::sleep(LEARN_RETRY) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// How long a task that panicked waits before [`supervise`] starts it again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Runs the task `make` builds until it returns or `shutdown`; one that
/// panics is logged and started again after [`RESTART_AFTER`]: one bug met
/// by one input then costs a restart of that task, not its work for good.
/// Only for a task that starts no task of its own and keeps no state
/// elsewhere (the node probe): a restart would leave those behind.
pub(super) fn supervise<F, Fut>(name: &'static str, shutdown: CancellationToken, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Err(e) if e.is_panic() => {
                    error!(
                        task = name,
                        "a task panicked (its message is above); starting it again"
                    );
                }
                _ => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(RESTART_AFTER) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// Runs `task`; if it panics, the process exits (status 70) for its
/// supervisor to start it again: left stopped, a poll renews no lease and
/// writes stay fenced until someone restarts leasegate by hand (a review).
/// Clients reconnect, as at any restart; nothing acknowledged is lost.
fn exit_on_panic<Fut>(name: &'static str, task: Fut)
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = tokio::spawn(task).await {
            if e.is_panic() {
                error!(task = name, "a task panicked (its message is above): leasegate exits for its supervisor to start it again");
                std::process::exit(70);
            }
        }
    });
}

/// How often [`Server::start_memory_return`] looks.
const MEMORY_RETURN_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Returns the allocator's free memory to the system (glibc: every arena).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() {}

/// How often command learning is retried while the node is unreachable.
const LEARN_RETRY: Duration = Duration::from_secs(5);

/// Whether `event` resolved within `bound` (the start-up waits before
/// clients are admitted).
async fn happened_within(bound: Duration, event: impl std::future::Future<Output = ()>) -> bool {
    tokio::time::timeout(bound, event).await.is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A task that panics is started again; one that returns is not.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_task_that_panics_is_started_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervise("test", CancellationToken::new(), move || {
            let counted = Arc::clone(&counted);
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug met by one input");
                }
            }
        });
        tokio::time::sleep(RESTART_AFTER * 5).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "twice panicked, then returned"
        );
    }
}
