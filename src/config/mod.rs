//! The one YAML file that configures leasegate.
//!
//! Every key has its default in this module, next to its type, except
//! `backend.addr`: the file's own keys, the node, the admin API, limits and
//! logs here, the sections that decide who may write in `fencing.rs`, the
//! TLS sections in `tls.rs`. Unknown or mistyped keys are errors that name
//! the key and the line (serde's `deny_unknown_fields` plus
//! `serde_yaml_ng`'s positions), because a silently ignored typo in a
//! fencing proxy's config is how split brain comes back. [`Config::parse`]
//! then checks what types cannot ([`Config::warnings`] for what is allowed
//! but unwise).

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

    /// Validates a config; `origin` names it in errors. A reload checks the
    /// config it assembles (the file's settings, with those that need a
    /// restart kept as they run) with this too.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: origin.to_string(),
                key,
                reason,
            })
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let addr = &self.backend.addr;
        if !is_host_port(addr) {
            return Err(("backend.addr", format!("'{addr}' is not a host:port")));
        }
        if let Some(own) = self.own_listener_at(addr) {
            return Err((
                "backend.addr",
                format!(
                    "'{addr}' is this leasegate's own {own}: it would connect to itself, over and \
                     over, until it ran out of file descriptors; name the node's address"
                ),
            ));
        }
        self.validate_sentinel()?;
        if self.tls.handshake_timeout.is_zero() {
            return Err(("tls.handshake_timeout_ms", "must be above 0".into()));
        }
        if self.tls.listen.is_some_and(|tls| tls == self.listen) {
            return Err(("tls.listen", "must differ from listen".into()));
        }

        if self.threads > MAX_THREADS {
            return Err((
                "threads",
                format!(
                    "{} is more than {MAX_THREADS} session threads (0: one per CPU, at most {DEFAULT_MAX_THREADS})",
                    self.threads
                ),
            ));
        }
        if self.backend.connect_timeout.is_zero() {
            return Err(("backend.connect_timeout_ms", "must be above 0".into()));
        }
        if self.limits.max_clients == 0 {
            return Err(("limits.max_clients", "must be above 0".into()));
        }
        if self.limits.max_bulk_len == 0 {
            return Err(("limits.max_bulk_len", "must be above 0".into()));
        }
        if self.limits.max_multibulk_len == 0 {
            return Err(("limits.max_multibulk_len", "must be above 0".into()));
        }
        if self.limits.max_request_bytes < 1024 {
            return Err(("limits.max_request_bytes", "must be at least 1024".into()));
        }
        if self.limits.max_client_output_bytes < 1024 {
            return Err((
                "limits.max_client_output_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.durability.min_replicas > 0
            && !(1..=60_000).contains(&self.durability.timeout.as_millis())
        {
            return Err((
                "durability.timeout_ms",
                "must be in 1..=60000 with durability.min_replicas (WAIT 0 would wait for ever)"
                    .into(),
            ));
        }
        if self.limits.max_inline_len < 16 {
            return Err(("limits.max_inline_len", "must be at least 16".into()));
        }
        for name in self.commands.classes.keys() {
            if name.is_empty() || name.len() > MAX_COMMAND_NAME || name.contains(' ') {
                return Err((
                    "commands.classes",
                    format!("'{name}' is not a command name (1..={MAX_COMMAND_NAME} characters, no spaces)"),
                ));
            }
        }
        for name in &self.commands.deny {
            let known = crate::command::is_builtin(name)
                || self
                    .commands
                    .classes
                    .keys()
                    .any(|c| c.eq_ignore_ascii_case(name));
            if !known {
                return Err((
                    "commands.deny",
                    format!(
                        "unknown command '{name}' (a typo here would leave it enabled; \
                         list commands unknown to leasegate under commands.classes first)"
                    ),
                ));
            }
        }
        if let Some(id) = &self.node_id {
            if id.len() != 40 {
                return Err(("node_id", format!("'{id}' is not a 40-character node id")));
            }
        }
        if !self.admin.listen.is_empty() {
            self.admin.listen.parse::<SocketAddr>().map_err(|e| {
                (
                    "admin.listen",
                    format!("'{}' is not an ip:port ({e})", self.admin.listen),
                )
            })?;
        }
        // A user without its password would be dropped without a word, and
        // every login would fail far from its cause.
        for (key, user, password, password_key) in [
            (
                "backend.user",
                &self.backend.user,
                &self.backend.password,
                "backend.password",
            ),
            (
                "sentinel.user",
                &self.sentinel.user,
                &self.sentinel.password,
                "sentinel.password",
            ),
        ] {
            if user.is_some() && password.is_none() {
                return Err((key, format!("needs {password_key} (the user's password)")));
            }
            if user.as_deref() == Some("") {
                return Err((key, "must not be empty (leave it out instead)".into()));
            }
        }
        if self.admin.token.as_deref() == Some("") {
            return Err((
                "admin.token",
                "must not be empty (leave it out instead)".into(),
            ));
        }
        if self.control.password.as_deref() == Some("") {
            return Err((
                "control.password",
                "must not be empty (leave it out instead)".into(),
            ));
        }
        if !(0.0..0.5).contains(&self.lease.clock_drift) {
            return Err(("lease.clock_drift", "must be in [0, 0.5)".into()));
        }
        if self.lease.reject_prefix.is_empty()
            || self
                .lease
                .reject_prefix
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(("lease.reject_prefix", "must be one word".into()));
        }
        if let Some(urls) = &self.controller.url {
            urls.check().map_err(|e| ("controller.url", e))?;
            if self.controller.namespace.is_empty() || self.controller.cluster.is_empty() {
                return Err((
                    "controller.namespace",
                    "controller.namespace and controller.cluster are required with controller.url"
                        .into(),
                ));
            }
            if self.controller.ttl_ms > crate::guard::lease::MAX_TTL_MS {
                return Err((
                    "controller.ttl_ms",
                    format!(
                        "must be at most {} (one hour)",
                        crate::guard::lease::MAX_TTL_MS
                    ),
                ));
            }
            if self.controller.poll_interval.is_zero() || self.controller.ttl_ms == 0 {
                return Err((
                    "controller.poll_interval_ms",
                    "poll_interval_ms and ttl_ms must be above 0".into(),
                ));
            }
        }
        if self.verify.mode == VerifyMode::EveryWrite {
            if self.controller.url.is_none() {
                return Err((
                    "verify.mode",
                    "every-write needs controller.url, controller.namespace and controller.cluster"
                        .into(),
                ));
            }
            if self.verify.max_in_flight == 0 || self.verify.max_in_flight > 64 {
                return Err(("verify.max_in_flight", "must be in 1..=64".into()));
            }
            if self.verify.timeout.is_zero() {
                return Err(("verify.timeout_ms", "must be above 0".into()));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err((
                "log.level",
                format!("'{}' is not a log filter", self.log.level),
            ));
        }
        // Last: the certificate files are read (everything else is checked
        // without touching the file system).
        self.tls.server_config()?;
        self.tls.peer_tls()?;
        self.backend.tls.node_tls()?;
        self.controller.tls()?;
        self.admin.tls.server_config()?;
        self.admin.tls.client_config()?;
        Ok(())
    }

    /// Warnings about settings that are valid but unsafe together.
    fn validate_sentinel(&self) -> Result<(), (&'static str, String)> {
        let s = &self.sentinel;
        if !s.enabled() {
            return Ok(());
        }
        for addr in &s.addrs {
            if !is_host_port(addr) {
                return Err(("sentinel.addrs", format!("'{addr}' is not a host:port")));
            }
        }
        if s.master_name.is_empty() {
            return Err((
                "sentinel.master_name",
                "the name the Sentinels monitor the master under is required with sentinel.addrs"
                    .into(),
            ));
        }
        if self.controller.url.is_some() {
            return Err((
                "sentinel.addrs",
                "controller.url is set too: the lease has one source, the controller or Sentinel"
                    .into(),
            ));
        }
        if s.max_lease_ms == 0 || s.max_lease_ms > crate::guard::lease::MAX_TTL_MS {
            return Err((
                "sentinel.max_lease_ms",
                format!("must be in 1..={}", crate::guard::lease::MAX_TTL_MS),
            ));
        }
        if s.poll_interval.is_zero() || s.timeout.is_zero() {
            return Err((
                "sentinel.poll_interval_ms",
                "poll_interval_ms and timeout_ms must be above 0".into(),
            ));
        }
        if s.poll_interval + s.timeout > SENTINEL_POLL_BOUND {
            return Err((
                "sentinel.poll_interval_ms",
                format!(
                    "poll_interval_ms + timeout_ms must be at most {} ms: a leasegate whose poll has not answered for that (and 500 ms more) holds its writes, and a promotion's fence waits 2 s for the old master's leasegate (docs/sentinel.md#a-frozen-old-master)",
                    SENTINEL_POLL_BOUND.as_millis()
                ),
            ));
        }
        match &s.address {
            Some(a) if !is_host_port(a) => {
                Err(("sentinel.address", format!("'{a}' is not a host:port")))
            }
            None if self.listen.ip().is_unspecified() => Err((
                "sentinel.address",
                format!(
                    "listen is {}: set this leasegate's address as the Sentinels know it",
                    self.listen
                ),
            )),
            _ => Ok(()),
        }
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

    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.threads > cpus {
            out.push(format!(
                "threads ({}) is more than the {cpus} CPU(s) this process may use: the threads beyond \
                 them take turns on the same CPUs, which costs wake-ups and CPU the node could use \
                 (docs/threads.md)",
                self.threads
            ));
        }
        if self.controller.url.is_some() {
            let c = &self.controller;
            let bound = c.ttl_ms + self.lease.safety_margin_ms;
            if bound >= c.failure_detection_ms {
                out.push(format!(
                    "controller.ttl_ms ({}) + lease.safety_margin_ms ({}) is not below the controller's \
                     failure detection time ({} ms): the controller may promote a replica while this \
                     node still holds its lease",
                    c.ttl_ms, self.lease.safety_margin_ms, c.failure_detection_ms
                ));
            }
            if c.poll_interval.as_millis() >= u128::from(c.ttl_ms) {
                out.push(format!(
                    "controller.poll_interval_ms ({}) is not below controller.ttl_ms ({}): the lease will lapse between polls",
                    c.poll_interval.as_millis(), c.ttl_ms
                ));
            }
            let listed = c.url.as_ref().map_or(0, |u| u.as_slice().len());
            if listed == 2 {
                out.push(
                    "controller.url lists two controllers: a majority of two is both, so either one \
                     down stops every renewal; list every controller of the raft group (three or five)"
                        .to_string(),
                );
            }
        }
        if self.lease.mode == LeaseMode::Disabled
            && (self.controller.url.is_some() || self.sentinel.enabled())
        {
            let source = if self.controller.url.is_some() {
                "controller.url"
            } else {
                "sentinel.addrs"
            };
            out.push(format!(
                "{source} is set but lease.mode is disabled (its default): the lease is kept, but \
                 every write passes, lease or not; set lease.mode: block-write to fence"
            ));
        }
        if self.admin.token.is_none()
            && self
                .admin
                .listen
                .parse::<SocketAddr>()
                .is_ok_and(|a| !a.ip().is_loopback())
        {
            out.push(format!(
                "admin.listen is {} (not loopback) and admin.token is not set: anyone who reaches \
                 it reads the status and metrics (changes stay refused without a token)",
                self.admin.listen
            ));
        }
        if self.tls.listen.is_none() && self.tls.cert_file.is_some() {
            out.push(
                "tls.cert_file is set but tls.listen is not: no TLS listener is started \
                 (docs/tls.md)"
                    .to_string(),
            );
        }
        if self.verify.mode != VerifyMode::EveryWrite
            && (self.verify.max_in_flight == 0 || self.verify.max_in_flight > 64)
        {
            out.push(format!(
                "verify.max_in_flight ({}) is outside 1..=64: ignored while verify.mode is off, \
                 refused once a reload turns it on",
                self.verify.max_in_flight
            ));
        }
        if self.lease.mode != LeaseMode::Disabled
            && self.control.password.is_none()
            && self.control.allow_from.is_empty()
            && self.admin.token.is_none()
            && self.controller.url.is_none()
            && !self.sentinel.enabled()
        {
            out.push(
                "lease.mode is on but nothing can renew the lease (no control.password, \
                 control.allow_from, admin.token, controller.url or sentinel.addrs)"
                    .to_string(),
            );
        }
        out
    }

    /// Which of this leasegate's listeners `addr` (`backend.addr`) reaches,
    /// if it surely does: the same address, or a loopback one on the port
    /// of a listener on every address.
    fn own_listener_at(&self, addr: &str) -> Option<&'static str> {
        let (host, port) = addr.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse().ok()?
        };
        let reaches = |l: SocketAddr| {
            l.port() == port && (l.ip() == ip || (l.ip().is_unspecified() && ip.is_loopback()))
        };
        if reaches(self.listen) {
            Some("listen")
        } else if self.tls.listen.is_some_and(reaches) {
            Some("tls.listen")
        } else {
            None
        }
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

/// `host:port` with a host and a port number.
fn is_host_port(addr: &str) -> bool {
    matches!(addr.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
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
    fn threads_past_the_cpus_warn_and_past_the_limit_are_refused() {
        let with = |n: usize| Config::parse(&format!("backend:\n  addr: h:1\nthreads: {n}\n"), "t");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let warned = |c: &Config| c.warnings().iter().any(|w| w.starts_with("threads ("));
        assert!(
            !warned(&with(0).expect("default")),
            "the default never warns"
        );
        assert!(!warned(&with(cpus).expect("one per CPU")));
        assert!(warned(&with(cpus + 1).expect("valid, with a warning")));
        with(MAX_THREADS).expect("the limit itself is allowed");
        let err = with(MAX_THREADS + 1).unwrap_err().to_string();
        assert!(err.contains("threads") && err.contains("1025"), "{err}");
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
    fn settings_that_do_nothing_as_set_warn() {
        let with = |yaml: &str| {
            Config::parse(&format!("backend:\n  addr: h:1\n{yaml}"), "t")
                .expect("valid")
                .warnings()
        };
        let tls = "tls:\n  cert_file: /c.pem\n  key_file: /k.pem\n";
        assert!(with(tls).iter().any(|w| w.starts_with("tls.cert_file")));
        assert!(!with("").iter().any(|w| w.starts_with("tls.cert_file")));
        let idle = "verify:\n  max_in_flight: 0\n";
        assert!(with(idle)
            .iter()
            .any(|w| w.starts_with("verify.max_in_flight (0)")));
        assert!(!with("").iter().any(|w| w.starts_with("verify.")));
        // A lease source with the lease off: polled, fencing nothing.
        let polled = "controller:\n  url: http://c:9379\n  namespace: n\n  cluster: c\n";
        assert!(with(polled)
            .iter()
            .any(|w| w.starts_with("controller.url is set but lease.mode is disabled")));
        let fenced = format!("{polled}lease:\n  mode: block-write\n");
        assert!(!with(&fenced)
            .iter()
            .any(|w| w.contains("lease.mode is disabled")));
        // The admin API open beyond loopback without a token.
        let open = "admin:\n  listen: 0.0.0.0:9180\n";
        assert!(with(open)
            .iter()
            .any(|w| w.starts_with("admin.listen is 0.0.0.0:9180")));
        let guarded = "admin:\n  listen: 0.0.0.0:9180\n  token: t\n";
        assert!(!with(guarded).iter().any(|w| w.starts_with("admin.listen")));
        assert!(!with("").iter().any(|w| w.starts_with("admin.listen")));
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

    #[test]
    fn an_acl_user_needs_its_password() {
        let err = Config::parse("backend:\n  addr: h:1\n  user: lg\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backend.user") && err.contains("backend.password"),
            "{err}"
        );
        let text = "backend:\n  addr: h:1\n  user: lg\n  password: pw\n";
        let config = Config::parse(text, "f").expect("valid");
        assert_eq!(
            config.backend.login().map(|l| l.auth_args().join(" ")),
            Some("AUTH lg pw".to_string())
        );
        let text = "backend:\n  addr: h:1\nsentinel:\n  user: w\n";
        let err = Config::parse(text, "f").unwrap_err().to_string();
        assert!(
            err.contains("sentinel.user") && err.contains("sentinel.password"),
            "{err}"
        );
    }

    #[test]
    fn the_controller_is_one_address_or_every_controller_of_its_group() {
        let with = |url: &str| {
            Config::parse(
                &format!("backend:\n  addr: h:1\ncontroller:\n  url: {url}\n  namespace: n\n  cluster: c\n"),
                "f",
            )
        };
        let one = with("http://a:1").expect("valid");
        let one = one.controller.url.expect("set");
        assert_eq!(one.as_slice(), ["http://a:1"]);
        let group = with("[http://a:1, http://b:1, http://c:1]").expect("valid");
        let group = group.controller.url.expect("set");
        assert_eq!(group.as_slice().len(), 3);
        assert_eq!(group.to_string(), "http://a:1, http://b:1, http://c:1");
        // Written back as it was read (a reload compares configs so).
        assert_eq!(
            serde_yaml_ng::to_string(&one).expect("yaml").trim(),
            "http://a:1"
        );
        assert!(serde_yaml_ng::to_string(&group)
            .expect("yaml")
            .starts_with("- http://a:1"));
        let pair = with("[http://a:1, http://b:1]").expect("valid");
        assert!(
            pair.warnings()
                .iter()
                .any(|w| w.contains("majority of two")),
            "{:?}",
            pair.warnings()
        );
        let trio = with("[http://a:1, http://b:1, http://c:1]").expect("valid");
        assert!(!trio.warnings().iter().any(|w| w.contains("majority")));
        for (url, says) in [
            ("[http://a:1, http://a:1]", "listed twice"),
            ("[http://c:80/, HTTP://C, http://d:1]", "listed twice"),
            ("[]", "lists no address"),
            ("[http://a:1, b:1]", "must start with http://"),
            // A list written without brackets: one string.
            (
                "http://a:1, http://b:1, http://c:1",
                "several addresses in one string",
            ),
        ] {
            let err = with(url).unwrap_err().to_string();
            assert!(
                err.contains("controller.url") && err.contains(says),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn deny_typo_is_an_error() {
        let text = "backend:\n  addr: h:1\ncommands:\n  deny: [flushal]\n";
        let err = Config::parse(text, "f").unwrap_err().to_string();
        assert!(err.contains("flushal"), "{err}");
        let ok = "backend:\n  addr: h:1\ncommands:\n  deny: [FLUSHALL, mod.cmd]\n  classes: {mod.cmd: write}\n";
        Config::parse(ok, "f").expect("valid");
    }

    #[test]
    fn bad_addresses_are_rejected() {
        let err = Config::parse("backend:\n  addr: nohostport\n", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend.addr"), "{err}");
        let err = Config::parse("listen: x\nbackend:\n  addr: h:1\n", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        // Its own listener as its node: it would connect to itself.
        for (listen, backend) in [
            ("127.0.0.1:6380", "127.0.0.1:6380"),
            ("0.0.0.0:6380", "127.0.0.1:6380"),
            ("0.0.0.0:6380", "localhost:6380"),
            ("\"[::]:6380\"", "\"[::1]:6380\""),
        ] {
            let err = Config::parse(
                &format!("listen: {listen}\nbackend:\n  addr: {backend}\n"),
                "f",
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("backend.addr") && err.contains("own listen"),
                "{listen} {backend}: {err}"
            );
        }
        for (listen, backend) in [
            ("0.0.0.0:6380", "127.0.0.1:6379"),
            ("127.0.0.1:6380", "10.0.0.2:6380"),
            ("0.0.0.0:6380", "node-a:6380"),
        ] {
            Config::parse(
                &format!("listen: {listen}\nbackend:\n  addr: {backend}\n"),
                "f",
            )
            .unwrap_or_else(|e| panic!("{listen} {backend}: {e}"));
        }
    }

    #[test]
    fn a_sentinel_section_is_checked_at_load() {
        let base = "listen: 127.0.0.1:7000\nbackend:\n  addr: h:1\n";
        let ok = format!("{base}sentinel:\n  addrs: [s1:26379, s2:26379]\n  master_name: m\n");
        let c = Config::parse(&ok, "f").expect("valid");
        assert_eq!(c.sentinel_address(), "127.0.0.1:7000", "listen by default");
        for (yaml, key) in [
            ("sentinel:\n  addrs: [s1:26379]\n", "sentinel.master_name"),
            (
                "sentinel:\n  addrs: [s1]\n  master_name: m\n",
                "sentinel.addrs",
            ),
            (
                "sentinel:\n  addrs: [s1:1]\n  master_name: m\ncontroller:\n  url: http://c:1\n",
                "sentinel.addrs",
            ),
            (
                "sentinel:\n  addrs: [s1:1]\n  master_name: m\n  address: nope\n",
                "sentinel.address",
            ),
        ] {
            let err = Config::parse(&format!("{base}{yaml}"), "f")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        // Listening on every address, the Sentinels' name for this
        // leasegate must be given.
        let wild = "listen: 0.0.0.0:7000\nbackend:\n  addr: h:1\nsentinel:\n  addrs: [s1:1]\n  master_name: m\n";
        let err = Config::parse(wild, "f").unwrap_err().to_string();
        assert!(err.contains("sentinel.address"), "{err}");
        let named = format!("{wild}  address: 10.0.0.5:7000\n");
        assert_eq!(
            Config::parse(&named, "f")
                .expect("valid")
                .sentinel_address(),
            "10.0.0.5:7000"
        );
    }

    #[test]
    fn allow_from_is_parsed_at_load_and_errors_name_the_line() {
        let ok =
            "backend:\n  addr: 127.0.0.1:6666\ncontrol:\n  allow_from: [10.0.0.0/24, \"::1\"]\n";
        let c = Config::parse(ok, "f.yaml").expect("valid");
        assert_eq!(c.control.allow_from.len(), 2);
        let bad = "backend:\n  addr: 127.0.0.1:6666\ncontrol:\n  allow_from:\n    - 10.0.0.0/24\n    - 10.0.0.x\n";
        let err = Config::parse(bad, "f.yaml").unwrap_err().to_string();
        assert!(
            err.contains("control.allow_from")
                && err.contains("10.0.0.x")
                && err.contains("line 5"),
            "{err}"
        );
        let listen = "listen: nowhere\nbackend:\n  addr: 127.0.0.1:6666\n";
        let err = Config::parse(listen, "f.yaml").unwrap_err().to_string();
        assert!(err.contains("listen") && err.contains("line 1"), "{err}");
    }
}
