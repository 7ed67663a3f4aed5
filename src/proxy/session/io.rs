//! What a session needs of its client's connection, over plain TCP or TLS
//! ([`ClientIo`]).
//!
//! The session's loop ([`super::driver`]) is generic over it, so the plain
//! TCP path is compiled as it was (every method below inlines to the
//! `TcpStream` call it was before; [`ClientIo::unflushed`] is a constant
//! `false` there, and its branch disappears), and TLS gets its own copy.
//!
//! TLS differs in three ways. A write may leave encrypted records in
//! rustls' buffer when the socket is full, so the loop flushes while
//! [`ClientIo::unflushed`] says so. The kernel's receive time of the first
//! bytes is that of the handshake, not of the first request, so none is
//! given. And a TLS connection cannot move to another process at an
//! upgrade (rustls cannot hand its keys and sequence numbers over): it is
//! closed between two requests instead, and the client reconnects.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::proxy::node_conn::{dup_socket, try_write_tls};
use crate::proxy::rxtime::{self, Stamped};

/// A client's connection as a session drives it.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The client's bytes are encrypted on the wire: its session moves to
    /// another leasegate over TLS too (`tls.handover`).
    const TLS: bool;

    /// Sends what the connection takes now, without waiting
    /// (`WouldBlock` when it takes nothing now).
    fn try_send(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// The connection's first read, with the kernel's receive time of its
    /// bytes where known ([`rxtime`]).
    fn poll_first_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Stamped>>;

    /// Output accepted by a write but not yet handed to the socket.
    fn unflushed(&self) -> bool;

    /// A second descriptor of the socket, for the successor process at an
    /// upgrade (`None`: the connection cannot move).
    fn dup_for_move(&self) -> Option<std::net::TcpStream>;

    /// The client's address.
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl ClientIo for TcpStream {
    const TLS: bool = false;

    #[inline]
    fn try_send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }

    #[inline]
    fn poll_first_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Stamped>> {
        rxtime::poll_read_stamped(self, cx, buf)
    }

    #[inline(always)]
    fn unflushed(&self) -> bool {
        false
    }

    fn dup_for_move(&self) -> Option<std::net::TcpStream> {
        dup_socket(self)
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| a.ip())
    }
}

impl ClientIo for TlsStream<TcpStream> {
    const TLS: bool = true;

    fn try_send(&mut self, buf: &[u8]) -> io::Result<usize> {
        try_write_tls(self, buf)
    }

    fn poll_first_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Stamped>> {
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf).map_ok(|read| Stamped {
            read,
            arrived: None,
        })
    }

    #[inline]
    fn unflushed(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    fn dup_for_move(&self) -> Option<std::net::TcpStream> {
        None
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.get_ref().0.peer_addr().ok().map(|a| a.ip())
    }
}
