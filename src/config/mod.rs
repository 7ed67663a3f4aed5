//! The one YAML file that configures leasegate.
//!
//! Every key has its default in this module, next to its type, except
//! `backend.addr`: the file's own keys, the node, the admin API, limits and
//! logs here, the sections that decide who may write in `fencing.rs`, the
//! TLS sections in `tls.rs`. Unknown or mistyped keys are errors that name
//! the key and the line (serde's `deny_unknown_fields` plus
//! `serde_yaml_ng`'s positions), because a silently ignored typo in a
//! fencing proxy's config is how split brain comes back. [`Config::parse`]
//! then checks what types cannot (`checks.rs`, with [`Config::warnings`]
//! for what is allowed but unwise).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest `sentinel.poll_interval_ms` + `sentinel.timeout_ms`: with
/// the pulse's slack it stays under the promotion fence's bound
/// (`control::sentinel`).
const SENTINEL_POLL_BOUND: Duration = Duration::from_millis(1_000);

use crate::command::CommandsConfig;
use crate::guard::lease::LeaseMode;
pub use crate::guard::pause::OnDemote;
use crate::resp::login::Login;

mod checks;
mod fencing;
mod tls;

pub use fencing::{
    ControlConfig, ControllerConfig, ControllerUrls, DurabilityConfig, LeaseConfig, PauseConfig,
    SentinelConfig, VerifyConfig, VerifyMode,
};
pub use tls::{AdminTlsConfig, BackendTlsConfig, HandoverTls, TlsConfig, TLS_KEYS};

/// Session threads at most when `threads` is 0. A sidecar shares its host
/// with the node, and more threads cost CPU for nothing: on a 16-core host
/// (issue 24, `bench/throughput.sh`, `-c 50`), 3 threads served 1.05–1.22×
/// HAProxy's requests/s at 0.59–0.94× its CPU per request (HAProxy at 4 and
/// at 16 threads), where one thread per CPU spent 1.26–1.41× HAProxy-4's
/// CPU; and verification batches best with fewer threads. Three threads
/// carry several hundred thousand requests/s at `-P 1`, more than one
/// redis-server or Kvrocks node serves. `threads: N` sets more.
pub const DEFAULT_MAX_THREADS: usize = 3;

/// The most session threads `threads` may ask for: a thread count far past
/// any host's CPUs is a mistake (a stray digit), not a setting.
pub const MAX_THREADS: usize = 1024;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("config file {path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to.
    #[serde(default = "Config::default_listen")]
    pub listen: SocketAddr,
    /// The node this proxy stands in front of.
    pub backend: BackendConfig,
    /// How long in-flight replies may take to finish after SIGTERM/SIGINT.
    #[serde(
        rename = "drain_timeout_ms",
        default = "Config::default_drain_timeout",
        with = "millis"
    )]
    pub drain_timeout: Duration,
    /// Session threads (each with one single-threaded runtime); 0 means one
    /// per CPU, at most [`DEFAULT_MAX_THREADS`].
    #[serde(default)]
    pub threads: usize,
    /// This node's 40-character cluster node id. When unset, it is learned
    /// from a `CLUSTERX SETNODEID` passing through the proxy.
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub lease: LeaseConfig,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub sentinel: SentinelConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub pause: PauseConfig,
    #[serde(default)]
    pub durability: DurabilityConfig,
    #[serde(default)]
    pub upgrade: UpgradeConfig,
    #[serde(default)]
    pub commands: CommandsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port` of the Kvrocks/Redis node (required).
    pub addr: String,
    /// Password for leasegate's *own* connections to the node (command
    /// learning, probes). Client sessions are never pre-authenticated with it:
    /// clients send their own AUTH, which passes through.
    #[serde(default)]
    pub password: Option<String>,
    /// The ACL user `password` belongs to (Redis 6+ with named users, where
    /// `AUTH <password>` alone names the `default` user); unset: the
    /// password alone, as `requirepass` and Kvrocks take it.
    #[serde(default)]
    pub user: Option<String>,
    /// Time allowed to open a backend connection for a new client.
    #[serde(
        rename = "connect_timeout_ms",
        default = "BackendConfig::default_connect_timeout",
        with = "millis"
    )]
    pub connect_timeout: Duration,
    /// TLS to the node (and to the nodes a failover reaches).
    #[serde(default)]
    pub tls: BackendTlsConfig,
}

/// The HTTP admin API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; loopback by default. Empty disables it.
    pub listen: String,
    /// Bearer token required by every mutating call. Without one, mutating
    /// calls are refused (401) and only the read-only endpoints work.
    pub token: Option<String>,
    /// HTTPS for the admin API, and the CAs other leasegates' `https://`
    /// admin APIs are trusted with.
    pub tls: AdminTlsConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9180".into(),
            token: None,
            tls: AdminTlsConfig::default(),
        }
    }
}

