//! A replica's replication connection, as a session sees it: the port the
//! replica serves on (`REPLCONF listening-port`), and, once its stream
//! starts (`PSYNC`, `SYNC`), its entry among the [replica
//! links](crate::guard::replicas) with the moment its first bytes arrived,
//! which a failover to that replica times its pause by.
//!
//! Cold: only replicas send these. The stream itself passes as it came;
//! for a Kvrocks incremental stream ([`WalFraming`]) the session keeps
//! track of its frames, so that a failover's poke can put a `ping` frame
//! between two of them ([`Session::poked`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::guard::replicas::{LinkEntry, ReplicaLink};
use crate::resp::request::{arguments, RequestHead};

use super::Session;

/// What a session knows of its client as a possible replica: its address
/// and first bytes' time (every session), and, once it speaks as a replica,
/// the rest ([`ReplicaStream`], boxed: few sessions are replicas).
#[derive(Debug, Default)]
pub(super) struct ReplicaSide {
    /// The client's address.
    pub peer: Option<IpAddr>,
    /// When its first bytes arrived, and whether that is the kernel's time.
    pub first_bytes: Option<(Instant, bool)>,
    stream: Option<Box<ReplicaStream>>,
}

/// A client that sent `REPLCONF` or started a stream.
#[derive(Debug, Default)]
struct ReplicaStream {
    /// `REPLCONF listening-port`.
    listening_port: Option<u16>,
    /// Its entry while its stream runs (removed when the session ends).
    link: Option<LinkEntry>,
    /// Set with the entry: a failover's request for a `ping` frame.
    poke: Option<Arc<tokio::sync::Notify>>,
    /// Where the stream stands.
    framing: WalFraming,
    /// The command that started the listed stream (`psync`, `sync`).
    command: Option<&'static str>,
}

/// A replica's side of a session as it moves to a successor process at an
/// upgrade ([`super::moving`]): its stream goes on there, listed again
/// with the time its first bytes arrived, so that a failover after the
/// upgrade still knows its replication thread's phase.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct MovedReplica {
    listening_port: Option<u16>,
    framing: WalFraming,
    /// `psync` or `sync` when the stream was listed.
    command: Option<String>,
    /// How long before the move its first bytes arrived (µs; the clocks
    /// of two processes are compared through this age, not an `Instant`).
    first_bytes_age_us: Option<u64>,
    kernel_time: bool,
}

impl ReplicaSide {
    /// The request for a `ping` frame, once the stream is listed.
    #[inline]
    pub fn poke(&self) -> Option<&Arc<tokio::sync::Notify>> {
        self.stream.as_ref()?.poke.as_ref()
    }

    fn stream(&mut self) -> &mut ReplicaStream {
        self.stream.get_or_insert_with(Box::default)
    }

    /// What moves with the session (`None`: the client never spoke as a
    /// replica). The link's entry is dropped here: this process no longer
    /// streams to it.
    pub(super) fn take_moved(&mut self) -> Option<MovedReplica> {
        let stream = self.stream.take()?;
        let (age, kernel_time) = match self.first_bytes {
            Some((at, kernel)) => (Some(at.elapsed().as_micros() as u64), kernel),
            None => (None, false),
        };
        Some(MovedReplica {
            listening_port: stream.listening_port,
            framing: stream.framing,
            command: stream.command.map(str::to_string),
            first_bytes_age_us: age,
            kernel_time,
        })
    }
}

/// The frame Kvrocks masters send as a heartbeat, which replicas skip.
const PING_FRAME: &[u8] = b"$4\r\nping\r\n";

/// Kvrocks' answer to a `PSYNC` it can serve from its WAL.
const PSYNC_OK: &[u8] = b"+OK\r\n";

/// Where a replication stream stands. Kvrocks answers `PSYNC` with `+OK`
/// and then sends bulk strings (`$<len>\r\n<batch>\r\n`); anything
/// else (Redis' `+FULLRESYNC` and RDB, an error) is not framed. Followed
/// byte by byte through the short lines, in one step through a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum WalFraming {
    /// The answer to `PSYNC`: this many bytes of `+OK\r\n` seen.
    Answer(usize),
    /// A frame's header: before its `$` (`None`), or its length's digits so far.
    Header(Option<u64>),
    /// The header's `\n` is due.
    HeaderEnd(u64),
    /// Inside a frame: this many bytes (its CRLF included) to come.
    Payload(u64),
    /// Not a Kvrocks incremental stream.
    Unknown,
}

impl Default for WalFraming {
    fn default() -> Self {
        WalFraming::Answer(0)
    }
}

impl WalFraming {
    /// Follows `bytes`, the next part of the stream.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            if let WalFraming::Payload(left) = self {
                let take = (*left).min(bytes.len() as u64);
                *left -= take;
                bytes = &bytes[take as usize..];
                if *left == 0 {
                    *self = WalFraming::Header(None);
                }
                continue;
            }
            *self = self.next(b);
            if *self == WalFraming::Unknown {
                return;
            }
            bytes = rest;
        }
    }

    /// The state after byte `b` (outside a payload).
    fn next(self, b: u8) -> WalFraming {
        use WalFraming::*;
        match self {
            Answer(seen) if PSYNC_OK.get(seen) == Some(&b) => {
                if seen + 1 == PSYNC_OK.len() {
                    Header(None)
                } else {
                    Answer(seen + 1)
                }
            }
            // A bulk header first: the answer was taken for an earlier
            // request's (a client that pipelined REPLCONF and PSYNC gets
            // one `+OK` from Kvrocks, which drops the first one).
            Header(None) | Answer(0) if b == b'$' => Header(Some(0)),
            Header(Some(len)) if b.is_ascii_digit() => len
                .checked_mul(10)
                .and_then(|l| l.checked_add(u64::from(b - b'0')))
                .map_or(Unknown, |l| Header(Some(l))),
            Header(Some(len)) if b == b'\r' => HeaderEnd(len),
            HeaderEnd(len) if b == b'\n' => Payload(len.saturating_add(2)),
            _ => Unknown,
        }
    }

    /// Between two frames of a Kvrocks incremental stream.
    pub(super) fn at_boundary(&self) -> bool {
        *self == WalFraming::Header(None)
    }
}

