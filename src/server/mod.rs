//! The proxy's lifecycle: start, serve, reload, drain, stop.
//!
//! * **start**: learn command flags from the node (retried in the background
//!   while it is unreachable), bind the listener;
//! * **serve**: one task per client connection, each paired with its own
//!   backend connection ([`crate::proxy::session`]); `limits.max_clients` bounds them;
//! * **reload** (SIGHUP, or `POST /v1/reload`): re-read the config file and
//!   apply what may change live without closing a connection
//!   ([`crate::control::reload`]); here, the log level and the limits of
//!   connections accepted from then on;
//! * **drain** (SIGTERM/SIGINT): stop accepting, let sessions finish the
//!   replies they owe, bounded by `drain_timeout_ms`;
//! * **upgrade** (SIGUSR2 starts `leasegate run --take-over`): hand the
//!   listeners, the Gate's state and every session to the successor, then
//!   exit ([`crate::control::upgrade`]); started with `--take-over`, take
//!   them from the running leasegate instead of binding;
//! * **stop**: return, closing whatever is left.
//!
//! Clients arriving are admitted in [`clients`]; the services beside the
//! sessions (admin API, poller, verification, probe) start in [`services`].

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::Config;
use crate::control::reload;
use crate::control::upgrade::{self, Handoff, Inherited};
use crate::control::ControlContext;
use crate::guard::gate::Gate;
use crate::guard::lease::{BootClock, Clock};
use crate::proxy::backend;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::session::{MovedSession, Mover, SessionContext};
use crate::proxy::workers::Workers;
use crate::resp::request::Limits;

mod clients;
mod services;

use clients::{accept_on, listen_on};

/// How long sessions closing at the drain's deadline get to write their error.
const STOPPED_FLUSH: Duration = Duration::from_millis(500);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen on admin.listen {addr}: {source}")]
    AdminBind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the session workers: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("cannot take over: {0}")]
    TakeOver(#[from] upgrade::UpgradeError),
}

/// A running proxy.
pub struct Server {
    /// The config as started: what needs a restart (`listen`, `threads`,
    /// `admin.listen`, `backend.addr`, `controller.url`) is read here; the
    /// rest from the running config, `shared.config`.
    config: Config,
    gate: Arc<Gate>,
    shared: Arc<ControlContext>,
    /// What connections accepted now are served with (rebuilt on a reload).
    sessions_context: Arc<ArcSwap<SessionContext>>,
    shutdown: CancellationToken,
    /// Stops verification once the drain is over (not at its start: the
    /// writes sessions still owe a reply for keep their confirmations).
    verification_stop: CancellationToken,
    /// Client connections being served (`leasegate_client_connections`).
    sessions: Gauge,
    /// Where sessions go at an upgrade.
    mover: Arc<Mover>,
    /// Cancelled once the drain's deadline passed: sessions still owed an
    /// answer say so and close.
    stopping: CancellationToken,
    /// What an upgrade hands over, and its signals.
    handoff: Arc<Handoff>,
    /// Started with `--take-over`: take the running leasegate's place.
    take_over: bool,
}

