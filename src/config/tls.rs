//! The TLS sections: the client listener beside `listen` (`tls`), the
//! connection to the node (`backend.tls`), and the admin API's
//! (`admin.tls`): which files, which CAs, and the rustls configurations
//! they become ([`crate::proxy::tls`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// TLS from leasegate to its node (`backend.tls`), for the sessions' node
/// connections and leasegate's own (the probe, command learning,
/// failovers); other leasegates and Sentinels are reached in plaintext.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTlsConfig {
    pub enabled: bool,
    /// The CAs the node's certificate must chain to (PEM; required when
    /// enabled), re-read at reload.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the node's certificate must carry; unset: the host of the
    /// address connected to (an IP address needs an IP SAN).
    pub server_name: Option<String>,
    /// The certificate leasegate presents to the node (PEM; Redis asks for
    /// one unless `tls-auth-clients no`), re-read at reload.
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
}

/// The config keys of `backend.tls`'s files.
const BACKEND_TLS_KEYS: crate::proxy::tls::TlsKeys = crate::proxy::tls::TlsKeys {
    cert_file: "backend.tls.cert_file",
    key_file: "backend.tls.key_file",
    ca_file: "backend.tls.ca_file",
};

impl BackendTlsConfig {
    /// How nodes are reached over TLS, read from the files now (`None`:
    /// plaintext).
    pub fn node_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::proxy::backend::NodeTls>>, (&'static str, String)>
    {
        if !self.enabled {
            return Ok(None);
        }
        let Some(ca_file) = &self.ca_file else {
            return Err((
                "backend.tls.ca_file",
                "backend.tls.enabled needs the CAs to check the node's certificate with".into(),
            ));
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                return Err((
                    "backend.tls.cert_file",
                    "backend.tls.cert_file and backend.tls.key_file go together".into(),
                ))
            }
        };
        let config = crate::proxy::tls::client_config(ca_file, identity, BACKEND_TLS_KEYS)?;
        Ok(Some(std::sync::Arc::new(crate::proxy::backend::NodeTls {
            config,
            server_name: self.server_name.clone(),
        })))
    }
}

/// A TLS client listener beside `listen` ([`crate::proxy::tls`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where TLS clients connect; unset: no TLS listener.
    pub listen: Option<SocketAddr>,
    /// The certificate chain leasegate presents (PEM), re-read at reload.
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM), re-read at reload.
    pub key_file: Option<std::path::PathBuf>,
    /// When set, clients must present a certificate that chains to one of
    /// these CAs (PEM), re-read at reload.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a client has to complete its handshake.
    #[serde(rename = "handshake_timeout_ms", with = "super::millis")]
    pub handshake_timeout: Duration,
    /// How a session whose client came over TLS moves to another
    /// leasegate at a hand-over, and how this leasegate's control
    /// connections reach other leasegates: over TLS (default), or in
    /// plaintext to their `listen` (a network between leasegates trusted
    /// as the host is).
    pub handover: HandoverTls,
    /// The other leasegates' TLS port; unset: the port of `tls.listen`
    /// (leasegates configured alike).
    pub peer_port: Option<u16>,
    /// The CAs other leasegates' certificates must chain to (PEM), re-read
    /// at reload; unset: `tls.ca_file`.
    pub peer_ca_file: Option<std::path::PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: None,
            cert_file: None,
            key_file: None,
            ca_file: None,
            handshake_timeout: Duration::from_secs(10),
            handover: HandoverTls::Tls,
            peer_port: None,
            peer_ca_file: None,
        }
    }
}

/// `tls.handover`: how a TLS client's session reaches the new master's
/// leasegate. Its requests (an `AUTH` replayed among them) cross the
/// network between the two hosts: in plaintext they would undo the
/// client's encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoverTls {
    /// To the other leasegate's TLS listener (`tls.peer_port`), whose
    /// certificate is checked (`tls.peer_ca_file`), presenting this
    /// leasegate's own (`tls.cert_file`).
    Tls,
    /// To the other leasegate's plaintext `listen`.
    Plain,
}