/// Handing over to a successor process (`SIGUSR2`, `leasegate run
/// --take-over`): where the two meet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeConfig {
    /// The Unix socket the running leasegate listens on for its successor
    /// (owner-only); unset: `leasegate-<listen port>.sock` in the temporary
    /// directory (`$TMPDIR`, else `/tmp`).
    pub socket: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent client connections; beyond it a client gets
    /// `-ERR max number of clients reached` and is closed.
    pub max_clients: usize,
    /// Largest bulk string accepted in a request, in bytes.
    pub max_bulk_len: u64,
    /// Most arguments accepted in one request.
    pub max_multibulk_len: u64,
    /// Longest inline command line (`PING\r\n` typed in telnet), in bytes.
    pub max_inline_len: usize,
    /// Largest request, its arguments together, in bytes (Redis's
    /// `client-query-buffer-limit`): a request is buffered whole.
    pub max_request_bytes: u64,
    /// Unsent replies (from the node and leasegate's own) one client may
    /// have before leasegate stops reading its requests, in bytes. A client
    /// that pipelines without reading its replies stalls at this bound
    /// instead of growing the proxy's memory; other clients are unaffected.
    pub max_client_output_bytes: usize,
    /// A client that waits for nothing (no reply owed, no subscription, no
    /// MONITOR or replication stream) and has neither completed a request
    /// nor read reply bytes for this long is closed, like Redis's
    /// `timeout`; a partial request does not count. Zero (the default)
    /// leaves idle clients connected.
    #[serde(rename = "client_idle_timeout_ms", with = "millis")]
    pub client_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_request_bytes: 1024 * 1024 * 1024,
            max_client_output_bytes: 4 * 1024 * 1024,
            client_idle_timeout: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `leasegate=debug`, ...); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Durations are written in milliseconds (`*_ms` keys) and held as
/// [`Duration`]s from the moment the file is read.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Config {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 6380))
    }
    fn default_drain_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

impl BackendConfig {
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(1)
    }

    /// The login of leasegate's own connections to the node, if it has one.
    pub fn login(&self) -> Option<Login> {
        login(&self.user, &self.password)
    }
}

/// `password` with its ACL `user`; no password, no login.
pub(crate) fn login(user: &Option<String>, password: &Option<String>) -> Option<Login> {
    password.as_ref().map(|password| Login {
        user: user.clone(),
        password: password.clone(),
    })
}

/// Longest command name leasegate classifies; see [`crate::command::Name`].
pub const MAX_COMMAND_NAME: usize = crate::command::NAME_CAP;

impl Config {
    /// A copy fit to print: passwords and the admin token replaced.
    pub fn redacted(&self) -> Config {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<redacted>".to_string());
        let mut shown = self.clone();
        shown.backend.password = hide(&self.backend.password);
        shown.control.password = hide(&self.control.password);
        shown.admin.token = hide(&self.admin.token);
        shown.sentinel.password = hide(&self.sentinel.password);
        shown
    }

    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                path: origin.to_string(),
                source,
            })?;
        config.check(origin)?;
        Ok(config)
    }

    /// What grants from outside the lease source (the admin API, a
    /// controller's heartbeat) may do: bounded by a polled controller's
    /// `controller.ttl_ms`, refused under Redis Sentinel
    /// ([`crate::guard::outside_grants`]).
    pub fn outside_grants(&self) -> crate::guard::outside_grants::OutsideGrants {
        use crate::guard::outside_grants::OutsideGrants;
        if self.sentinel.enabled() {
            OutsideGrants::Refused
        } else if self.controller.url.is_some() {
            OutsideGrants::AtMost(self.controller.ttl_ms)
        } else {
            OutsideGrants::AsSent
        }
    }

    /// This leasegate's address as the Sentinels know it.
    pub fn sentinel_address(&self) -> String {
        self.sentinel
            .address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Session threads to start: `threads`, or when 0 one per CPU (as the
    /// process may use them: affinity and cgroup quota count), at most
    /// [`DEFAULT_MAX_THREADS`].
    pub fn session_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(DEFAULT_MAX_THREADS),
            n => n,
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    pub fn connect_timeout(&self) -> Duration {
        self.backend.connect_timeout
    }

    /// What this leasegate's fences authenticate with at another node's
    /// leasegate, as a controller: `control.password`, else the node's
    /// login (one password for both, as operators run it).
    pub fn peer_control_login(&self) -> Option<Login> {
        match &self.control.password {
            Some(password) => Some(Login::password(password)),
            None => self.backend.login(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_addr_is_required() {
        let c = Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "t").expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:6380");
        assert_eq!(c.limits.max_bulk_len, 512 * 1024 * 1024);
        assert_eq!(c.limits.max_multibulk_len, 1_048_576);
        assert!(c.limits.client_idle_timeout.is_zero(), "idle clients stay");
        assert!(c.commands.learn_from_backend);
        let err = Config::parse("listen: 127.0.0.1:1\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend"), "{err}");
    }

    #[test]
    fn every_secret_is_redacted_for_printing() {
        let yaml = "backend:\n  addr: h:1\n  password: s-backend\ncontrol:\n  password: s-control\n\
                    admin:\n  token: s-token\nsentinel:\n  addrs: [s1:26379]\n  master_name: m\n  password: s-sentinel\n  address: 10.0.0.1:6380\n";
        let config = Config::parse(yaml, "t").expect("valid");
        let shown = format!("{:#?}", config.redacted());
        for secret in ["s-backend", "s-control", "s-token", "s-sentinel"] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "backend:\n  addr: 127.0.0.1:6666\nlimits:\n  max_clientz: 5\n";
        let err = Config::parse(text, "f.yaml").unwrap_err().to_string();
        assert!(err.contains("max_clientz"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn mistyped_value_names_line() {
        let text = "backend:\n  addr: 127.0.0.1:6666\nlimits:\n  max_clients: lots\n";
        let err = Config::parse(text, "f.yaml").unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
    }
}
