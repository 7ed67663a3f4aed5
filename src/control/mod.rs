//! The control plane, beside the data plane: the admin HTTP API
//! ([`admin`]), pull renewal from the controller ([`poll`]), graceful
//! failover ([`failover`]), the node probe ([`probe`]), live [`reload`] of
//! the config, and the hand-over to a successor process at an
//! [`upgrade`]. It changes what the guard knows (through
//! [`crate::guard::role::Role`]); it never touches a session's state (an
//! upgrade carries sessions, taken out by the data plane, from one process
//! to the other).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::command::{CommandTable, LearnedCommand};
use crate::config::{Config, VerifyMode};
use crate::guard::control::ControlPolicy;
use crate::guard::gate::{Gate, GateParts, Policy};
use crate::guard::lease::{Clock, Lease, LeaseMetrics, LeaseTuning};
use crate::guard::pause::Pause;
use crate::guard::role::Role;
use crate::guard::verify::Verifier;

pub mod admin;
pub mod failover;
pub mod failover_command;
pub mod fence;
pub mod lasting;
pub mod own_node;
pub mod poll;
pub mod probe;
pub mod reload;
pub mod sentinel;
pub mod step_down_fence;
pub mod switch;
pub mod upgrade;

/// The control plane's own metrics and the listener's.
#[derive(Default)]
pub struct ControlMetrics {
    /// `leasegate_admin_requests_total{route, status}`.
    pub admin: Arc<admin::AdminMetrics>,
    /// `leasegate_controller_polls_total{outcome}` and the poll duration.
    pub poll: poll::PollMetrics,
    /// `leasegate_client_connections`.
    pub sessions: Gauge,
    /// The data plane's counters (node connect errors, hand-overs, backpressure).
    pub proxy: Arc<crate::proxy::metrics::ProxyMetrics>,
    /// `leasegate_lease_valid`, `_remaining_seconds`, `_epoch`, refreshed
    /// at each scrape.
    pub lease: LeaseMetrics,
    /// `leasegate_failovers_total{result}`, durations and stalls.
    pub failover: Arc<failover::FailoverMetrics>,
    /// `leasegate_config_reloads_total{result}`.
    pub reload: reload::ReloadMetrics,
    /// `leasegate_sentinel_polls_total{outcome}`.
    pub sentinel: sentinel::SentinelMetrics,
}

/// What the server does on a reload beyond the control plane (the log
/// level, new sessions' limits): called with the old and the new running config.
pub type OnReload = Box<dyn Fn(&Config, &Config) + Send + Sync>;

/// What the control plane's parts share.
pub struct ControlContext {
    /// The running config: the file as last (re)loaded, with the settings
    /// that need a restart as the process started with them. Read it per
    /// use (`config.load()`); a [`reload`] swaps it.
    pub config: ArcSwap<Config>,
    /// The file a reload re-reads; `None` and reloads fail.
    pub config_path: Option<PathBuf>,
    /// Bumped after every successful reload: background tasks (the poller,
    /// the probe) re-read the config.
    pub reloaded: watch::Sender<u64>,
    /// The server's part of a reload, set once at start.
    pub on_reload: OnceLock<OnReload>,
    /// What the node said about its commands (empty until learned).
    learned: Mutex<Arc<Vec<LearnedCommand>>>,
    /// One reload at a time (SIGHUP and `POST /v1/reload` may race).
    reloading: Mutex<()>,
    /// The data plane's decision point (its policy, pause and verifier).
    pub gate: Arc<Gate>,
    /// The node's role: every grant and revocation goes through it.
    pub role: Arc<Role>,
    /// Prometheus metrics, prefixed `leasegate_`: every metric is registered
    /// here once, at start-up; the admin API only encodes it.
    pub registry: Registry,
    pub metrics: ControlMetrics,
    pub shutdown: CancellationToken,
    /// What this leasegate's failovers took from the pause to the
    /// promotion: the next one times its pause with it.
    pub promotion_memory: Arc<failover::timing::Memory>,
    /// Times the controller's `CLIENT PAUSE` (`pause.promotion_timing`).
    pub controller_pause: Arc<failover::controller_pause::ControllerPause>,
    /// The TLS client listener's settings, certificates included (`None`:
    /// no `tls.listen`); read again from the files at every reload.
    pub client_tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// How the node is reached over TLS (`backend.tls`; `None`: plain);
    /// read again from the files at every reload.
    pub node_tls: Arc<arc_swap::ArcSwapOption<crate::proxy::backend::NodeTls>>,
    /// How a TLS client's session reaches another leasegate at a
    /// hand-over (`tls.handover`; `None`: plaintext); read again from the
    /// files at every reload.
    pub peer_tls: Arc<arc_swap::ArcSwapOption<crate::proxy::backend::PeerTls>>,
    /// How an `https://` controller is trusted (`controller.ca_file`);
    /// read again from the file at every reload.
    pub controller_tls: Arc<arc_swap::ArcSwapOption<rustls::ClientConfig>>,
    /// The admin API's HTTPS settings (`admin.tls`; `None`: plain HTTP),
    /// and the CAs other leasegates' `https://` admin APIs are trusted
    /// with; read again from the files at every reload.
    pub admin_tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    pub admin_ca: arc_swap::ArcSwapOption<rustls::ClientConfig>,
}

