//! A TLS 1.3 connection that moved here from the predecessor at an upgrade
//! ([`ResumedTls`]): its socket and its keys ([`MovedTls`]), and the record
//! layer that goes on where rustls stopped, so the client sees no
//! reconnection. It serves the session as rustls' stream did (the session
//! loop is generic over both), and moves on again at the next upgrade.
//!
//! What a TLS 1.3 peer may send after the handshake is application data,
//! alerts, session tickets (a server: the node) and key updates. Data is
//! read; tickets are dropped (this side resumes no sessions); a
//! `close_notify` ends the connection as a FIN does (`user_canceled`
//! before it is let pass); any other alert, a key update (its new key
//! comes from a secret rustls did not give out) or a record that fails its
//! check closes it with an error, as rustls would.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::keys::{
    MovedTls, Protection, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER_LEN, MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
};

/// What one read from the socket asks for at most.
const READ_SIZE: usize = 4096;
/// Sealed records buffered before a write waits for the socket.
const MAX_UNSENT: usize = 64 << 10;
/// Handshake bytes kept while a message is incomplete (a session ticket is
/// a few hundred bytes).
const MAX_HANDSHAKE: usize = 64 << 10;
/// Handshake message types a peer may send after the handshake (§4.6).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// The alert a TLS 1.3 peer may send before its `close_notify`.
const USER_CANCELED: u8 = 90;
/// TLS 1.3's `close_notify` alert (warning level, description 0).
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// A record at the front of `raw`, opened in place.
#[derive(Debug, Clone, Copy)]
struct Opened {
    /// The whole record's length (header included): dropped once read.
    record_len: usize,
    /// Its application data not yet read: `raw[from..to]`.
    from: usize,
    to: usize,
}

/// A moved TLS connection: its socket and both directions' protection.
pub struct ResumedTls {
    tcp: TcpStream,
    seal: Protection,
    open: Protection,
    /// Bytes read from the socket: records, the first of them perhaps
    /// opened already ([`Opened`]), the last perhaps partial.
    raw: BytesMut,
    /// The record at the front of `raw`, opened in place: its application
    /// data not yet read.
    opened: Option<Opened>,
    /// Handshake messages opened, not yet whole.
    handshake: BytesMut,
    /// Sealed records, not yet written.
    unsent: BytesMut,
    /// The peer's `close_notify` came: reads see the end of the stream.
    peer_closed: bool,
    /// This side's `close_notify` is sealed (at shutdown).
    closing: bool,
}