impl Session {
    /// `REPLCONF ...` forwarded: remembers `listening-port`.
    #[cold]
    pub(super) fn replconf(&mut self, head: &RequestHead) {
        let args = arguments(&self.unhandled()[..head.len], head.inline);
        if let [_, option, port, ..] = args.as_slice() {
            if option.eq_ignore_ascii_case(b"listening-port") {
                self.replica.stream().listening_port =
                    std::str::from_utf8(port).ok().and_then(|p| p.parse().ok());
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
        let stream = self.replica.stream.get_or_insert_with(Box::default);
        let link = ReplicaLink {
            peer,
            listening_port: stream.listening_port,
            first_bytes,
            kernel_time,
            command,
            poke: Arc::default(),
        };
        tracing::debug!(?link, "a replication stream starts");
        stream.command = Some(command);
        stream.poke = Some(Arc::clone(&link.poke));
        stream.link = Some(self.gate.role().replicas.attach(link));
    }

    /// A replica's side moved here from the predecessor: its stream is
    /// listed again, as it was there (`replica.peer` is set first).
    #[cold]
    pub(super) fn put_replica(&mut self, moved: MovedReplica) {
        let now = Instant::now();
        self.replica.first_bytes = moved.first_bytes_age_us.map(|age| {
            let at = now
                .checked_sub(std::time::Duration::from_micros(age))
                .unwrap_or(now);
            (at, moved.kernel_time)
        });
        let command = match moved.command.as_deref() {
            Some("psync") => Some("psync"),
            Some("sync") => Some("sync"),
            _ => None,
        };
        let stream = self.replica.stream();
        stream.listening_port = moved.listening_port;
        stream.framing = moved.framing;
        let (Some(command), Some(peer), Some((first_bytes, kernel_time))) =
            (command, self.replica.peer, self.replica.first_bytes)
        else {
            return;
        };
        let link = ReplicaLink {
            peer,
            listening_port: moved.listening_port,
            first_bytes,
            kernel_time,
            command,
            poke: Arc::default(),
        };
        let stream = self.replica.stream();
        stream.command = Some(command);
        stream.poke = Some(Arc::clone(&link.poke));
        stream.link = Some(self.gate.role().replicas.attach(link));
    }

    /// The stream passes `from_backend[from..]` on to the replica.
    pub(super) fn streamed(&mut self, from: usize) {
        if let Some(stream) = self.replica.stream.as_mut().filter(|s| s.link.is_some()) {
            stream.framing.feed(&self.from_backend[from..]);
        }
    }

    /// A failover asked for a `ping` frame: one goes into the stream if it
    /// stands between two frames (else none: the frames passing wake the
    /// replica anyway).
    #[cold]
    pub(super) fn poked(&mut self) {
        if self
            .replica
            .stream
            .as_ref()
            .is_some_and(|s| s.framing.at_boundary())
        {
            self.to_client.extend_from_slice(PING_FRAME);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(parts: &[&[u8]]) -> WalFraming {
        let mut f = WalFraming::default();
        for p in parts {
            f.feed(p);
        }
        f
    }

    #[test]
    fn a_kvrocks_stream_is_followed_frame_by_frame_in_any_pieces() {
        let stream: &[u8] = b"+OK\r\n$5\r\nab\r\nc\r\n$4\r\nping\r\n";
        assert!(fed(&[stream]).at_boundary());
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert!(fed(&[a, b]).at_boundary(), "cut at {cut}");
        }
        let one_by_one: Vec<&[u8]> = stream.chunks(1).collect();
        assert!(fed(&one_by_one).at_boundary());
        // The answer absorbed by an earlier request: the frames still count.
        assert!(fed(&[b"$4\r\nping\r\n"]).at_boundary());
        assert!(!fed(&[b"$4\r\npi"]).at_boundary());
        // Inside a frame, or inside its header: not a boundary.
        assert!(!fed(&[b"+OK\r\n$5\r\nab"]).at_boundary());
        assert!(!fed(&[b"+OK\r\n$5"]).at_boundary());
        assert!(!fed(&[b"+OK\r\n$5\r\nab\r\nc\r"]).at_boundary());
        assert!(!fed(&[b"+O"]).at_boundary());
    }

    #[test]
    fn other_streams_are_not_framed() {
        assert_eq!(
            fed(&[b"+FULLRESYNC 8de1 0\r\n$3\r\nabc"]),
            WalFraming::Unknown
        );
        assert_eq!(fed(&[b"-ERR no\r\n"]), WalFraming::Unknown);
        assert_eq!(fed(&[b"+OK\r\n*1\r\n"]), WalFraming::Unknown);
        assert_eq!(fed(&[&[b'+'; 100]]), WalFraming::Unknown);
        assert_eq!(
            fed(&[b"+OK\r\n$99999999999999999999999\r\n"]),
            WalFraming::Unknown
        );
        assert!(!WalFraming::Unknown.at_boundary());
    }
}
