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
//! given. And a TLS connection moves to another process at an upgrade with
//! its keys and sequence numbers ([`crate::proxy::tls::MovedTls`]), once
//! rustls holds nothing half-read or unsent, and goes on there as a
//! [`ResumedTls`].

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxy::node_conn::{try_write_tls, MovedConn};
use crate::proxy::rxtime::{self, Stamped};
use crate::proxy::tls::{self, ClientTls, ResumedTls};

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

    /// Bytes taken from the socket that the session has not read yet (TLS:
    /// a record half received, or opened and not read). A session about
    /// to move reads on while there are.
    fn holds_input(&mut self) -> bool;

    /// Whether the connection may leave for the successor now.
    fn may_move(&mut self) -> bool;

    /// The socket (a second descriptor of it) and, over TLS, its keys, for
    /// the successor (`None`: it cannot move; it is then closed).
    fn into_moved(self) -> Option<MovedConn>;

    /// The connection's socket.
    fn socket(&self) -> &TcpStream;

    /// The client's address.
    fn peer_ip(&self) -> Option<IpAddr> {
        self.socket().peer_addr().ok().map(|a| a.ip())
    }
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

    #[inline(always)]
    fn holds_input(&mut self) -> bool {
        false
    }

    fn may_move(&mut self) -> bool {
        true
    }

    fn into_moved(self) -> Option<MovedConn> {
        MovedConn::plain(&self)
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

impl ClientIo for ClientTls {
    const TLS: bool = true;

    fn try_send(&mut self, buf: &[u8]) -> io::Result<usize> {
        try_write_tls(self, buf)
    }

    fn poll_first_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Stamped>> {
        read_unstamped(self, cx, buf)
    }

    #[inline]
    fn unflushed(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    fn holds_input(&mut self) -> bool {
        let (socket, conn) = self.get_mut();
        tls::holds_input(socket, conn)
    }

    fn may_move(&mut self) -> bool {
        let (socket, conn) = self.get_mut();
        tls::may_move(socket, conn)
    }

    fn into_moved(self) -> Option<MovedConn> {
        let (socket, conn) = self.into_inner();
        MovedConn::rustls(
            &socket,
            tls::version(&conn),
            conn.dangerous_extract_secrets(),
        )
    }

    fn socket(&self) -> &TcpStream {
        self.get_ref().0.tcp()
    }
}

impl ClientIo for ResumedTls {
    const TLS: bool = true;

    fn try_send(&mut self, buf: &[u8]) -> io::Result<usize> {
        try_write_tls(self, buf)
    }

    fn poll_first_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<Stamped>> {
        read_unstamped(self, cx, buf)
    }

    #[inline]
    fn unflushed(&self) -> bool {
        ResumedTls::unflushed(self)
    }

    fn holds_input(&mut self) -> bool {
        ResumedTls::holds_input(self)
    }

    fn may_move(&mut self) -> bool {
        ResumedTls::may_move(self)
    }

    fn into_moved(self) -> Option<MovedConn> {
        MovedConn::resumed(&self)
    }

    fn socket(&self) -> &TcpStream {
        self.tcp()
    }
}

/// A first read over TLS: the kernel's receive time is the handshake's, not
/// the first request's, so none is given.
fn read_unstamped<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<Stamped>> {
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf).map_ok(|read| Stamped {
        read,
        arrived: None,
    })
}

/// Whether the client has ended its side of `socket` (its FIN or RST came:
/// the kernel's TCP state is `CLOSE_WAIT` or `CLOSE`), seen without reading
/// what it sent before. For a session that stopped reading its client
/// ([`super::Session::unread_behind_a_block`]): the end would only be read
/// after everything before it, which waits for a command that may never
/// return.
pub(super) fn hung_up(socket: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data, written by the kernel up to `len`
    // bytes; `socket` is an open TCP socket for the call's duration.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // linux/tcp_states.h: TCP_CLOSE 7, TCP_CLOSE_WAIT 8.
    rc == 0 && matches!(info.tcpi_state, 7 | 8)
}