impl Server {
    /// Builds the proxy from a validated config; `config_path` is re-read on
    /// SIGHUP and `POST /v1/reload`.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Server {
        Server::with_clock(config, config_path, Arc::new(BootClock))
    }

    /// Builds the proxy with the given lease clock.
    pub fn with_clock(
        config: Config,
        config_path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Server {
        let mut shared = ControlContext::new(config.clone(), clock);
        shared.config_path = config_path;
        let shared = Arc::new(shared);
        let gate = Arc::clone(&shared.gate);
        let shutdown = shared.shutdown.clone();
        let sessions = shared.metrics.sessions.clone();
        let proxy_metrics = Arc::clone(&shared.metrics.proxy);
        let mover = Arc::new(Mover::default());
        let stopping = CancellationToken::new();
        let sessions_context = Arc::new(ArcSwap::from_pointee(session_context(
            &gate,
            &config,
            &proxy_metrics,
            &mover,
            &stopping,
            (&shared.node_tls, &shared.peer_tls),
        )));
        let on_reload = {
            let (gate, sessions_context) = (Arc::clone(&gate), Arc::clone(&sessions_context));
            let mover = Arc::clone(&mover);
            let stopping = stopping.clone();
            let node_tls = Arc::clone(&shared.node_tls);
            let peer_tls = Arc::clone(&shared.peer_tls);
            move |old: &Config, new: &Config| {
                if old.log.level != new.log.level {
                    match crate::logging::set_level(&new.log.level) {
                        Ok(crate::logging::LevelChange::Overridden) => {
                            warn!("RUST_LOG is set and overrides log.level")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "cannot change log.level"),
                    }
                }
                sessions_context.store(Arc::new(session_context(
                    &gate,
                    new,
                    &proxy_metrics,
                    &mover,
                    &stopping,
                    (&node_tls, &peer_tls),
                )));
            }
        };
        let _ = shared.on_reload.set(Box::new(on_reload));
        Server {
            config,
            gate,
            shared,
            sessions_context,
            shutdown,
            verification_stop: CancellationToken::new(),
            sessions,
            mover,
            stopping,
            handoff: Arc::new(Handoff::default()),
            take_over: false,
        }
    }

    /// Takes the running leasegate's place (`--take-over`) instead of
    /// binding the listeners.
    pub fn taking_over(mut self) -> Server {
        self.take_over = true;
        self
    }

    pub fn shared(&self) -> &Arc<ControlContext> {
        &self.shared
    }

    /// Runs until SIGTERM/SIGINT, then drains and returns.
    pub async fn run(self) -> Result<(), ServerError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;
        let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(ServerError::Signals)?;
        for warning in self.config.warnings() {
            warn!("{warning}");
        }
        let tracker = TaskTracker::new();
        let workers =
            Workers::start(self.config.session_threads()).map_err(ServerError::Workers)?;
        // Taking over, the coarse clock's lag comes with the state (at
        // `inherit`): measuring it spins a CPU for up to three coarse ticks,
        // which the clients on this host would feel.
        let upgrade_socket = upgrade::socket_path(&self.config);
        let mut inherited = self.inherit(&upgrade_socket).await?;
        // The admin API is up before clients can connect.
        self.start_services(inherited.as_mut()).await?;
        let listener = match inherited
            .as_mut()
            .and_then(|i| i.listener("client", &self.config.listen.to_string()))
        {
            Some(l) => listen_on(l).map_err(|source| ServerError::Bind {
                addr: self.config.listen.to_string(),
                source,
            })?,
            None => TcpListener::bind(&self.config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: self.config.listen.to_string(),
                    source,
                })?,
        };
        self.handoff.offer("client", &listener);
        let tls_listener = self.tls_listener(inherited.as_mut()).await?;
        // Taking over: `Ready`, and the sessions come from here on.
        let mut moved_in = self.receive_sessions(inherited, &upgrade_socket);
        // A failover times its pause by when a replica's connection arrived.
        if let Err(e) = crate::proxy::rxtime::enable(&listener) {
            warn!(error = %e, "no kernel receive times (SO_TIMESTAMPNS): a failover's promotion timing uses the sessions' own read times");
        }
        // Where this host's coarse clock ticks (a failover to this node asks).
        tokio::task::spawn_blocking(crate::control::failover::timing::warm_up);
        self.start_learning();
        self.start_probe();
        self.start_memory_return();
        if !self.take_over {
            self.first_look_at_the_node().await;
            self.first_word_of_the_controller().await;
        }
        info!(
            listen = %self.config.listen,
            backend = %self.config.backend.addr,
            session_threads = self.config.session_threads(),
            "leasegate is serving"
        );

        self.start_verification(&workers);
        let active = Arc::new(AtomicUsize::new(0));
        if !self.take_over {
            upgrade::notify::ready(false);
        }
        let mut upgraded = false;
        loop {
            tokio::select! {
                Some(moved) = moved_in.recv() => {
                    self.admit_moved(moved, &tracker, &workers, &active);
                }
                _ = self.handoff.committed() => {
                    upgraded = true;
                    break;
                }
                _ = sigusr2.recv() => self.start_successor(&upgrade_socket),
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        debug!(%peer, "client connected");
                        self.admit_client(client, false, &tracker, &workers, &active);
                    }
                    Err(e) => clients::accept_failed(&e, self.gate.lease().now()).await,
                },
                accepted = accept_on(tls_listener.as_ref()) => match accepted {
                    Ok((client, peer)) => {
                        debug!(%peer, "TLS client connected");
                        self.admit_client(client, true, &tracker, &workers, &active);
                    }
                    Err(e) => clients::accept_failed(&e, self.gate.lease().now()).await,
                },
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => {
                    // Logged and counted there; the answer is for POST /v1/reload.
                    let _ = reload::reload(&self.shared);
                }
            }
        }
        drop(listener);
        drop(tls_listener);
        self.drain(tracker).await;
        if upgraded {
            // Every session that could move was sent: the channel closes
            // once the last is on its way.
            self.mover.close();
            let _ = tokio::time::timeout(upgrade::READY_TIMEOUT, self.handoff.finished()).await;
            info!("handed over to the successor; exiting");
        } else if self.handoff.owns_socket() {
            let _ = std::fs::remove_file(&upgrade_socket);
        }
        tokio::task::spawn_blocking(move || workers.stop())
            .await
            .ok();
        Ok(())
    }

    /// With `--take-over`: the running leasegate's state and listeners,
    /// its Gate's state taken before anything is admitted here.
    async fn inherit(&self, path: &std::path::Path) -> Result<Option<Inherited>, ServerError> {
        if !self.take_over {
            return Ok(None);
        }
        let path = upgrade::take_over_path(path);
        let mut inherited = tokio::task::spawn_blocking(move || upgrade::take_over(&path))
            .await
            .map_err(|e| upgrade::UpgradeError::Channel(std::io::Error::other(e)))??;
        self.gate.import_succession(&inherited.succession);
        if !inherited.learned.is_empty() {
            // The node is not asked again (see `start_learning`).
            let learned = std::mem::take(&mut inherited.learned);
            self.shared.learned_commands(learned);
        }
        info!(
            listeners = inherited.listeners.len(),
            lease_epoch = inherited.succession.lease.epoch,
            "took the running leasegate's state over"
        );
        Ok(Some(inherited))
    }

    /// Where sessions moved here arrive (from the predecessor, when taking
    /// over); then, or at once, this leasegate waits for a successor of
    /// its own on the upgrade socket.
    fn receive_sessions(
        &self,
        inherited: Option<Inherited>,
        path: &std::path::Path,
    ) -> tokio::sync::mpsc::UnboundedReceiver<MovedSession> {
        let (to, from) = tokio::sync::mpsc::unbounded_channel();
        let (path, ctx, handoff, mover) = (
            path.to_path_buf(),
            Arc::clone(&self.shared),
            Arc::clone(&self.handoff),
            Arc::clone(&self.mover),
        );
        tokio::task::spawn_blocking(move || {
            if let Some(inherited) = inherited {
                // systemd follows this process before the predecessor exits.
                upgrade::notify::ready(true);
                if let Err(e) = inherited.receive(to) {
                    warn!(error = %e, "the hand-over of sessions broke off; those not received were closed by the predecessor");
                }
            }
            upgrade::serve(&path, ctx, handoff, mover);
        });
        from
    }

    /// SIGUSR2: starts this binary as the successor.
    fn start_successor(&self, socket: &std::path::Path) {
        let Some(path) = self.shared.config_path.as_deref() else {
            warn!("SIGUSR2: no config file to start a successor with");
            return;
        };
        // The socket this process serves (bound at start, whatever a reload
        // says `listen` is now).
        let (path, socket) = (path.to_path_buf(), socket.to_path_buf());
        self.handoff
            .successor_wanted(move || match upgrade::spawn_successor(&path, &socket) {
                Ok(pid) => info!(
                    pid,
                    "SIGUSR2: started a successor; it takes over when ready"
                ),
                Err(e) => warn!(error = %e, "SIGUSR2: cannot start a successor"),
            });
    }

    /// Stops sessions from taking new requests and waits for the replies
    /// they owe, at most `drain_timeout_ms`.
    async fn drain(&self, tracker: TaskTracker) {
        let timeout = self.shared.config.load().drain_timeout();
        info!(
            sessions = tracker.len(),
            timeout_ms = timeout.as_millis() as u64,
            "draining"
        );
        self.shutdown.cancel();
        tracker.close();
        match tokio::time::timeout(timeout, tracker.wait()).await {
            Ok(()) => info!("drained; stopping"),
            Err(_) => {
                warn!(
                    sessions = tracker.len(),
                    "drain timeout reached; closing remaining sessions, each with an error"
                );
                // Each says why it closes; a client that does not read
                // does not hold the process up.
                self.stopping.cancel();
                let _ = tokio::time::timeout(STOPPED_FLUSH, tracker.wait()).await;
            }
        }
        self.verification_stop.cancel();
    }
}