impl ResumedTls {
    /// Goes on with `tcp` under `keys`.
    pub fn new(tcp: TcpStream, keys: &MovedTls) -> io::Result<ResumedTls> {
        let (seal, open) = keys.protections()?;
        Ok(ResumedTls {
            tcp,
            seal,
            open,
            raw: BytesMut::new(),
            opened: None,
            handshake: BytesMut::new(),
            unsent: BytesMut::new(),
            peer_closed: false,
            closing: false,
        })
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sealed records not on the socket yet.
    #[inline]
    pub fn unflushed(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Bytes taken from the socket that were not read yet: a record half
    /// received, or data opened and not read.
    pub fn holds_input(&self) -> bool {
        !self.raw.is_empty() || !self.handshake.is_empty()
    }

    /// Whether it may move on now: nothing held either way, not closing.
    pub fn may_move(&self) -> bool {
        !self.holds_input() && self.unsent.is_empty() && !self.peer_closed && !self.closing
    }

    /// Its keys as they stand, for the next successor.
    pub fn keys(&self) -> MovedTls {
        let (suite, tx) = self.seal.keys();
        let (_, rx) = self.open.keys();
        MovedTls::from_parts(suite, tx, rx)
    }

    /// Opens the first record of `raw` if it is whole, in place: its
    /// application data is then read from there ([`Opened`]); anything
    /// else is taken now and dropped. `false`: no whole record yet.
    fn open_record(&mut self) -> io::Result<bool> {
        if self.raw.len() < HEADER_LEN {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([self.raw[3], self.raw[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(invalid(format!("a TLS record of {len} bytes is too long")));
        }
        let record_len = HEADER_LEN + len;
        if self.raw.len() < record_len {
            return Ok(false);
        }
        let (typ, content) = self.open.open(&mut self.raw[..record_len])?;
        if typ == APPLICATION_DATA {
            self.opened = Some(Opened {
                record_len,
                from: content.start,
                to: content.end,
            });
            return Ok(true);
        }
        let content = &self.raw[content];
        match typ {
            ALERT if content == CLOSE_NOTIFY => self.peer_closed = true,
            ALERT if content.get(1) == Some(&USER_CANCELED) => {}
            ALERT => {
                let description = content.get(1).copied().unwrap_or_default();
                return Err(invalid(format!("the peer sent TLS alert {description}")));
            }
            HANDSHAKE => {
                self.handshake.extend_from_slice(content);
                self.handshake_messages()?;
            }
            other => {
                return Err(invalid(format!(
                    "an unexpected TLS record (type {other}) after the handshake"
                )))
            }
        }
        self.raw.advance(record_len);
        Ok(true)
    }

    /// Takes the whole handshake messages: a server's session tickets
    /// (this side does not resume sessions) are dropped; a key update ends
    /// the connection.
    fn handshake_messages(&mut self) -> io::Result<()> {
        while self.handshake.len() >= 4 {
            let len = usize::from(self.handshake[1]) << 16
                | usize::from(self.handshake[2]) << 8
                | usize::from(self.handshake[3]);
            if self.handshake.len() < 4 + len {
                break;
            }
            match self.handshake[0] {
                NEW_SESSION_TICKET => self.handshake.advance(4 + len),
                KEY_UPDATE => {
                    return Err(invalid(
                        "the peer updated its TLS keys, which a connection moved at an upgrade \
                         cannot follow: closed (the client reconnects)"
                            .into(),
                    ))
                }
                other => {
                    return Err(invalid(format!(
                        "an unexpected TLS handshake message (type {other}) after the handshake"
                    )))
                }
            }
        }
        if self.handshake.len() > MAX_HANDSHAKE {
            return Err(invalid(
                "a TLS handshake message too long after the handshake".into(),
            ));
        }
        Ok(())
    }

    /// Writes sealed records until none is left or the socket is full.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unsent.is_empty() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.unsent) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.unsent.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ResumedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(opened) = this.opened.as_mut() {
                let n = (opened.to - opened.from).min(buf.remaining());
                buf.put_slice(&this.raw[opened.from..opened.from + n]);
                opened.from += n;
                if opened.from == opened.to {
                    this.raw.advance(opened.record_len);
                    this.opened = None;
                }
                if n > 0 || buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.open_record()? {
                continue;
            }
            // As rustls reads: 4 KiB at a time, so that a connection's
            // buffer stays small (a longer record takes a few reads).
            this.raw.reserve(READ_SIZE);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.tcp), cx, &mut this.raw);
            match read {
                Poll::Ready(Ok(0)) if this.raw.is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(invalid(
                        "the connection ended inside a TLS record".into(),
                    )))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for ResumedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unsent.len() >= MAX_UNSENT {
            match this.poll_send_unsent(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.unsent.len() >= MAX_UNSENT => return Poll::Pending,
                _ => {}
            }
        }
        let take = buf.len().min(MAX_UNSENT);
        for chunk in buf[..take].chunks(MAX_PLAINTEXT) {
            this.seal.seal(APPLICATION_DATA, chunk, &mut this.unsent)?;
        }
        // Accepted either way; what the socket does not take now waits for
        // a flush.
        if let Poll::Ready(Err(e)) = this.poll_send_unsent(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.seal.seal(ALERT, &CLOSE_NOTIFY, &mut this.unsent)?;
        }
        std::task::ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tls::keys::{Aead, Version};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A resumed connection and the client's end of its socket, with the
    /// client's record protection.
    async fn resumed() -> (ResumedTls, TcpStream, Protection, Protection) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mine, theirs) = MovedTls::pair_for_test(Version::Tls13, Aead::Aes128Gcm, 16);
        let server = ResumedTls::new(accepted.expect("accept").0, &mine).expect("keys");
        let (seal, open) = theirs.protections().expect("keys");
        (server, client.expect("connect"), seal, open)
    }

    fn record(seal: &mut Protection, typ: u8, content: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        seal.seal(typ, content, &mut out).expect("seal");
        out
    }

    /// Reads from `peer` until `len` bytes of plaintext were opened.
    async fn open_all(peer: &mut TcpStream, open: &mut Protection, len: usize) -> Vec<u8> {
        let (mut wire, mut plain) = (BytesMut::new(), Vec::new());
        while plain.len() < len {
            let n = peer.read_buf(&mut wire).await.expect("read");
            assert!(n > 0, "closed after {} bytes", plain.len());
            while wire.len() >= HEADER_LEN {
                let body = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
                if wire.len() < HEADER_LEN + body {
                    break;
                }
                let mut rec = wire.split_to(HEADER_LEN + body);
                let (typ, content) = open.open(&mut rec).expect("opens");
                let content = &rec[content];
                assert_eq!(typ, APPLICATION_DATA);
                plain.extend_from_slice(content);
            }
        }
        plain
    }

    #[tokio::test]
    async fn data_passes_both_ways_in_records_and_moves_on_with_its_sequence_numbers() {
        let (mut server, mut peer, mut seal, mut open) = resumed().await;
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for chunk in big.chunks(MAX_PLAINTEXT) {
            peer.write_all(&record(&mut seal, APPLICATION_DATA, chunk))
                .await
                .expect("send");
        }
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(got, big);
        server.write_all(&big).await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(open_all(&mut peer, &mut open, big.len()).await, big);
        assert!(server.may_move());
        // Moved again: the next successor goes on where this one stopped.
        let keys = server.keys();
        let mut again = ResumedTls::new(server.tcp, &keys).expect("keys");
        peer.write_all(&record(&mut seal, APPLICATION_DATA, b"PING\r\n"))
            .await
            .expect("send");
        let mut ping = [0u8; 6];
        again.read_exact(&mut ping).await.expect("read");
        assert_eq!(&ping, b"PING\r\n");
        again.write_all(b"+PONG\r\n").await.expect("write");
        again.flush().await.expect("flush");
        assert_eq!(open_all(&mut peer, &mut open, 7).await, b"+PONG\r\n");
    }

    #[tokio::test]
    async fn records_are_read_in_small_pieces_and_empty_ones_skipped() {
        let (mut server, mut peer, mut seal, _) = resumed().await;
        let text: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut wire = record(&mut seal, APPLICATION_DATA, b"");
        for chunk in text.chunks(MAX_PLAINTEXT) {
            wire.extend_from_slice(&record(&mut seal, APPLICATION_DATA, chunk));
        }
        peer.write_all(&wire).await.expect("send");
        let mut got = Vec::new();
        let mut piece = [0u8; 7];
        while got.len() < text.len() {
            let n = server.read(&mut piece).await.expect("read");
            assert!(n > 0, "not the end");
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, text);
        assert!(server.may_move(), "nothing held once all is read");
    }

    #[tokio::test]
    async fn half_a_record_is_held_and_not_moved() {
        let (mut server, mut peer, mut seal, _) = resumed().await;
        let rec = record(&mut seal, APPLICATION_DATA, b"GET k\r\n");
        peer.write_all(&rec[..9]).await.expect("half");
        let mut buf = [0u8; 16];
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), server.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing to read yet");
        assert!(server.holds_input() && !server.may_move());
        peer.write_all(&rec[9..]).await.expect("rest");
        let n = server.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET k\r\n");
        assert!(server.may_move());
    }

