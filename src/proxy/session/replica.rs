//! A replica's replication connection, as a session sees it: the port the
//! replica serves on (`REPLCONF listening-port`), and, once its stream
//! starts (`PSYNC`, `SYNC`), its entry among the [replica
//! links](crate::guard::replicas) with the moment its first bytes arrived,
//! which a failover to that replica times its pause by.
//!
//! Cold: only replicas send these.

use std::net::IpAddr;
use std::time::Instant;

use crate::guard::replicas::{LinkEntry, ReplicaLink};
use crate::resp::request::{arguments, RequestHead};

use super::Session;

/// What a session knows of its client as a possible replica.
#[derive(Debug, Default)]
pub(super) struct ReplicaSide {
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// When its first bytes arrived, and whether that is the kernel's time.
    pub first_bytes: Option<(Instant, bool)>,
    /// `REPLCONF listening-port`.
    pub listening_port: Option<u16>,
    /// Its entry while its stream runs (removed when the session ends).
    pub link: Option<LinkEntry>,
}

impl Session {
    /// `REPLCONF ...` forwarded: remembers `listening-port`.
    #[cold]
    pub(super) fn replconf(&mut self, head: &RequestHead) {
        let args = arguments(&self.unhandled()[..head.len], head.inline);
        if let [_, option, port, ..] = args.as_slice() {
            if option.eq_ignore_ascii_case(b"listening-port") {
                self.replica.listening_port = std::str::from_utf8(port)
                    .ok()
                    .and_then(|p| p.parse().ok());
            }
        }
    }

    /// A replication stream starts (`PSYNC`, `SYNC`; not Kvrocks' file
    /// fetches): the link is listed while the session lasts.
    #[cold]
    pub(super) fn replica_stream_started(&mut self, head: &RequestHead) {
        let name = head.name(&self.unhandled()[..head.len]);
        let command = match name.as_bytes() {
            b"psync" => "psync",
            b"sync" => "sync",
            _ => return,
        };
        let (Some(peer), Some((first_bytes, kernel_time))) =
            (self.replica.peer, self.replica.first_bytes)
        else {
            return;
        };
        let link = ReplicaLink {
            peer,
            listening_port: self.replica.listening_port,
            first_bytes,
            kernel_time,
            command,
        };
        tracing::debug!(?link, "a replication stream starts");
        self.replica.link = Some(self.gate.role().replicas.attach(link));
    }
}
