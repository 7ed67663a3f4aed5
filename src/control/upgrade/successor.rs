//! The successor's side of an upgrade: it asks the running leasegate to
//! hand over ([`take_over`]), takes the state and listeners it is sent,
//! says `Ready` and receives the sessions ([`Inherited::receive`]); and how
//! the predecessor starts it ([`spawn_successor`]).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::wire::{self, Message};
use super::{UpgradeError, TAKE_OVER_SOCKET_ENV};
use crate::guard::succession::Succession;
use crate::proxy::session::MovedSession;

/// The successor's side: what it took over.
#[derive(Debug)]
pub struct Inherited {
    pub succession: Succession,
    /// The listeners, by name.
    pub listeners: Vec<(String, std::net::TcpListener)>,
    /// The node's command flags as the predecessor learned them (empty:
    /// it had not).
    pub learned: Vec<crate::command::LearnedCommand>,
    conn: UnixStream,
}

/// Asks the leasegate at `path` to hand over (successor); blocking.
pub fn take_over(path: &Path) -> Result<Inherited, UpgradeError> {
    let conn = UnixStream::connect(path).map_err(|source| UpgradeError::NoPredecessor {
        path: path.display().to_string(),
        source,
    })?;
    wire::send(
        &conn,
        &Message::Hello {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            tls_sessions: true,
            waiting_sessions: true,
        },
        &[],
    )?;
    match wire::recv(&conn)? {
        (
            Message::State {
                succession,
                listeners,
                coarse_lag_ns,
                learned,
            },
            fds,
        ) => {
            if let Some(ns) = coarse_lag_ns {
                crate::control::failover::timing::adopt_lag(Duration::from_nanos(ns));
            }
            let listeners = listeners
                .into_iter()
                .zip(fds)
                .map(|(name, fd)| (name, std::net::TcpListener::from(fd)))
                .collect();
            Ok(Inherited {
                succession: *succession,
                listeners,
                learned,
                conn,
            })
        }
        (Message::Refused { reason }, _) => Err(UpgradeError::Refused(reason)),
        (other, _) => Err(UpgradeError::Unexpected(format!("{other:?}"))),
    }
}

impl Inherited {
    /// The listener handed over as `name`, if it listens on `addr`.
    pub fn listener(&mut self, name: &str, addr: &str) -> Option<std::net::TcpListener> {
        let at = self.listeners.iter().position(|(n, l)| {
            n == name
                && l.local_addr()
                    .is_ok_and(|a| a.to_string() == addr || addr.parse() == Ok(a))
        })?;
        Some(self.listeners.swap_remove(at).1)
    }

    /// Says `Ready` and receives the sessions, each sent on to `sessions`,
    /// until the predecessor is done; blocking.
    pub fn receive(
        self,
        sessions: mpsc::UnboundedSender<MovedSession>,
    ) -> Result<u64, UpgradeError> {
        wire::send(&self.conn, &Message::Ready, &[])?;
        let mut received = 0;
        loop {
            match wire::recv(&self.conn)? {
                (Message::Sessions(states), fds) => {
                    let mut fds = fds.into_iter();
                    for state in states {
                        // A client waiting for its node came without a
                        // node socket.
                        let client = fds.next();
                        let backend = match state.waiting() {
                            None => fds.next().map(Some),
                            Some(_) => Some(None),
                        };
                        let (Some(client), Some(backend)) = (client, backend) else {
                            warn!("a moved session came without its sockets: skipped");
                            continue;
                        };
                        received += 1;
                        let _ = sessions.send(MovedSession {
                            client: std::net::TcpStream::from(client),
                            backend: backend.map(std::net::TcpStream::from),
                            state,
                        });
                    }
                }
                (Message::Done { moved, .. }, _) => {
                    info!(moved, received, "the predecessor handed every session over");
                    return Ok(received);
                }
                (other, _) => return Err(UpgradeError::Unexpected(format!("{other:?}"))),
            }
        }
    }
}

/// Starts the successor: this binary, `run -c <config> --take-over`, with
/// this process's standard output and error (SIGUSR2).
pub fn spawn_successor(config_path: &Path, socket: &Path) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    // After a package upgrade the running binary's path names the new one.
    let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
    let mut child = std::process::Command::new(exe)
        .arg("run")
        .arg("-c")
        .arg(config_path)
        .arg("--take-over")
        // The socket this process serves: the successor's config may name
        // another (a changed `listen` moves the default path).
        .env(TAKE_OVER_SOCKET_ENV, socket)
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Reaped here; a successor that fails is reported.
    std::thread::spawn(move || match child.wait() {
        Ok(status) if !status.success() => {
            warn!(pid, %status, "the successor exited with an error")
        }
        _ => {}
    });
    Ok(pid)
}
