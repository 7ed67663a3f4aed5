//! The proxy's lifecycle: start, serve, reload, drain, stop.
//!
//! * **start**: learn command flags from the node (retried in the background
//!   while it is unreachable), bind the listener;
//! * **serve**: one task per client connection, each paired with its own
//!   backend connection ([`crate::proxy::session`]); `limits.max_clients` bounds them;
//! * **reload** (SIGHUP): re-read the config file and swap the Gate's policy
//!   (deny list, class overrides) without touching live sessions;
//! * **drain** (SIGTERM/SIGINT): stop accepting, let sessions finish the
//!   replies they owe, bounded by `drain_timeout_ms`;
//! * **stop**: return, closing whatever is left.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use prometheus_client::metrics::gauge::Gauge;

use crate::command::{CommandTable, LearnedCommand};
use crate::config::Config;
use crate::control::admin;
use crate::control::poll;
use crate::control::probe;
use crate::control::ControlContext;
use crate::guard::gate::{Gate, Policy};
use crate::guard::lease::{BootClock, Clock};
use crate::proxy::backend;
use crate::proxy::session::{self, SessionContext};
use crate::proxy::workers::Workers;
use crate::resp::request::Limits;

const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";
/// How often command learning is retried while the node is unreachable.
const LEARN_RETRY: Duration = Duration::from_secs(5);

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
}

/// A running proxy.
pub struct Server {
    config: Config,
    config_path: Option<PathBuf>,
    gate: Arc<Gate>,
    shared: Arc<ControlContext>,
    /// What the node said about its commands (empty until learned).
    learned: Arc<Mutex<Arc<Vec<LearnedCommand>>>>,
    shutdown: CancellationToken,
    /// Client connections being served (`leasegate_client_connections`).
    sessions: Gauge,
}

