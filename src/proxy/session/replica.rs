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
    /// Set with the entry: a failover's request for a `ping` frame.
    pub poke: Option<Arc<tokio::sync::Notify>>,
    /// Where the stream stands.
    pub framing: WalFraming,
}

/// The frame Kvrocks masters send as a heartbeat, which replicas skip.
const PING_FRAME: &[u8] = b"$4\r\nping\r\n";

/// Where a replication stream stands. Kvrocks answers `PSYNC` with `+OK`
/// and then sends bulk strings (`$<len>\r\n<batch>\r\n`); anything
/// else (Redis' `+FULLRESYNC` and RDB, an error) is not framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WalFraming {
    /// The answer to `PSYNC` is being read (these bytes of it so far).
    Answer(Vec<u8>),
    /// A frame's `$<len>` line (these bytes of it so far).
    Header(Vec<u8>),
    /// Inside a frame: this many bytes (its CRLF included) to come.
    Payload(u64),
    /// Not a Kvrocks incremental stream.
    Unknown,
}

impl Default for WalFraming {
    fn default() -> Self {
        WalFraming::Answer(Vec::new())
    }
}

impl WalFraming {
    /// The longest line read as an answer or a header.
    const MAX_LINE: usize = 64;

    /// Follows `bytes`, the next part of the stream.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self {
                WalFraming::Unknown => return,
                WalFraming::Payload(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        *self = WalFraming::Header(Vec::new());
                    }
                }
                WalFraming::Answer(line) => {
                    let line = std::mem::take(line);
                    *self = WalFraming::line(line, &mut bytes, true);
                }
                WalFraming::Header(line) => {
                    let line = std::mem::take(line);
                    *self = WalFraming::line(line, &mut bytes, false);
                }
            }
        }
    }

    /// Reads a line on from `line`; the next state once it is complete.
    fn line(mut line: Vec<u8>, bytes: &mut &[u8], answer: bool) -> WalFraming {
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            line.extend_from_slice(bytes);
            *bytes = &[];
            return if line.len() > Self::MAX_LINE {
                WalFraming::Unknown
            } else if answer {
                WalFraming::Answer(line)
            } else {
                WalFraming::Header(line)
            };
        };
        line.extend_from_slice(&bytes[..=end]);
        *bytes = &bytes[end + 1..];
        if answer {
            return if line == b"+OK\r\n" {
                WalFraming::Header(Vec::new())
            } else {
                WalFraming::Unknown
            };
        }
        let len = line
            .strip_prefix(b"$")
            .and_then(|l| l.strip_suffix(b"\r\n"))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u64>().ok());
        match len {
            Some(len) => WalFraming::Payload(len + 2),
            None => WalFraming::Unknown,
        }
    }

    /// Between two frames of a Kvrocks incremental stream.
    pub(super) fn at_boundary(&self) -> bool {
        matches!(self, WalFraming::Header(line) if line.is_empty())
    }
}

impl Session {
    /// `REPLCONF ...` forwarded: remembers `listening-port`.
    #[cold]
    pub(super) fn replconf(&mut self, head: &RequestHead) {
        let args = arguments(&self.unhandled()[..head.len], head.inline);
        if let [_, option, port, ..] = args.as_slice() {
            if option.eq_ignore_ascii_case(b"listening-port") {
                self.replica.listening_port =
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
        let link = ReplicaLink {
            peer,
            listening_port: self.replica.listening_port,
            first_bytes,
            kernel_time,
            command,
            poke: Arc::default(),
        };
        tracing::debug!(?link, "a replication stream starts");
        self.replica.poke = Some(Arc::clone(&link.poke));
        self.replica.link = Some(self.gate.role().replicas.attach(link));
    }

    /// The stream passed these bytes on to the replica.
    pub(super) fn streamed(&mut self, bytes_from: usize) {
        if self.replica.link.is_some() {
            let bytes = &self.from_backend[bytes_from..];
            self.replica.framing.feed(bytes);
        }
    }

    /// A failover asked for a `ping` frame: one goes into the stream if it
    /// stands between two frames (else none: the frames passing wake the
    /// replica anyway).
    #[cold]
    pub(super) fn poked(&mut self) {
        if self.replica.framing.at_boundary() {
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
        assert!(!WalFraming::Unknown.at_boundary());
    }
}
