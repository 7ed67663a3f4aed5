//! Certificates made on the fly (rcgen) for the TLS tests: a CA, a server
//! certificate for `localhost` and `127.0.0.1` signed by it, and client
//! certificates, written as PEM files into a temporary directory that goes
//! with the value.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and what it signed, as PEM files.
pub struct Pki {
    dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    name: String,
}

impl Pki {
    /// A new CA named `name`, with `server.crt`/`server.key` signed by it.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_cert = ca_params.clone().self_signed(&ca_key).expect("a CA");
        let pki = Pki {
            dir,
            ca_cert,
            ca_params,
            ca_key,
            name: name.to_string(),
        };
        std::fs::write(pki.path("ca.crt"), pki.ca_cert.pem()).expect("write ca.crt");
        pki.issue("server", &["localhost", "127.0.0.1"], false);
        pki
    }

    /// A file in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Signs a certificate for `names` as `<stem>.crt` and `<stem>.key`
    /// (already expired when `expired`); its paths.
    pub fn issue(&self, stem: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} {stem}", self.name));
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let issuer = self
            .ca_params
            .clone()
            .self_signed(&self.ca_key)
            .expect("the CA again");
        let cert = params
            .signed_by(&key, &issuer, &self.ca_key)
            .expect("signed");
        let (crt, pem_key) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write crt");
        std::fs::write(&pem_key, key.serialize_pem()).expect("write key");
        (crt, pem_key)
    }

    /// The `tls:` section of a leasegate config listening on `port` with
    /// this CA's server certificate (client certificates required when
    /// `client_ca`), trusting this CA's leasegates at a hand-over.
    pub fn listener_yaml(&self, port: u16, client_ca: bool) -> String {
        // Other leasegates of the test are trusted with the same CA
        // (`tls.handover`).
        let mut yaml = format!(
            "tls:\n  listen: 127.0.0.1:{port}\n  cert_file: {}\n  key_file: {}\n  peer_ca_file: {}\n",
            self.path("server.crt").display(),
            self.path("server.key").display(),
            self.path("ca.crt").display()
        );
        if client_ca {
            yaml.push_str(&format!("  ca_file: {}\n", self.path("ca.crt").display()));
        }
        yaml
    }
}

/// A client's TLS connection: rustls over a blocking socket.
pub struct TlsConn(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl std::io::Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl super::Conn for TlsConn {
    fn set_read_timeout(&self, wait: Option<std::time::Duration>) -> std::io::Result<()> {
        self.0.sock.set_read_timeout(wait)
    }
}

/// How a test client connects with TLS.
pub struct TlsClient<'a> {
    /// The CA file it trusts.
    pub ca: &'a Path,
    /// The name it expects the server's certificate to carry (SNI too).
    pub server_name: &'a str,
    /// Its own certificate and key, if it presents one.
    pub identity: Option<(&'a Path, &'a Path)>,
}