impl ControlContext {
    /// Builds the guard from the config (lease, role, pause, verifier, Gate)
    /// and registers its metrics, once.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> ControlContext {
        let mut registry = Registry::with_prefix("leasegate");
        let lease = Arc::new(Lease::new(
            clock,
            config.lease.mode,
            config.lease.initial,
            LeaseTuning {
                clock_drift: config.lease.clock_drift,
                safety_margin_ms: config.lease.safety_margin_ms,
            },
            config.node_id.clone(),
        ));
        let role = Arc::new(Role::new(lease, config.pause.on_demote));
        role.outside_grants.set(config.outside_grants());
        let gate = Arc::new(Gate::new(
            Policy {
                commands: CommandTable::build(&config.commands, &[]),
            },
            Arc::clone(&role),
            GateParts {
                control: ControlPolicy::new(
                    config.control.password.as_deref(),
                    &config.control.allow_from,
                ),
                reject_prefix: config.lease.reject_prefix.clone(),
                fence_reads: config.lease.fence_reads,
                backend_login: config.backend.login(),
                // Whenever there is a controller to ask, so that a reload
                // can switch verification on and off.
                verifier: config.controller.url.as_ref().map(|_| {
                    // A driver per session thread (see guard::verify).
                    let v = Verifier::new(config.session_threads());
                    v.configure(
                        config.verify.mode == VerifyMode::EveryWrite,
                        config.verify.hold,
                        config.verify.max_in_flight,
                        config.verify.timeout,
                    );
                    Arc::new(v)
                }),
                pause: Arc::new(Pause::new(
                    config.pause.max_buffered_requests,
                    config.pause.max_buffered_bytes,
                )),
            },
        ));
        gate.replica_acks()
            .set(config.durability.min_replicas, config.durability.timeout);
        gate.pause().metrics.register(&mut registry);
        if let Some(v) = gate.verifier() {
            v.metrics.register(&mut registry);
        }
        gate.metrics.register(&mut registry);
        role.metrics.register(&mut registry);
        let metrics = ControlMetrics::default();
        metrics.admin.register(&mut registry);
        metrics.poll.register(&mut registry);
        metrics.sentinel.register(&mut registry);
        registry.register(
            "client_connections",
            "Client connections being served",
            metrics.sessions.clone(),
        );
        metrics.lease.register(&mut registry);
        metrics.proxy.register(&mut registry);
        metrics.failover.register(&mut registry);
        metrics.reload.register(&mut registry);
        role.node.register(&mut registry);
        let controller_pause = Arc::new(failover::controller_pause::ControllerPause::new(
            Arc::clone(&role),
            config.pause.promotion_timing,
        ));
        controller_pause.register(&mut registry);
        gate.time_controller_pauses(Arc::clone(&controller_pause) as _);
        register_build_info(&mut registry);
        // The certificate files were read when the file was loaded; again
        // here (a file gone meanwhile: logged, and that TLS is off).
        let client_tls = loaded(config.tls.server_config());
        let node_tls = loaded(config.backend.tls.node_tls());
        let peer_tls = loaded(config.tls.peer_tls());
        let controller_tls = loaded(config.controller.tls());
        let admin_tls = loaded(config.admin.tls.server_config());
        let admin_ca = loaded(config.admin.tls.client_config());
        ControlContext {
            admin_tls: arc_swap::ArcSwapOption::new(admin_tls),
            admin_ca: arc_swap::ArcSwapOption::new(admin_ca),
            controller_tls: Arc::new(arc_swap::ArcSwapOption::new(controller_tls)),
            client_tls: arc_swap::ArcSwapOption::new(client_tls),
            node_tls: Arc::new(arc_swap::ArcSwapOption::new(node_tls)),
            peer_tls: Arc::new(arc_swap::ArcSwapOption::new(peer_tls)),
            config: ArcSwap::from_pointee(config),
            config_path: None,
            reloaded: watch::channel(0).0,
            on_reload: OnceLock::new(),
            learned: Mutex::new(Arc::new(Vec::new())),
            reloading: Mutex::new(()),
            gate,
            role,
            registry,
            metrics,
            shutdown: CancellationToken::new(),
            promotion_memory: Arc::default(),
            controller_pause,
        }
    }
}

