//! A connection to a node, plain or over TLS (`backend.tls`), or to another
//! leasegate (on its plaintext `listen`, or on its TLS listener for a TLS
//! client's session at a hand-over and for control connections:
//! [`PeerTls`]).
//!
//! One enum rather than a type parameter: a session's node connection
//! changes kind at a hand-over (from its TLS node to the new master's
//! leasegate, and back). The plain arm costs one predictable branch per
//! read and write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::proxy::tls::{self, MovedTls, ResumedTls, TlsSocket};

/// A connection a session or the control plane talks RESP over.
pub enum NodeConn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TlsSocket>>),
    /// A TLS connection that moved here from the predecessor at an upgrade.
    Resumed(Box<ResumedTls>),
}

/// A connection (a client's or a node's) on its way to the successor at an
/// upgrade: a second descriptor of its socket (this process's closes
/// without a FIN) and, over TLS, its keys and sequence numbers.
#[derive(Debug)]
pub struct MovedConn {
    pub socket: std::net::TcpStream,
    pub tls: Option<MovedTls>,
}

impl MovedConn {
    /// A plain connection.
    pub fn plain(tcp: &TcpStream) -> Option<MovedConn> {
        Some(MovedConn {
            socket: dup_socket(tcp)?,
            tls: None,
        })
    }

    /// A rustls connection of `version`, with the secrets it gave out
    /// (`None`, logged, when it gave none).
    pub fn rustls(
        socket: &TlsSocket,
        version: Option<tls::keys::Version>,
        secrets: Result<rustls::ExtractedSecrets, rustls::Error>,
    ) -> Option<MovedConn> {
        let keys = match secrets {
            Ok(secrets) => MovedTls::from_rustls(secrets, version?)?,
            Err(e) => {
                tracing::warn!(error = %e, "a TLS connection's keys could not be taken out");
                return None;
            }
        };
        Some(MovedConn {
            socket: dup_socket(socket.tcp())?,
            tls: Some(keys),
        })
    }

    /// A connection that moved here before, moving on.
    pub fn resumed(tls: &ResumedTls) -> Option<MovedConn> {
        Some(MovedConn {
            socket: dup_socket(tls.tcp())?,
            tls: Some(tls.keys()),
        })
    }
}

/// How leasegate reaches nodes over TLS: the CAs it trusts, its own
/// certificate if the node asks for one (Redis does by default,
/// `tls-auth-clients yes`), and the name it expects in the node's
/// certificate (default: the host of the address it connects to).
#[derive(Debug)]
pub struct NodeTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<String>,
}

impl NodeTls {
    /// The name checked in the certificate of the node at `addr`.
    fn name_for(&self, addr: &str) -> Result<ServerName<'static>, io::Error> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' cannot be checked in a certificate: {e}"),
            )
        })
    }

    /// The TLS handshake over `tcp`, to the node at `addr`.
    pub async fn handshake(&self, tcp: TcpStream, addr: &str) -> io::Result<NodeConn> {
        let name = self.name_for(addr)?;
        let stream = TlsConnector::from(Arc::clone(&self.config))
            .connect(name, TlsSocket::new(tcp))
            .await?;
        Ok(NodeConn::Tls(Box::new(stream)))
    }
}

/// How a TLS client's session reaches another leasegate at a hand-over
/// (`tls.handover: tls`): that leasegate's TLS listener, on the host of its
/// `listen` address and at `port`, its certificate checked for that host,
/// this leasegate's own certificate presented.
#[derive(Debug)]
pub struct PeerTls {
    pub tls: NodeTls,
    pub port: u16,
}

impl PeerTls {
    /// The TLS listener of the leasegate whose `listen` address is `addr`.
    pub fn address(&self, addr: &str) -> String {
        let host = host_of(addr);
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A write to a TLS stream without waiting: polled with a waker that does
/// nothing (`WouldBlock` if it takes nothing now); what it cannot take, the
/// session loop's write branch sends with the task's waker.
pub fn try_write_tls<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_write(&mut cx, buf) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// A blocking-mode-agnostic std copy of `stream`'s socket (the same open
/// socket, a new descriptor): what goes to the successor at an upgrade;
/// this process's descriptor closes without a FIN (the socket stays open
/// while another descriptor refers to it).
pub fn dup_socket(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    Some(std::net::TcpStream::from(fd))
}

impl NodeConn {
    /// Sends what the connection takes now, without waiting.
    #[inline]
    pub fn try_send(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NodeConn::Plain(s) => s.try_write(buf),
            NodeConn::Tls(s) => try_write_tls(s.as_mut(), buf),
            NodeConn::Resumed(s) => try_write_tls(s.as_mut(), buf),
        }
    }

    /// Output a write accepted that is not on the socket yet (TLS records).
    #[inline]
    pub fn unflushed(&self) -> bool {
        match self {
            NodeConn::Plain(_) => false,
            NodeConn::Tls(s) => s.get_ref().1.wants_write(),
            NodeConn::Resumed(s) => s.unflushed(),
        }
    }

    /// The connection is TLS (its keys move with it at an upgrade).
    pub fn is_tls(&self) -> bool {
        !matches!(self, NodeConn::Plain(_))
    }

    /// Bytes taken from the socket not yet read (TLS: a record half
    /// received, or opened and not read): a session about to move reads on.
    pub fn holds_input(&mut self) -> bool {
        match self {
            NodeConn::Plain(_) => false,
            NodeConn::Tls(s) => {
                let (socket, conn) = s.get_mut();
                tls::holds_input(socket, conn)
            }
            NodeConn::Resumed(s) => s.holds_input(),
        }
    }

    /// Whether the connection may move to the successor process at an
    /// upgrade now (over TLS: TLS 1.2 or 1.3, nothing half-read or unsent).
    pub fn may_move(&mut self) -> bool {
        match self {
            NodeConn::Plain(_) => true,
            NodeConn::Tls(s) => {
                let (socket, conn) = s.get_mut();
                tls::may_move(socket, conn)
            }
            NodeConn::Resumed(s) => s.may_move(),
        }
    }

    /// The socket (a second descriptor of it: this process's closes
    /// without a FIN) and, over TLS, its keys, for the successor (`None`:
    /// it cannot move).
    pub fn into_moved(self) -> Option<MovedConn> {
        match self {
            NodeConn::Plain(s) => MovedConn::plain(&s),
            NodeConn::Tls(s) => {
                let (socket, conn) = s.into_inner();
                MovedConn::rustls(
                    &socket,
                    tls::version(&conn),
                    conn.dangerous_extract_secrets(),
                )
            }
            NodeConn::Resumed(s) => MovedConn::resumed(&s),
        }
    }
}

impl AsyncRead for NodeConn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeConn::Tls(s) => warn_failed(Pin::new(s.as_mut()).poll_read(cx, buf)),
            NodeConn::Resumed(s) => warn_failed(Pin::new(s.as_mut()).poll_read(cx, buf)),
        }
    }
}

/// A TLS read that failed is logged: the node refused leasegate's
/// certificate (TLS 1.3 says so after the handshake), or the TLS stream
/// broke.
fn warn_failed(read: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
    if let Poll::Ready(Err(e)) = &read {
        tracing::warn!(error = %e, "TLS connection to the node failed");
    }
    read
}

impl AsyncWrite for NodeConn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            NodeConn::Resumed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeConn::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            NodeConn::Resumed(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            NodeConn::Resumed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("node-1.example:6666"), "node-1.example");
        assert_eq!(host_of("[::1]:6379"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }
}
