//! The socket under a TLS client connection ([`TlsSocket`]): it notes where
//! the TLS records it reads end, so that a session knows whether rustls
//! holds half a record, which would be lost if the connection's keys moved
//! to the successor at an upgrade now ([`super::keys`]). rustls opens
//! every whole record it has as soon as it reads, but says nothing of a
//! partial one.
//!
//! The cost is a look at each record's 5-byte header as it passes: a few
//! instructions per record, on the TLS path only.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::keys::HEADER_LEN;

/// A client's TCP socket, under rustls.
#[derive(Debug)]
pub struct TlsSocket {
    tcp: TcpStream,
    records: RecordEdges,
}

impl TlsSocket {
    pub fn new(tcp: TcpStream) -> TlsSocket {
        TlsSocket {
            tcp,
            records: RecordEdges::default(),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// What was read ends where a record ends.
    #[inline]
    pub fn at_record_edge(&self) -> bool {
        self.records.at_edge()
    }
}

/// Where the records in a byte stream end: how much of the current
/// record's header has been seen, and how much of its body is to come.
#[derive(Debug, Default, Clone, Copy)]
struct RecordEdges {
    header_seen: usize,
    /// The length field's first byte, once seen.
    len_high: u8,
    body_left: usize,
}

impl RecordEdges {
    fn at_edge(&self) -> bool {
        self.header_seen == 0 && self.body_left == 0
    }

    fn pass(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            match self.header_seen {
                3 => self.len_high = bytes[0],
                4 => self.body_left = usize::from(u16::from_be_bytes([self.len_high, bytes[0]])),
                _ => {}
            }
            self.header_seen = (self.header_seen + 1) % HEADER_LEN;
            bytes = &bytes[1..];
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if read.is_ready() {
            this.records.pass(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for TlsSocket {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::RecordEdges;

    #[test]
    fn record_edges_are_found_however_the_bytes_are_cut() {
        // Three records: 2 bytes, 0 bytes, 300 bytes of body.
        let mut wire = vec![23, 3, 3, 0, 2, 9, 9, 23, 3, 3, 0, 0, 23, 3, 3, 1, 44];
        wire.extend(std::iter::repeat_n(7u8, 300));
        let edges = [0, 7, 12, wire.len()];
        for cut in 1..wire.len() {
            let mut r = RecordEdges::default();
            for (at, piece) in wire.chunks(cut).enumerate() {
                r.pass(piece);
                let end = ((at + 1) * cut).min(wire.len());
                assert_eq!(r.at_edge(), edges.contains(&end), "cut {cut} at {end}");
            }
        }
    }
}