impl ControlContext {
    /// Records what the node said about its commands and rebuilds the
    /// command table from them and the running config.
    /// A control connection to this leasegate's node (`backend.addr`,
    /// authenticated with `backend.password`, over TLS with `backend.tls`),
    /// opened within `timeout`.
    pub async fn open_node(
        &self,
        timeout: std::time::Duration,
    ) -> Result<crate::proxy::backend::ControlConnection, crate::proxy::backend::BackendError> {
        let config = self.config.load_full();
        let tls = self.node_tls();
        crate::proxy::backend::ControlConnection::open_node(
            &config.backend.addr,
            tls.as_deref(),
            config.backend.login().as_ref(),
            timeout,
        )
        .await
    }

    /// How other leasegates are reached over TLS now (`tls.handover`;
    /// `None`: plain).
    pub fn peer_tls(&self) -> Option<Arc<crate::proxy::backend::PeerTls>> {
        self.peer_tls.load_full()
    }

    /// How the node is reached over TLS now (`None`: plain).
    pub fn node_tls(&self) -> Option<Arc<crate::proxy::backend::NodeTls>> {
        self.node_tls.load_full()
    }

    /// What was learned from the node so far (empty until then).
    pub fn learned(&self) -> Arc<Vec<LearnedCommand>> {
        Arc::clone(&self.learned.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn learned_commands(&self, commands: Vec<LearnedCommand>) {
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        *learned = Arc::new(commands);
        self.rebuild_commands(&learned);
    }

    /// Rebuilds the command table from the running config (after a reload).
    fn refresh_commands(&self) {
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        self.rebuild_commands(&learned);
    }

    /// Called with the `learned` lock held, so that learning and a reload
    /// cannot leave a table built from the other's stale half.
    fn rebuild_commands(&self, learned: &[LearnedCommand]) {
        let config = self.config.load();
        self.gate.replace_policy(Policy {
            commands: CommandTable::build(&config.commands, learned),
        });
    }
}

/// `leasegate_build_info{version}` = 1.
fn register_build_info(registry: &mut Registry) {
    use prometheus_client::metrics::family::Family;
    let info: Family<Vec<(String, String)>, Gauge> = Family::default();
    info.get_or_create(&vec![(
        "version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )])
    .set(1);
    registry.register("build_info", "The running leasegate's version", info);
}

/// TLS settings read from their files, or `None` (logged) if they cannot be.
fn loaded<T>(read: Result<Option<T>, (&'static str, String)>) -> Option<T> {
    read.unwrap_or_else(|(key, reason)| {
        tracing::error!(key, %reason, "TLS files cannot be used");
        None
    })
}
