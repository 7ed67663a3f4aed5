//! Moving a session to a successor process at an upgrade
//! ([`crate::control::upgrade`]): its two sockets and its state leave this
//! process and go on in the new one, so the client never sees the upgrade.
//!
//! A session moves only between requests: nothing owed by the node, no
//! write in flight, no acknowledgement held and no hand-over under way. A
//! replica's stream moves too, at any byte (the stream passes unframed):
//! the replica sees no reconnection, and its link is listed again in the
//! successor with its first bytes' time ([`super::replica::MovedReplica`]).
//! What it buffered goes
//! with it: requests not yet admitted (a request held by a pause is
//! admitted again by the successor, under the pause the successor took
//! over), replies not yet sent, and the node's bytes not yet framed.
//! Connection state goes too: protocol, transaction and WATCH, subscribe or
//! MONITOR mode, who the client is (the controller's connection stays the
//! controller's), `CLIENT REPLY` mode, and what a failover's hand-over
//! replays.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::handover::Replay;
use super::mute::Mute;
use super::replica::MovedReplica;
use super::state::{Lifecycle, Peer, Stall, Stream, Transaction, Watch};
use super::Session;

/// A session's state as it moves.
#[derive(Debug, Serialize, Deserialize)]
pub struct MovedState {
    #[serde(with = "hex")]
    from_client: Vec<u8>,
    #[serde(with = "hex")]
    to_backend: Vec<u8>,
    #[serde(with = "hex")]
    from_backend: Vec<u8>,
    #[serde(with = "hex")]
    to_client: Vec<u8>,
    resp3: bool,
    stream: Stream,
    subscriptions: i64,
    shard_subscriptions: i64,
    transaction: Transaction,
    multis: u64,
    watch: Watch,
    peer: Peer,
    handed_over: bool,
    replay: [Option<Vec<u8>>; 4],
    mute: Mute,
    /// A replica's side (absent from a predecessor that moved no replicas).
    #[serde(default)]
    replica: Option<MovedReplica>,
}

/// A session on its way to the successor: its sockets and its state.
#[derive(Debug)]
pub struct MovedSession {
    pub client: std::net::TcpStream,
    pub backend: std::net::TcpStream,
    pub state: MovedState,
}

impl Session {
    /// Whether the session may move now (see the module documentation).
    pub(super) fn movable(&self) -> bool {
        self.lifecycle == Lifecycle::Open
            && self.owed.is_empty()
            && matches!(self.stall, Stall::None | Stall::Held(_))
            && self.unconfirmed.is_none()
            && self.ack_hold.is_none()
    }

    /// The session's state, taken out of it (the caller has checked
    /// [`Session::movable`]); a held request stays in `from_client`.
    pub(super) fn take_state(&mut self) -> MovedState {
        // A held request gives its place in the pause buffer up here; the
        // successor takes one of its own.
        self.stall = Stall::None;
        let replay = std::mem::take(&mut self.replay);
        let bytes = |b: Option<Bytes>| b.map(|b| b.to_vec());
        MovedState {
            from_client: std::mem::take(&mut self.from_client).to_vec(),
            to_backend: std::mem::take(&mut self.to_backend).to_vec(),
            from_backend: std::mem::take(&mut self.from_backend).to_vec(),
            to_client: std::mem::take(&mut self.to_client).to_vec(),
            resp3: self.resp3,
            stream: self.stream,
            subscriptions: self.subscriptions,
            shard_subscriptions: self.shard_subscriptions,
            transaction: self.transaction,
            multis: self.multis,
            watch: self.watch,
            peer: self.peer,
            handed_over: self.handed_over,
            replay: [
                bytes(replay.auth),
                bytes(replay.hello),
                bytes(replay.select),
                bytes(replay.setname),
            ],
            mute: self.mute,
            replica: self.replica.take_moved(),
        }
    }

    /// Puts a moved session's state in place (a fresh session of this
    /// process, before its first turn).
    pub(super) fn put_state(&mut self, state: MovedState) {
        let buf = |v: Vec<u8>| BytesMut::from(&v[..]);
        self.from_client = buf(state.from_client);
        self.to_backend = buf(state.to_backend);
        self.from_backend = buf(state.from_backend);
        self.to_client = buf(state.to_client);
        self.resp3 = state.resp3;
        self.stream = state.stream;
        self.subscriptions = state.subscriptions;
        self.shard_subscriptions = state.shard_subscriptions;
        self.transaction = state.transaction;
        self.multis = state.multis;
        self.watch = state.watch;
        self.peer = state.peer;
        self.handed_over = state.handed_over;
        let [auth, hello, select, setname] = state.replay.map(|b| b.map(Bytes::from));
        self.replay = Replay {
            auth,
            hello,
            select,
            setname,
        };
        self.mute = state.mute;
        if let Some(replica) = state.replica {
            self.put_replica(replica);
        }
    }
}

/// Where sessions go at an upgrade: set once the successor took over, and
/// read by every session at its next turn ([`Mover::is_moving`]).
#[derive(Debug, Default)]
pub struct Mover {
    moving: std::sync::atomic::AtomicBool,
    to: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<MovedSession>>>,
}

impl Mover {
    /// Sessions move to `to` from now on (they are told by the drain signal).
    pub fn start(&self, to: tokio::sync::mpsc::UnboundedSender<MovedSession>) {
        if let Ok(mut slot) = self.to.lock() {
            *slot = Some(to);
        }
        self.moving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether sessions move (rather than close) when they drain.
    #[inline]
    pub fn is_moving(&self) -> bool {
        self.moving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// No more sessions come: the channel closes once those sent are taken.
    pub fn close(&self) {
        if let Ok(mut slot) = self.to.lock() {
            slot.take();
        }
    }

    /// Sends a session on; `false` when there is no one to take it (it is
    /// then closed, as at a drain).
    pub fn send(&self, moved: MovedSession) -> bool {
        let Ok(slot) = self.to.lock() else {
            return false;
        };
        slot.as_ref().is_some_and(|to| to.send(moved).is_ok())
    }
}

/// A session's buffers as hex strings in the hand-over's JSON: a held 2 KB
/// request is 4 KB of text, where serde's default (an array of numbers)
/// made it ~7 KB, and generating and parsing 50 such sessions cost
/// milliseconds of CPU while their clients waited. A predecessor that sent
/// arrays (before this) is still understood.
mod hex {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            text.push(char::from(DIGITS[usize::from(b >> 4)]));
            text.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(Bytes)
    }

    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a lowercase hex string, or an array of bytes")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Vec<u8>, E> {
            let text = text.as_bytes();
            if text.len() % 2 != 0 {
                return Err(E::custom("odd-length hex"));
            }
            text.chunks_exact(2)
                .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| E::custom("not a hex digit"))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            Ok(bytes)
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct B(#[serde(with = "super")] Vec<u8>);

        #[test]
        fn bytes_go_as_hex_and_come_back_from_hex_or_an_array() {
            let all: Vec<u8> = (0..=255).collect();
            let json = serde_json::to_string(&B(all.clone())).expect("encodes");
            assert_eq!(json.len(), 2 + 512);
            assert_eq!(serde_json::from_str::<B>(&json).expect("decodes"), B(all));
            assert_eq!(
                serde_json::from_str::<B>("[1,2,255]").expect("array"),
                B(vec![1, 2, 255])
            );
            assert!(serde_json::from_str::<B>("\"abc\"").is_err());
            assert!(serde_json::from_str::<B>("\"zz\"").is_err());
        }
    }
}
