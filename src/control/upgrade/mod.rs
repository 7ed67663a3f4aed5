//! Upgrading or restarting leasegate without a client noticing
//! (`SIGUSR2`, or `leasegate run --take-over`): the new process (the
//! successor) takes the listening sockets, the Gate's state and every
//! established session from the running one (the predecessor), which
//! then exits.
//!
//! The two meet on a Unix socket (`upgrade.socket`, owner-only, the peer's
//! user checked) and speak [`wire`]:
//!
//! 1. The successor has loaded its config and says `Hello`.
//! 2. The predecessor waits for a failover under way to end, then holds
//!    every request (a freeze no pause or unpause ends) and waits until
//!    no write it admitted is in flight. It exports the Gate's state
//!    ([`crate::guard::succession`]): from then on it refuses grants, so
//!    the lease the successor takes cannot change behind it. It sends the
//!    state and its listeners.
//! 3. The successor takes the state before it admits anything, serves the
//!    listeners, and says `Ready`. Had it failed before (it exited, or said
//!    nothing for [`READY_TIMEOUT`]), the predecessor would take its state
//!    back, lift its hold and go on serving, unchanged.
//! 4. The predecessor stops accepting and drains: every session moves as
//!    soon as it stands between requests ([`crate::proxy::session::MovedSession`];
//!    a client waiting for its node that is down moves without a node
//!    socket, and the successor waits for the node in its place);
//!    one that does not within `drain_timeout_ms` (a blocking command that
//!    does not return) is told why and closed. Then it says `Done` and
//!    exits.
//!
//! At every instant one process decides: the predecessor admits nothing
//! from step 2 on, and the successor nothing before step 3.

pub mod notify;
mod successor;
mod wire;

pub use successor::{spawn_successor, take_over, Inherited};

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::control::ControlContext;
use crate::guard::failover_command::FailoverCommandState;
use crate::guard::succession::Succession;
use crate::proxy::session::{MovedSession, Mover, Takes};

pub use wire::Message;

/// How long the predecessor waits for the successor's `Ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a take-over did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no running leasegate to take over at {path}: {source}")]
    NoPredecessor {
        path: String,
        source: std::io::Error,
    },
    #[error("the running leasegate refused the take-over: {0}")]
    Refused(String),
    #[error("the upgrade channel broke: {0}")]
    Channel(#[from] std::io::Error),
    #[error("the running leasegate said {0} where the state was due")]
    Unexpected(String),
}

/// The predecessor's side: what it hands over, and the signals between
/// the upgrade channel and the server's loop.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Listening sockets by name (`client`, `admin`), registered at start.
    listeners: Mutex<Vec<(String, OwnedFd)>>,
    /// Cancelled when the successor is serving: stop accepting and drain.
    committed: CancellationToken,
    /// Cancelled once the last session went (or the take-over failed
    /// after the commit): the process may exit.
    finished: CancellationToken,
    /// Cancelled once this process bound the upgrade socket: only then is
    /// the path its own to remove at exit (another leasegate's, found
    /// served, is left alone), and a SIGUSR2 may start a successor.
    served: CancellationToken,
    /// A SIGUSR2 waits for the socket to be served ([`Handoff::successor_wanted`]).
    successor_pending: std::sync::atomic::AtomicBool,
}

/// How long a SIGUSR2 that came before the upgrade socket was served
/// (this process still taking sessions over from its predecessor) waits
/// for it.
const SOCKET_WAIT: Duration = Duration::from_secs(30);