impl TlsClient<'_> {
    /// Connects to `port` and completes the handshake; `Err` says why not.
    pub fn connect(&self, port: u16) -> Result<super::Client, String> {
        self.connect_with(port, None, false)
    }

    /// [`TlsClient::connect`], offering only `suite` (a name as rustls
    /// writes it, e.g. `TLS13_AES_128_GCM_SHA256`), or only TLS 1.2.
    pub fn connect_with(
        &self,
        port: u16,
        suite: Option<&str>,
        tls12_only: bool,
    ) -> Result<super::Client, String> {
        let stream = self.handshake(port, suite, tls12_only)?;
        // TLS 1.3: a refused client certificate is said after the handshake.
        let mut client = super::Client::over(Box::new(TlsConn(stream)));
        match client.try_send(&["PING"]) {
            Ok(()) => {}
            Err(e) => return Err(e),
        }
        match client.read_within(std::time::Duration::from_secs(5)) {
            Ok(Some(super::Reply::Status(s))) if s == "PONG" => Ok(client),
            // A node with a password: answered over TLS all the same.
            Ok(Some(super::Reply::Error(e))) if e.starts_with("NOAUTH") => Ok(client),
            Ok(other) => Err(format!("PING answered {other:?}")),
            Err(e) => Err(e),
        }
    }

    /// [`TlsClient::connect`] without its check that the server answers
    /// (a `PING`): for a server whose node is down, where requests wait.
    #[allow(dead_code)]
    pub fn connect_unanswered(&self, port: u16) -> Result<super::Client, String> {
        let stream = self.handshake(port, None, false)?;
        Ok(super::Client::over(Box::new(TlsConn(stream))))
    }

    /// The connection, its handshake complete, as rustls holds it: for a
    /// test that writes records itself.
    pub fn handshake(
        &self,
        port: u16,
        suite: Option<&str>,
        tls12_only: bool,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca).map_err(|e| format!("{e:?}"))? {
            roots
                .add(cert.map_err(|e| format!("{e:?}"))?)
                .map_err(|e| e.to_string())?;
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(suite) = suite {
            provider
                .cipher_suites
                .retain(|s| format!("{:?}", s.suite()) == suite);
            if provider.cipher_suites.is_empty() {
                return Err(format!("no cipher suite {suite}"));
            }
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match tls12_only {
            true => &[&rustls::version::TLS12],
            false => rustls::DEFAULT_VERSIONS,
        };
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match self.identity {
            Some((crt, key)) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(crt)
                    .map_err(|e| format!("{e:?}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{e:?}"))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{e:?}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(self.server_name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
            .map_err(|e| e.to_string())?;
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(super::PATIENCE))
            .map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // The handshake, now: a refusal shows here rather than at the first command.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(stream)
    }
}

/// A TLS front for a plaintext server (the test controller): it accepts
/// TLS with this CA's server certificate and relays each connection to
/// `upstream`.
pub struct TlsRelay {
    pub port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl TlsRelay {
    pub fn start(pki: &Pki, upstream: String) -> TlsRelay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (cert, key) = (pki.path("server.crt"), pki.path("server.key"));
        let files = leasegate::proxy::tls::TlsFiles {
            cert_file: &cert,
            key_file: &key,
            ca_file: None,
        };
        let config = files
            .server_config(leasegate::config::TLS_KEYS)
            .expect("the relay's certificate");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        runtime.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        TlsRelay {
            port,
            _runtime: runtime,
        }
    }
}

/// A redis-server with a TLS port beside its plaintext one (the tests'
/// own view), asking clients for certificates (`tls-auth-clients yes`,
/// Redis' default) and a password; the TLS port.
pub fn tls_node(pki: &Pki, extra: &[&str]) -> (super::RedisServer, u16) {
    let tls_port = super::free_port();
    let mut args = vec!["--tls-port".to_string(), tls_port.to_string()];
    args.extend(redis_tls_files(
        &pki.path("server.crt"),
        &pki.path("server.key"),
        pki,
    ));
    args.extend(["--requirepass", "pw"].map(String::from));
    (start_redis(args, extra), tls_port)
}

/// redis-server's certificate, key and CA arguments.
fn redis_tls_files(crt: &std::path::Path, key: &std::path::Path, pki: &Pki) -> Vec<String> {
    [
        ("--tls-cert-file", crt),
        ("--tls-key-file", key),
        ("--tls-ca-cert-file", &pki.path("ca.crt")),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

/// A redis-server started with `args`, then `extra`.
fn start_redis(args: Vec<String>, extra: &[&str]) -> super::RedisServer {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    super::RedisServer::start_with(&args)
}

/// `backend:` for a node's TLS port, with leasegate's own certificate.
pub fn tls_backend_yaml(pki: &Pki, tls_port: u16, identity: bool) -> String {
    let mut yaml = format!(
        "backend:\n  addr: 127.0.0.1:{tls_port}\n  password: pw\n  tls:\n    enabled: true\n    ca_file: {}\n",
        pki.path("ca.crt").display()
    );
    if identity {
        let (crt, key) = pki.issue("leasegate", &["leasegate"], false);
        yaml.push_str(&format!(
            "    cert_file: {}\n    key_file: {}\n",
            crt.display(),
            key.display()
        ));
    }
    yaml
}

/// Waits until a TLS listener at `port` accepts connections.
pub fn wait_tls(port: u16) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < super::PATIENCE,
            "the TLS listener never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A redis-server replicating over TLS (`tls-replication yes`, with a
/// certificate of this CA) from the TLS port `port`; `extra` arguments
/// follow (`--masterauth`, ...).
pub fn tls_replica(pki: &Pki, port: u16, extra: &[&str]) -> super::RedisServer {
    let (crt, key) = pki.issue("replica", &["replica"], false);
    let mut args = vec!["--tls-replication".to_string(), "yes".to_string()];
    args.extend(redis_tls_files(&crt, &key, pki));
    args.extend([
        "--replicaof".to_string(),
        "127.0.0.1".to_string(),
        port.to_string(),
    ]);
    start_redis(args, extra)
}