impl Server {
    /// Builds the proxy from a validated config; `config_path` is re-read on SIGHUP.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Server {
        Server::with_clock(config, config_path, Arc::new(BootClock))
    }

    /// Builds the proxy with the given lease clock.
    pub fn with_clock(
        config: Config,
        config_path: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Server {
        let shared = Arc::new(ControlContext::new(config.clone(), clock));
        let gate = Arc::clone(&shared.gate);
        let shutdown = shared.shutdown.clone();
        let sessions = shared.metrics.sessions.clone();
        Server {
            config,
            config_path,
            gate,
            shared,
            learned: Arc::new(Mutex::new(Arc::new(Vec::new()))),
            shutdown,
            sessions,
        }
    }

    pub fn shared(&self) -> &Arc<ControlContext> {
        &self.shared
    }

    /// Runs until SIGTERM/SIGINT, then drains and returns.
    pub async fn run(self) -> Result<(), ServerError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;
        for warning in self.config.warnings() {
            warn!("{warning}");
        }
        // The admin API is up before clients can connect.
        self.start_services().await?;
        let listener = TcpListener::bind(&self.config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: self.config.listen.to_string(),
                source,
            })?;
        self.start_learning();
        self.start_probe();
        info!(
            listen = %self.config.listen,
            backend = %self.config.backend.addr,
            "leasegate is serving"
        );

        let ctx = Arc::new(SessionContext {
            gate: Arc::clone(&self.gate),
            limits: Limits {
                max_bulk_len: self.config.limits.max_bulk_len,
                max_multibulk_len: self.config.limits.max_multibulk_len,
                max_inline_len: self.config.limits.max_inline_len,
            },
            max_client_output: self.config.limits.max_client_output_bytes,
            connect_timeout: self.config.connect_timeout(),
            backend_addr: self.config.backend.addr.clone(),
            idle_timeout: self.config.limits.client_idle_timeout,
        });
        let tracker = TaskTracker::new();
        let threads = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = Workers::start(threads).map_err(ServerError::Workers)?;
        let active = Arc::new(AtomicUsize::new(0));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        debug!(%peer, "client connected");
                        self.admit_client(client, &ctx, &tracker, &workers, &active);
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => self.reload(),
            }
        }
        drop(listener);
        self.drain(tracker).await;
        tokio::task::spawn_blocking(move || workers.stop())
            .await
            .ok();
        Ok(())
    }

    fn admit_client(
        &self,
        client: TcpStream,
        ctx: &Arc<SessionContext>,
        tracker: &TaskTracker,
        workers: &Workers,
        active: &Arc<AtomicUsize>,
    ) {
        let _ = client.set_nodelay(true);
        if active.fetch_add(1, Ordering::AcqRel) >= self.config.limits.max_clients {
            active.fetch_sub(1, Ordering::AcqRel);
            tracker.spawn(refuse(client, MAX_CLIENTS_REPLY.to_vec()));
            return;
        }
        self.sessions.inc();
        let slot = ClientSlot(Arc::clone(active), self.sessions.clone());
        let ctx = Arc::clone(ctx);
        let shutdown = self.shutdown.clone();
        let addr = self.config.backend.addr.clone();
        let timeout = self.config.connect_timeout();
        // The socket moves to a worker's poller.
        let client = match client.into_std() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot hand the connection to a worker");
                return;
            }
        };
        workers.spawn(tracker, async move {
            let _slot = slot;
            let Ok(client) = TcpStream::from_std(client) else {
                return;
            };
            match backend::connect(&addr, timeout).await {
                Ok(backend) => session::serve(client, backend, ctx, shutdown).await,
                Err(e) => {
                    warn!(backend = %addr, error = %e, "backend unavailable");
                    refuse(client, backend::unavailable_reply(&addr, &e)).await;
                }
            }
        });
    }

    /// Starts the node probe (`lease.probe_interval_ms`).
    fn start_probe(&self) {
        if self.config.lease.probe_interval.is_zero() {
            return;
        }
        tokio::spawn(probe::run(
            self.config.backend.addr.clone(),
            self.config.backend.password.clone(),
            self.config.lease.probe_interval,
            self.config.connect_timeout(),
            Arc::clone(&self.gate),
            Arc::clone(&self.shared.node),
            self.shutdown.clone(),
        ));
    }

    /// Starts the admin API and the controller poller.
    async fn start_services(&self) -> Result<(), ServerError> {
        let admin = &self.config.admin.listen;
        if !admin.is_empty() {
            let listener =
                TcpListener::bind(admin)
                    .await
                    .map_err(|source| ServerError::AdminBind {
                        addr: admin.clone(),
                        source,
                    })?;
            tokio::spawn(admin::serve(listener, Arc::clone(&self.shared)));
        }
        if self.config.controller.url.is_some() {
            tokio::spawn(poll::poll(Arc::clone(&self.shared)));
        }
        if let (Some(verifier), Some(url)) = (self.gate.verifier(), &self.config.controller.url) {
            let c = &self.config.controller;
            tokio::spawn(Arc::clone(verifier).run(
                Arc::clone(self.gate.role()),
                crate::kvrocks::controller::cluster_url(url, &c.namespace, &c.cluster),
                self.config.verify.timeout,
                self.shutdown.clone(),
            ));
        }
        Ok(())
    }

    /// Learns command flags from the node, retrying in the background until it answers.
    fn start_learning(&self) {
        if !self.config.commands.learn_from_backend {
            return;
        }
        let gate = Arc::clone(&self.gate);
        let learned = Arc::clone(&self.learned);
        let config = self.config.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let b = &config.backend;
                match backend::learn_commands(
                    &b.addr,
                    b.password.as_deref(),
                    config.connect_timeout(),
                )
                .await
                {
                    Ok(commands) => {
                        info!(
                            commands = commands.len(),
                            "learned command flags from the backend"
                        );
                        gate.replace_policy(Policy {
                            commands: CommandTable::build(&config.commands, &commands),
                        });
                        if let Ok(mut l) = learned.lock() {
                            *l = Arc::new(commands);
                        }
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

    /// Re-reads the config file and swaps the Gate's policy.
    fn reload(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        match Config::load(path) {
            Ok(new) => {
                if new.listen != self.config.listen || new.backend.addr != self.config.backend.addr
                {
                    warn!("listen and backend.addr changes take effect only after a restart");
                }
                let learned = self
                    .learned
                    .lock()
                    .map(|l| Arc::clone(&l))
                    .unwrap_or_default();
                self.gate.replace_policy(Policy {
                    commands: CommandTable::build(&new.commands, &learned),
                });
                if new.lease.mode != self.gate.lease().mode() {
                    info!(mode = ?new.lease.mode, "lease.mode changed");
                    self.gate.lease().set_mode(new.lease.mode);
                }
                info!(path = %path.display(), "config reloaded");
            }
            Err(e) => error!(error = %e, "config reload failed; keeping the running config"),
        }
    }

    /// Stops sessions from taking new requests and waits for the replies
    /// they owe, at most `drain_timeout_ms`.
    async fn drain(&self, tracker: TaskTracker) {
        info!(
            sessions = tracker.len(),
            timeout_ms = self.config.drain_timeout.as_millis() as u64,
            "draining"
        );
        self.shutdown.cancel();
        tracker.close();
        match tokio::time::timeout(self.config.drain_timeout(), tracker.wait()).await {
            Ok(()) => info!("drained; stopping"),
            Err(_) => warn!(
                sessions = tracker.len(),
                "drain timeout reached; closing remaining sessions"
            ),
        }
    }
}

/// Releases a `max_clients` slot when the session ends.
struct ClientSlot(Arc<AtomicUsize>, Gauge);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// Sends one error line and closes.
async fn refuse(mut client: TcpStream, reply: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client.write_all(&reply).await;
        let _ = client.shutdown().await;
    })
    .await;
}
