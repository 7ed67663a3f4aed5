//! Connections for the HTTP clients that talk to the controller: plain
//! for `http://`, TLS for `https://` (trusting `controller.ca_file`).
//!
//! A lease grant travels in the controller's answer: over a network an
//! operator does not control, it must come over TLS, or anyone on the path
//! could hand this node a lease. hyper's pooled client takes any
//! connector; this one wraps hyper-util's `HttpConnector` (connect
//! timeout, `TCP_NODELAY`) and adds the handshake (rustls, as everywhere
//! in leasegate) rather than pulling in hyper-rustls for a few lines.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The refusal of an `https://` controller without its CAs.
pub const CONTROLLER_CA_MISSING: &str =
    "an https:// controller needs controller.ca_file (the CAs to trust)";

/// Opens plain or TLS connections, as the URL's scheme says.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    /// The CAs an `https://` peer's certificate must chain to (`None`:
    /// `https://` is refused, naming the missing setting).
    tls: Option<Arc<ClientConfig>>,
    /// What an `https://` URL without `tls` is refused with: the setting
    /// that names the CAs where this connector is used.
    missing_ca: &'static str,
}

impl Connector {
    /// Connects give up after `timeout` (the handshake has the rest of the
    /// request's own bound).
    /// `missing_ca`: the refusal of an `https://` URL when `tls` is `None`.
    pub fn new(
        timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
        missing_ca: &'static str,
    ) -> Connector {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        // `https://` too: the TLS is added here.
        http.enforce_http(false);
        Connector {
            http,
            tls,
            missing_ca,
        }
    }
}

/// Whether two loads of the TLS settings are the same one: a reload makes
/// a new one, after which a client is built again.
pub fn same_settings(a: &Option<Arc<ClientConfig>>, b: &Option<Arc<ClientConfig>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A connection to the controller.
pub enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let tls = self.tls.clone();
        let missing_ca = self.missing_ca;
        let connecting = self.http.call(uri.clone());
        Box::pin(async move {
            if !https {
                return Ok(Conn::Plain(connecting.await?));
            }
            let Some(tls) = tls else {
                return Err(missing_ca.into());
            };
            let host = uri
                .host()
                .ok_or("the controller's URL has no host")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = ServerName::try_from(host).map_err(|e| {
                format!("the controller's host cannot be checked in a certificate: {e}")
            })?;
            let tcp = connecting.await?.into_inner();
            let stream = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(s) => s.connected(),
            Conn::Tls(_) => Connected::new(),
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
