//! The replicas that replicate through this leasegate: one entry per
//! replication connection (a `PSYNC` or `SYNC` passing through), with the
//! moment its first bytes arrived.
//!
//! Why: a Kvrocks replica becomes master only at the next tick of its
//! replication thread's 100 ms timer, and that timer is armed just before
//! the thread's connection to its master sends its first bytes
//! (`reference/KVROCKS-PROMOTION.md`). The master's leasegate sees that
//! connection arrive, so it knows the tick's phase; a failover from this
//! node reads it here ([`crate::control::failover`]) to time its pause.
//!
//! Sessions write (a link is added when its stream starts and removed when
//! the session ends, through the [`LinkEntry`] the session holds); the
//! failover reads. Both are rare: a mutex is enough.
//!
//! A failover may also **poke** a link ([`ReplicaLinks::poke`]): its
//! session puts one `ping` frame into the stream, which a Kvrocks replica
//! skips but which wakes its replication loop, so that the tick fires at
//! that moment instead of up to one coarse-clock step later.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One replication connection through this leasegate.
#[derive(Debug, Clone)]
pub struct ReplicaLink {
    /// The replica's address as seen here.
    pub peer: IpAddr,
    /// The port the replica says it serves on (`REPLCONF listening-port`).
    pub listening_port: Option<u16>,
    /// When the connection's first bytes arrived.
    pub first_bytes: Instant,
    /// `first_bytes` is the kernel's receive time (not the moment the
    /// session read them, which can be late on a busy host).
    pub kernel_time: bool,
    /// The command that started the stream (`psync`, `sync`).
    pub command: &'static str,
    /// Wakes the session to put a `ping` frame into the stream.
    pub poke: Arc<tokio::sync::Notify>,
}

/// The replication connections open now.
#[derive(Debug, Default)]
pub struct ReplicaLinks {
    next: AtomicU64,
    links: Mutex<Vec<(u64, ReplicaLink)>>,
}

/// A session's entry: removed from the registry when dropped.
#[derive(Debug)]
pub struct LinkEntry {
    id: u64,
    links: Arc<ReplicaLinks>,
}

impl Drop for LinkEntry {
    fn drop(&mut self) {
        if let Ok(mut links) = self.links.links.lock() {
            links.retain(|(id, _)| *id != self.id);
        }
    }
}

impl ReplicaLinks {
    /// Adds `link` for as long as the returned entry lives.
    pub fn attach(self: &Arc<Self>, link: ReplicaLink) -> LinkEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut links) = self.links.lock() {
            links.push((id, link));
        }
        LinkEntry {
            id,
            links: Arc::clone(self),
        }
    }

    /// Every link open now, oldest first.
    pub fn list(&self) -> Vec<ReplicaLink> {
        self.links
            .lock()
            .map(|links| links.iter().map(|(_, l)| l.clone()).collect())
            .unwrap_or_default()
    }

    /// Asks the session of `link` to put a `ping` frame into its stream.
    pub fn poke(link: &ReplicaLink) {
        link.poke.notify_one();
    }

    /// The newest open `PSYNC`/`SYNC` link of the replica that serves on
    /// `port` at `ip` (a replica on another host connects from its own
    /// address; one on this host may connect from any loopback address).
    pub fn find(&self, ip: IpAddr, port: u16) -> Option<ReplicaLink> {
        self.list().into_iter().rev().find(|l| {
            l.listening_port == Some(port)
                && (l.peer == ip || (l.peer.is_loopback() && ip.is_loopback()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, port: u16) -> ReplicaLink {
        ReplicaLink {
            peer: peer.parse().expect("ip"),
            listening_port: Some(port),
            first_bytes: Instant::now(),
            kernel_time: true,
            command: "psync",
            poke: Arc::default(),
        }
    }

    #[test]
    fn a_link_lives_as_long_as_its_entry() {
        let links = Arc::new(ReplicaLinks::default());
        let a = links.attach(link("10.0.0.2", 6666));
        let b = links.attach(link("127.0.0.1", 7777));
        assert_eq!(links.list().len(), 2);
        assert!(links.find("10.0.0.2".parse().expect("ip"), 6666).is_some());
        assert!(links.find("10.0.0.3".parse().expect("ip"), 6666).is_none());
        assert!(links.find("10.0.0.2".parse().expect("ip"), 6667).is_none());
        // A loopback replica may connect from another loopback address.
        assert!(links.find("127.0.0.2".parse().expect("ip"), 7777).is_some());
        drop(a);
        assert!(links.find("10.0.0.2".parse().expect("ip"), 6666).is_none());
        drop(b);
        assert!(links.list().is_empty());
    }

    #[test]
    fn the_newest_link_of_a_replica_wins() {
        let links = Arc::new(ReplicaLinks::default());
        let _old = links.attach(link("10.0.0.2", 6666));
        let mut newer = link("10.0.0.2", 6666);
        newer.command = "sync";
        let _new = links.attach(newer);
        let found = links.find("10.0.0.2".parse().expect("ip"), 6666);
        assert_eq!(found.map(|l| l.command), Some("sync"));
    }
}