impl Handoff {
    /// Registers a listening socket to hand over (a copy of its descriptor).
    pub fn offer(&self, name: &str, listener: &impl std::os::fd::AsFd) {
        match listener.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                if let Ok(mut l) = self.listeners.lock() {
                    l.push((name.to_string(), fd));
                }
            }
            Err(e) => warn!(error = %e, name, "this listener cannot be handed to a successor"),
        }
    }

    /// Resolves when a successor took over.
    pub async fn committed(&self) {
        self.committed.cancelled().await
    }

    /// Resolves when every session was handed over.
    pub async fn finished(&self) {
        self.finished.cancelled().await
    }

    /// Whether this process bound the upgrade socket (its path is this
    /// process's to remove when it exits).
    pub fn owns_socket(&self) -> bool {
        self.served.is_cancelled()
    }

    /// SIGUSR2: whether to start a successor now. Only a process that
    /// serves its upgrade socket starts one: the successor asks at that
    /// path, and another leasegate's (a shared `upgrade.socket`, found
    /// served at start) would hand itself over to a process of this one's
    /// config. One that came while this process still takes sessions over
    /// (its socket served only after them: a second SIGUSR2 soon after an
    /// upgrade started a successor that found no socket, and was lost: an
    /// attack pass) waits for the socket, at most [`SOCKET_WAIT`], then
    /// `start` runs; more signals meanwhile are one.
    pub fn successor_wanted(self: &Arc<Self>, start: impl FnOnce() + Send + 'static) {
        use std::sync::atomic::Ordering;
        if self.owns_socket() {
            start();
            return;
        }
        if self.successor_pending.swap(true, Ordering::AcqRel) {
            info!("SIGUSR2: a successor already waits for the upgrade socket to be served");
            return;
        }
        info!("SIGUSR2: the upgrade socket is not served yet (sessions still coming from the predecessor); the successor starts once it is");
        let handoff = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SOCKET_WAIT, handoff.served.cancelled()).await;
            handoff.successor_pending.store(false, Ordering::Release);
            if handoff.owns_socket() {
                start();
            } else {
                warn!("SIGUSR2: this leasegate serves no upgrade socket (another process serves its path, or it could not be bound: see the log at start); no successor started");
            }
        });
    }
}

/// Set by a leasegate for the successor it starts (SIGUSR2): the upgrade
/// socket it serves, which the successor takes over from whatever its own
/// config says (its `listen`, and so the default socket path, may differ).
pub const TAKE_OVER_SOCKET_ENV: &str = "LEASEGATE_TAKE_OVER_SOCKET";

/// The socket a successor takes over from: [`TAKE_OVER_SOCKET_ENV`] when
/// its predecessor started it, else its own config's.
pub fn take_over_path(own: &Path) -> PathBuf {
    std::env::var_os(TAKE_OVER_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| own.to_path_buf(), PathBuf::from)
}

/// The path of the upgrade socket for `config`.
pub fn socket_path(config: &crate::config::Config) -> PathBuf {
    config.upgrade.socket.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("leasegate-{}.sock", config.listen.port()))
    })
}

/// Serves the upgrade socket until a successor took over (predecessor).
/// Runs on a blocking thread.
pub fn serve(path: &Path, ctx: Arc<ControlContext>, handoff: Arc<Handoff>, mover: Arc<Mover>) {
    let listener = match bind(path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "no upgrade socket: this leasegate cannot hand over to a successor");
            return;
        }
    };
    handoff.served.cancel();
    info!(path = %path.display(), "upgrade socket ready");
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: a successor that
                // waits is accepted once one is free, not in a tight loop
                // (an attack pass, from its reading of this loop).
                warn!(error = %e, "the upgrade socket's accept failed; trying again in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let predecessor = Predecessor {
            path,
            ctx: &ctx,
            handoff: &handoff,
            mover: &mover,
        };
        match predecessor.hand_over(&conn) {
            Ok(()) => return,
            // Another process found the socket served and hung up (a
            // second leasegate with the same `upgrade.socket`): no take-over
            // was asked for.
            Err(reason) if reason == NO_HELLO_EOF => {
                debug!("a connection to the upgrade socket closed without asking to take over");
            }
            Err(reason) => {
                warn!(%reason, "the take-over did not happen; this leasegate goes on serving");
                let _ = wire::send(&conn, &Message::Refused { reason }, &[]);
            }
        }
    }
}

/// A connection to the upgrade socket that closed before its Hello.
const NO_HELLO_EOF: &str = "no Hello: the connection closed";

/// Binds the upgrade socket, owner-only, replacing a stale one.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another leasegate serves this upgrade socket",
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The running leasegate's side of one take-over: what it hands over and
/// where from.
#[derive(Clone, Copy)]
struct Predecessor<'a> {
    path: &'a Path,
    ctx: &'a Arc<ControlContext>,
    handoff: &'a Handoff,
    mover: &'a Mover,
}

