//! TLS for clients (`tls.listen`): the certificate and key leasegate
//! presents, the CAs a client certificate must chain to (`tls.ca_file`,
//! which makes one required), read from PEM files at start and again at
//! every reload ([`TlsFiles::server_config`]), and the handshake of one
//! accepted connection ([`handshake`]).
//!
//! A TLS connection, a client's or a node's, moves to the successor at an
//! in-place upgrade with its keys: [`may_move`] says when rustls holds
//! nothing half-read or unsent ([`socket`] knows where records end),
//! [`keys`] carries the keys and protects records with them, and
//! [`resumed`] is the connection going on in the successor.
//!
//! rustls (with its default provider, aws-lc-rs) rather than OpenSSL: no
//! C library to match at run time, and a handshake that fails says why in
//! words.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub mod keys;
pub mod resumed;
pub mod socket;

pub use keys::MovedTls;
pub use resumed::ResumedTls;
pub use socket::TlsSocket;

/// A TLS client's connection as rustls serves it.
pub type ClientTls = tokio_rustls::server::TlsStream<TlsSocket>;

/// Whether a rustls connection may leave for the successor now: TLS 1.2
/// or 1.3, its handshake over, nothing unsent, nothing held unread
/// ([`holds_input`]).
pub fn may_move<D>(socket: &TlsSocket, conn: &mut rustls::ConnectionCommon<D>) -> bool {
    version(conn).is_some()
        && !conn.is_handshaking()
        && !conn.wants_write()
        && !holds_input(socket, conn)
}

/// Whether rustls holds bytes taken from the socket that were not read:
/// it opens every whole record as it reads, so these are a record half
/// received, or data opened and not read (or the peer's `close_notify`:
/// read on to the end, the session ends here).
pub fn holds_input<D>(socket: &TlsSocket, conn: &mut rustls::ConnectionCommon<D>) -> bool {
    !socket.at_record_edge()
        || conn.process_new_packets().map_or(true, |io| {
            io.plaintext_bytes_to_read() > 0 || io.peer_has_closed()
        })
}

/// The record protection of a rustls connection's version.
pub fn version<D>(conn: &rustls::ConnectionCommon<D>) -> Option<keys::Version> {
    match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => Some(keys::Version::Tls13),
        rustls::ProtocolVersion::TLSv1_2 => Some(keys::Version::Tls12),
        _ => None,
    }
}

/// What a client that speaks plaintext to the TLS port is told, in
/// plaintext, before the connection closes.
pub const PLAINTEXT_ON_TLS_PORT: &[u8] =
    b"-ERR this port speaks TLS (tls.listen): connect with TLS, or to the plaintext port\r\n";

/// The first byte of every TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The PEM files of a TLS endpoint.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
    /// Client certificates are required, and verified against these CAs.
    pub ca_file: Option<&'a Path>,
}

/// Why a TLS setting cannot be used: the config key, and what is wrong.
pub type TlsError = (&'static str, String);

impl TlsFiles<'_> {
    /// The server side's settings, read from the files now.
    pub fn server_config(&self, keys: TlsKeys) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| (keys.cert_file, e.to_string()))?;
        let builder = match self.ca_file {
            Some(ca) => {
                let roots = root_store(ca).map_err(|e| (keys.ca_file, e))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| (keys.ca_file, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = certificates(self.cert_file).map_err(|e| (keys.cert_file, e))?;
        let key = private_key(self.key_file).map_err(|e| (keys.key_file, e))?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| (keys.key_file, format!("does not match tls.cert_file: {e}")))?;
        // A session's keys move to the successor at an upgrade
        // ([`keys::MovedTls`]); nothing else takes them out.
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}

/// The client side's settings (leasegate to its node, `backend.tls`): the
/// CAs in `ca_file`, and the certificate and key it presents if given.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    keys: TlsKeys,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = root_store(ca_file).map_err(|e| (keys.ca_file, e))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (keys.ca_file, e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_file, key_file)) => {
            let chain = certificates(cert_file).map_err(|e| (keys.cert_file, e))?;
            let key = private_key(key_file).map_err(|e| (keys.key_file, e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    keys.key_file,
                    format!("does not match the certificate: {e}"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    // A session's node connection moves with its keys at an upgrade
    // ([`keys::MovedTls`]); nothing else takes them out.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The config keys the files came from, for errors.
#[derive(Debug, Clone, Copy)]
pub struct TlsKeys {
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub ca_file: &'static str,
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it", path.display()));
    }
    Ok(chain)
}

/// The private key in the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {}", path.display(), pem_error(e)))
}

/// The CAs in the PEM file at `path`.
pub fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not a usable PEM file ({other:?})"),
    }
}

/// Why an accepted connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client spoke plaintext to the TLS port")]
    Plaintext,
    #[error("no handshake within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Failed(io::Error),
}

/// The `result` label of `leasegate_tls_handshakes_total`.
pub const HANDSHAKE_OUTCOMES: [&str; 4] = ["ok", "failed", "plaintext", "timeout"];

impl HandshakeError {
    /// Its `result` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            HandshakeError::Plaintext => "plaintext",
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Failed(_) => "failed",
        }
    }
}

/// Completes the server side of a TLS handshake on `tcp`, bounded by
/// `timeout`. A client whose first byte is not a TLS handshake record is
/// told [`PLAINTEXT_ON_TLS_PORT`] in plaintext and closed.
pub async fn handshake(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> Result<ClientTls, HandshakeError> {
    let work = async {
        let mut first = [0u8; 1];
        let seen = tcp.peek(&mut first).await.map_err(HandshakeError::Failed)?;
        if seen == 1 && first[0] != HANDSHAKE_RECORD {
            let _ = tcp.write_all(PLAINTEXT_ON_TLS_PORT).await;
            let _ = tcp.shutdown().await;
            return Err(HandshakeError::Plaintext);
        }
        TlsAcceptor::from(config)
            .accept(TlsSocket::new(tcp))
            .await
            .map_err(HandshakeError::Failed)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout.as_millis()))?
}