/// What connections accepted under `config` are served with: a session keeps
/// the limits it started with.
fn session_context(
    gate: &Arc<Gate>,
    config: &Config,
    metrics: &Arc<ProxyMetrics>,
    mover: &Arc<Mover>,
    stopping: &CancellationToken,
    (node_tls, peer_tls): (
        &Arc<arc_swap::ArcSwapOption<backend::NodeTls>>,
        &Arc<arc_swap::ArcSwapOption<backend::PeerTls>>,
    ),
) -> SessionContext {
    SessionContext {
        node_tls: Arc::clone(node_tls),
        peer_tls: Arc::clone(peer_tls),
        stopping: stopping.clone(),
        mover: Arc::clone(mover),
        metrics: Arc::clone(metrics),
        gate: Arc::clone(gate),
        limits: Limits {
            max_bulk_len: config.limits.max_bulk_len,
            max_multibulk_len: config.limits.max_multibulk_len,
            max_inline_len: config.limits.max_inline_len,
            max_request_len: config.limits.max_request_bytes,
        },
        max_client_output: config.limits.max_client_output_bytes,
        connect_timeout: config.connect_timeout(),
        backend_addr: config.backend.addr.clone(),
        idle_timeout: config.limits.client_idle_timeout,
        // Under a controller or Sentinels, a dead node's clients wait for
        // its detection and the switch: a crash costs them a stall, not a
        // reconnect.
        node_lost_patience: if config.controller.url.is_some() || config.sentinel.enabled() {
            config.controller.node_lost_wait
        } else {
            std::time::Duration::ZERO
        },
        node_search: Arc::default(),
        auth_required: config.backend.password.is_some(),
    }
}