/// The config keys of the hand-over's files.
const PEER_TLS_KEYS: crate::proxy::tls::TlsKeys = crate::proxy::tls::TlsKeys {
    cert_file: "tls.cert_file",
    key_file: "tls.key_file",
    ca_file: "tls.peer_ca_file",
};

/// The config keys of the client listener's files.
pub const TLS_KEYS: crate::proxy::tls::TlsKeys = crate::proxy::tls::TlsKeys {
    cert_file: "tls.cert_file",
    key_file: "tls.key_file",
    ca_file: "tls.ca_file",
};

impl TlsConfig {
    /// The listener's rustls settings, read from the files now (`None`:
    /// no TLS listener).
    pub fn server_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, (&'static str, String)> {
        if self.listen.is_none() {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Err((
                "tls.cert_file",
                "tls.listen needs tls.cert_file and tls.key_file".into(),
            ));
        };
        let files = crate::proxy::tls::TlsFiles {
            cert_file,
            key_file,
            ca_file: self.ca_file.as_deref(),
        };
        files.server_config(TLS_KEYS).map(Some)
    }

    /// How a TLS client's session reaches another leasegate at a
    /// hand-over, read from the files now (`None`: in plaintext, to its
    /// `listen`; so too where there is no TLS listener).
    pub fn peer_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::proxy::backend::PeerTls>>, (&'static str, String)>
    {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        if self.handover == HandoverTls::Plain {
            return Ok(None);
        }
        if self.peer_port == Some(0) {
            return Err(("tls.peer_port", "must be a port, 1 to 65535".into()));
        }
        let Some(ca_file) = self.peer_ca_file.as_ref().or(self.ca_file.as_ref()) else {
            return Err((
                "tls.handover",
                "a TLS client's session moves to another leasegate over TLS (tls.handover: tls), \
                 which needs tls.peer_ca_file (or tls.ca_file) to check that leasegate's \
                 certificate; set one, or tls.handover: plain where the network between \
                 leasegates is trusted"
                    .into(),
            ));
        };
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Err((
                "tls.cert_file",
                "tls.listen needs tls.cert_file and tls.key_file".into(),
            ));
        };
        let identity = Some((cert_file.as_path(), key_file.as_path()));
        let config = crate::proxy::tls::client_config(ca_file, identity, PEER_TLS_KEYS)?;
        Ok(Some(std::sync::Arc::new(crate::proxy::backend::PeerTls {
            tls: crate::proxy::backend::NodeTls {
                config,
                server_name: None,
            },
            port: self.peer_port.unwrap_or(listen.port()),
        })))
    }
}

/// `admin.tls`: the admin API's certificate (it then speaks HTTPS only),
/// and the CAs for calling other leasegates' `https://` admin APIs (a
/// failover's target).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminTlsConfig {
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub ca_file: Option<std::path::PathBuf>,
}

const ADMIN_TLS_KEYS: crate::proxy::tls::TlsKeys = crate::proxy::tls::TlsKeys {
    cert_file: "admin.tls.cert_file",
    key_file: "admin.tls.key_file",
    ca_file: "admin.tls.ca_file",
};

impl AdminTlsConfig {
    /// The admin API's HTTPS settings, read from the files now (`None`:
    /// plain HTTP).
    pub fn server_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, (&'static str, String)> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => crate::proxy::tls::TlsFiles {
                cert_file,
                key_file,
                ca_file: None,
            }
            .server_config(ADMIN_TLS_KEYS)
            .map(Some),
            _ => Err((
                "admin.tls.cert_file",
                "admin.tls.cert_file and admin.tls.key_file go together".into(),
            )),
        }
    }

    /// The CAs other leasegates' `https://` admin APIs are trusted with.
    pub fn client_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, (&'static str, String)> {
        match &self.ca_file {
            None => Ok(None),
            Some(ca) => crate::proxy::tls::client_config(ca, None, ADMIN_TLS_KEYS).map(Some),
        }
    }
}