    #[tokio::test]
    async fn session_tickets_and_user_canceled_pass_unseen_even_split_across_records() {
        let (mut server, mut peer, mut seal, _) = resumed().await;
        let ticket = [&[NEW_SESSION_TICKET, 0, 0, 5][..], &[9; 5]].concat();
        let mut wire = record(&mut seal, HANDSHAKE, &ticket[..6]);
        wire.extend_from_slice(&record(
            &mut seal,
            HANDSHAKE,
            &[&ticket[6..], &ticket[..]].concat(),
        ));
        wire.extend_from_slice(&record(&mut seal, ALERT, &[1, USER_CANCELED]));
        wire.extend_from_slice(&record(&mut seal, APPLICATION_DATA, b"+OK\r\n"));
        peer.write_all(&wire).await.expect("send");
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"+OK\r\n");
        assert!(server.may_move());
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_and_shutdown_sends_one() {
        let (mut server, mut peer, mut seal, mut open) = resumed().await;
        let mut wire = record(&mut seal, APPLICATION_DATA, b"QUIT\r\n");
        wire.extend_from_slice(&record(&mut seal, ALERT, &CLOSE_NOTIFY));
        peer.write_all(&wire).await.expect("send");
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.expect("read to the end");
        assert_eq!(all, b"QUIT\r\n");
        server.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        peer.read_to_end(&mut back).await.expect("read");
        let (typ, content) = open.open(&mut back).expect("opens");
        assert_eq!((typ, &back[content]), (ALERT, &CLOSE_NOTIFY[..]));
    }

    #[tokio::test]
    async fn a_key_update_a_forged_record_or_a_fatal_alert_closes_with_a_reason() {
        type Make = fn(&mut Protection) -> BytesMut;
        let cases: [(&str, Make); 4] = [
            ("updated its TLS keys", |s| {
                record(s, HANDSHAKE, &[24, 0, 0, 1, 0])
            }),
            ("integrity", |s| {
                let mut r = record(s, APPLICATION_DATA, b"SET k v\r\n");
                r[HEADER_LEN + 1] ^= 0x40;
                r
            }),
            ("alert", |s| record(s, ALERT, &[2, 40])),
            ("too long", |_| {
                BytesMut::from(&[23u8, 3, 3, 0xff, 0xff][..])
            }),
        ];
        for (reason, make) in cases {
            let (mut server, mut peer, mut seal, _) = resumed().await;
            peer.write_all(&make(&mut seal)).await.expect("send");
            let mut buf = [0u8; 64];
            let err = server.read(&mut buf).await.expect_err(reason);
            assert!(err.to_string().contains(reason), "{reason}: {err}");
        }
    }
}