impl Predecessor<'_> {
    /// One take-over: `Ok` once the successor serves (the sessions then move;
    /// this returns when they all have).
    fn hand_over(self, conn: &UnixStream) -> Result<(), String> {
        let ctx = self.ctx;
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        match wire::peer_uid(conn) {
            Ok(uid) if uid == me => {}
            Ok(uid) => {
                return Err(format!(
                    "a process of user {uid} asked; only user {me} may take over"
                ))
            }
            Err(e) => return Err(format!("cannot tell who asked: {e}")),
        }
        conn.set_read_timeout(Some(READY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let (pid, takes) = match wire::recv(conn) {
            Ok((
                Message::Hello {
                    version,
                    pid,
                    tls_sessions,
                    waiting_sessions,
                },
                _,
            )) => {
                info!(%version, pid, tls_sessions, waiting_sessions, "a successor asks to take over");
                let takes = Takes {
                    tls: tls_sessions,
                    waiting: waiting_sessions,
                };
                (pid, takes)
            }
            Ok((other, _)) => return Err(format!("expected Hello, got {other:?}")),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(NO_HELLO_EOF.to_string())
            }
            Err(e) => return Err(format!("no Hello: {e}")),
        };
        let drain = ctx.config.load().drain_timeout();
        // The failover slot is the upgrade's from here on: a `POST
        // /v1/failover` that comes now is refused, and one under way ends first.
        wait_until(drain, || ctx.role.failover.try_start()).map_err(|()| {
            "a failover is under way and did not end within drain_timeout_ms".to_string()
        })?;
        let result = self.hold_and_hand_over(conn, pid, takes, drain);
        if result.is_err() {
            ctx.role.failover.finished();
        }
        result
    }

    /// [`Predecessor::hand_over`] once the failover slot is taken.
    fn hold_and_hand_over(
        self,
        conn: &UnixStream,
        pid: u32,
        takes: Takes,
        drain: Duration,
    ) -> Result<(), String> {
        let Predecessor {
            path,
            ctx,
            handoff,
            mover,
        } = self;
        // Hold everything (whatever pauses and unpauses come meanwhile), and
        // wait for the writes admitted to be answered.
        let frozen = Freeze::new(ctx.gate.pause());
        let held_at = Instant::now();
        // A `FAILOVER` command admitted before the hold ends first.
        let settled = wait_until(drain, || {
            ctx.role.failover_command.state() == FailoverCommandState::NoFailover
                && ctx.role.writes_in_flight() == 0
        });
        if settled.is_err() {
            return Err(
                "a FAILOVER command, or writes in flight, did not end within drain_timeout_ms"
                    .into(),
            );
        }
        // Copies of the listeners for the successor. One that cannot be
        // copied (out of file descriptors) ends the upgrade here, said as
        // it is: left out, the successor failed to bind its address,
        // `Address already in use` (an attack pass).
        let listeners = handoff
            .listeners
            .lock()
            .map_err(|_| "the listeners' list is poisoned".to_string())?
            .iter()
            .map(|(name, fd)| {
                fd.try_clone()
                    .map(|fd| (name.clone(), fd))
                    .map_err(|e| format!("cannot copy the {name} listener for the successor: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        // The pause set goes with it, as it is now (the freeze does not).
        let succession: Succession = ctx.gate.export_succession();
        let names = listeners.iter().map(|(n, _)| n.clone()).collect();
        let fds: Vec<_> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let ready = wire::send(
            conn,
            &Message::State {
                succession: Box::new(succession),
                listeners: names,
                coarse_lag_ns: crate::control::failover::timing::known_lag()
                    .and_then(|lag| u64::try_from(lag.as_nanos()).ok()),
                learned: ctx.learned().as_ref().clone(),
            },
            &fds,
        )
        .and_then(|()| wire::recv(conn));
        drop(listeners);
        match ready {
            Ok((Message::Ready, _)) => {}
            other => {
                ctx.gate.keep_succession();
                return Err(match other {
                    Ok((m, _)) => format!("the successor (pid {pid}) said {m:?} instead of Ready"),
                    Err(e) => format!("the successor (pid {pid}) did not get ready: {e}"),
                });
            }
        }
        // The successor decides from now on: this process never admits
        // anything again.
        frozen.commit();
        info!(
            pid,
            held_us = held_at.elapsed().as_micros() as u64,
            "the successor serves: sessions move to it"
        );
        // The path is the successor's from now on (it binds it once every
        // session came); this connection stays open.
        let _ = std::fs::remove_file(path);
        let (to, mut sessions) = mpsc::unbounded_channel();
        mover.start(to, takes);
        handoff.committed.cancel();
        let _ = conn.set_read_timeout(None);
        let (mut moved, mut closed) = (0u64, 0u64);
        // Sessions that are ready together go in one message, within the
        // descriptors and the bytes one carries.
        let mut held = None;
        while let Some(first) = held.take().or_else(|| sessions.blocking_recv()) {
            let (batch, too_big): (Vec<_>, Vec<_>) =
                batch(&mut held, first, || sessions.try_recv().ok())
                    .into_iter()
                    .partition(|s| wire::carries(s.state.encoded_len()));
            if !too_big.is_empty() {
                // Sent, it would break the channel for every session
                // after it (a review): closed here instead.
                warn!(
                    sessions = too_big.len(),
                    "sessions holding more than one message carries could not be handed over: closed"
                );
                closed += too_big.len() as u64;
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            match send_sessions(conn, batch) {
                Ok(()) => moved += n,
                Err(e) => {
                    warn!(error = %e, sessions = n, "sessions could not be handed over: closed")
                }
            }
        }
        let _ = wire::send(conn, &Message::Done { moved, closed }, &[]);
        info!(
            moved,
            since_hold_us = held_at.elapsed().as_micros() as u64,
            "every session moved to the successor"
        );
        handoff.finished.cancel();
        Ok(())
    }
}

/// The predecessor's hold of every request ([`crate::guard::pause::Pause::freeze`]),
/// lifted when dropped unless the successor took over: a take-over that
/// fails, however (an error, or a panic of this thread), leaves this
/// process serving as before.
struct Freeze<'a> {
    pause: &'a crate::guard::pause::Pause,
    committed: bool,
}

impl<'a> Freeze<'a> {
    fn new(pause: &'a crate::guard::pause::Pause) -> Freeze<'a> {
        pause.freeze();
        Freeze {
            pause,
            committed: false,
        }
    }

    /// The successor serves: the hold stays until this process exits.
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Freeze<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.pause.thaw();
        }
    }
}

/// `first` and the sessions `next` has ready, as many as one message
/// carries: [`wire::MAX_FDS`] descriptors (two a session), and
/// [`wire::SESSIONS_BUDGET`] encoded bytes. A session that would take the
/// message past that ends the batch; it goes in the next one (`held`),
/// alone if it is that big.
fn batch(
    held: &mut Option<MovedSession>,
    first: MovedSession,
    mut next: impl FnMut() -> Option<MovedSession>,
) -> Vec<MovedSession> {
    let mut bytes = first.state.encoded_len();
    let mut batch = vec![first];
    while batch.len() < wire::MAX_FDS / 2 {
        let Some(session) = next() else { break };
        let size = session.state.encoded_len();
        if bytes.saturating_add(size) > wire::SESSIONS_BUDGET {
            *held = Some(session);
            break;
        }
        bytes += size;
        batch.push(session);
    }
    batch
}

fn send_sessions(conn: &UnixStream, batch: Vec<MovedSession>) -> std::io::Result<()> {
    let fds: Vec<_> = batch
        .iter()
        .flat_map(|s| std::iter::once(&s.client).chain(&s.backend))
        .map(|socket| socket.as_raw_fd())
        .collect();
    let mut states = Vec::with_capacity(batch.len());
    let mut sockets = Vec::with_capacity(batch.len());
    for s in batch {
        states.push(s.state);
        sockets.push((s.client, s.backend));
    }
    wire::send(conn, &Message::Sessions(states), &fds)
    // The sockets close with `sockets`, in this process only: the
    // successor has them.
}

/// Polls `done` every millisecond for at most `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}
