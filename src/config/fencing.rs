//! The sections that decide who may write: who the controller is
//! (`control`), the master lease (`lease`), the controller to poll or ask
//! (`controller`, `verify`), Redis Sentinel (`sentinel`), the write pause
//! (`pause`) and acknowledgements that wait for replicas (`durability`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::control::AddrMatch;
use crate::guard::lease::{Initial, LeaseMode};
use crate::guard::pause::OnDemote;
use crate::guard::verify::VerifyHold;

/// Who may renew, revoke or pause over RESP.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Connections that `AUTH` (or `HELLO ... AUTH`) with this password are
    /// the controller's; the proxy checks it and never forwards it.
    pub password: Option<String>,
    /// Client addresses (`10.0.0.5`, `10.0.0.0/24`, `::1`) treated as the
    /// controller without a password.
    pub allow_from: Vec<AddrMatch>,
}

impl ControlConfig {
    /// The login of this leasegate's control connections to other
    /// leasegates: `control.password` alone (a leasegate checks it itself).
    pub fn login(&self) -> Option<crate::resp::login::Login> {
        self.password
            .as_deref()
            .map(crate::resp::login::Login::password)
    }
}

/// The master lease: mode, cold start, the deadline arithmetic's margins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    pub mode: LeaseMode,
    pub initial: Initial,
    /// Fraction by which the local clock may run slow relative to the
    /// controller's; the TTL is shortened by it.
    pub clock_drift: f64,
    /// Subtracted from every lease.
    pub safety_margin_ms: u64,
    /// First word of the fenced-write error (`READONLY` makes Sentinel-aware
    /// clients rediscover the master).
    pub reject_prefix: String,
    /// How often leasegate asks the node for its `ROLE`; a replica revokes the
    /// lease. 0 disables the probe.
    /// A master without a valid lease refuses reads too (`block-write`
    /// only), so that reads through it are lease reads; a node the probe
    /// sees as a replica, or a demoted one, still serves them.
    pub fence_reads: bool,
    #[serde(rename = "probe_interval_ms", with = "super::millis")]
    pub probe_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            mode: LeaseMode::default(),
            initial: Initial::default(),
            clock_drift: 0.01,
            safety_margin_ms: 100,
            reject_prefix: "READONLY".into(),
            fence_reads: false,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Acknowledging a write only once replicas have it (`durability`): with
/// asynchronous replication a master cut off from its replicas acknowledges
/// writes, within its lease, that the promoted replica never receives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurabilityConfig {
    /// Replicas that must have a write before its success reply reaches the
    /// client (the node's `WAIT`); 0 acknowledges as the node does.
    pub min_replicas: u32,
    /// How long `WAIT` may wait for them; a write not confirmed in time is
    /// answered with an error saying its outcome is unknown.
    #[serde(rename = "timeout_ms", with = "super::millis")]
    pub timeout: Duration,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            timeout: Duration::from_millis(1000),
        }
    }
}

/// Pulling the lease from a stock kvrocks-controller.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// `http://host:port` of the controller, or of every controller of its
    /// raft group; unset disables polling.
    pub url: Option<ControllerUrls>,
    pub namespace: String,
    pub cluster: String,
    #[serde(rename = "poll_interval_ms", with = "super::millis")]
    pub poll_interval: Duration,
    /// Lease granted by each positive poll, from the poll's send time.
    pub ttl_ms: u64,
    /// The controller's failure detection time (ping_interval × max_ping_count);
    /// leasegate warns when `ttl_ms` + margin is not below it.
    pub failure_detection_ms: u64,
    /// Timeout of one poll.
    #[serde(rename = "timeout_ms", with = "super::millis")]
    pub timeout: Duration,
    /// The bound of following a switch the controller made on its own
    /// (its failover API called directly, its automatic failover): how
    /// long a demoted master's leasegate holds writes for the new master's
    /// leasegate to hold the lease, and how long the new master's waits
    /// for the old master to be fenced and caught up before it brings its
    /// node to the controller's topology ([`crate::control::switch`]).
    #[serde(rename = "switch_timeout_ms", with = "super::millis")]
    pub switch_timeout: Duration,
    /// How long a session whose node connection closed with nothing owed
    /// waits (its client's requests unread) for the node to answer again
    /// or for the controller's new master's leasegate to hold the lease,
    /// and goes on there; 0 ends such sessions with the node. Used only
    /// with `url` set.
    #[serde(rename = "node_lost_wait_ms", with = "super::millis")]
    pub node_lost_wait: Duration,
    /// The CAs an `https://` controller's certificate must chain to (PEM),
    /// re-read at reload.
    pub ca_file: Option<std::path::PathBuf>,
}

/// `controller.url`: one address (a controller's, or one in front of the
/// whole group), or a list of every controller of one raft group, of which
/// leasegate then reads from a majority
/// ([`crate::kvrocks::controller_group`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "OneOrMany", into = "OneOrMany")]
pub struct ControllerUrls(Vec<String>);

/// `url: http://a` or `url: [http://a, http://b, http://c]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for ControllerUrls {
    fn from(urls: OneOrMany) -> Self {
        match urls {
            OneOrMany::One(url) => Self(vec![url]),
            OneOrMany::Many(urls) => Self(urls),
        }
    }
}

impl From<ControllerUrls> for OneOrMany {
    fn from(urls: ControllerUrls) -> Self {
        match <[String; 1]>::try_from(urls.0) {
            Ok([url]) => OneOrMany::One(url),
            Err(urls) => OneOrMany::Many(urls),
        }
    }
}

impl ControllerUrls {
    /// Every address, in the order configured.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether any address is `https://`.
    pub fn any_https(&self) -> bool {
        self.0
            .iter()
            .any(|u| u.to_ascii_lowercase().starts_with("https://"))
    }

    /// Why these addresses cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("lists no address".into());
        }
        let mut seen = Vec::new();
        for url in &self.0 {
            let lower = url.to_ascii_lowercase();
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return Err(format!("'{url}' must start with http:// or https://"));
            }
            if url.contains([',', ' ', '\t']) {
                return Err(format!(
                    "'{url}' is several addresses in one string: write a YAML list, \
                     [http://a:9379, http://b:9379, http://c:9379]"
                ));
            }
            let same = same_place(url);
            if seen.contains(&same) {
                return Err(format!(
                    "'{url}' is listed twice (list each controller of the group once, by one address: one counted twice makes a majority that is none)"
                ));
            }
            seen.push(same);
        }
        Ok(())
    }
}

/// `url` as a place: scheme and host in lower case, the default port
/// written out, no trailing `/` (so `http://C:80/` and `http://c` are one).
fn same_place(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('/');
    match trimmed.parse::<hyper::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let host = uri.host().unwrap_or_default();
            let path = uri.path().trim_end_matches('/');
            format!("{scheme}://{host}:{port}{path}")
        }
        Err(_) => trimmed.to_string(),
    }
}

impl std::fmt::Display for ControllerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl ControllerConfig {
    /// How an `https://` controller is trusted, read from the file now
    /// (`None`: no `ca_file`).
    pub fn tls(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, (&'static str, String)> {
        let https = self.url.as_ref().is_some_and(ControllerUrls::any_https);
        let Some(ca_file) = &self.ca_file else {
            if https {
                return Err((
                    "controller.ca_file",
                    "an https:// controller.url needs the CAs to trust its certificate".into(),
                ));
            }
            return Ok(None);
        };
        let keys = crate::proxy::tls::TlsKeys {
            cert_file: "controller.ca_file",
            key_file: "controller.ca_file",
            ca_file: "controller.ca_file",
        };
        crate::proxy::tls::client_config(ca_file, None, keys).map(Some)
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            url: None,
            namespace: String::new(),
            cluster: String::new(),
            poll_interval: Duration::from_secs(1),
            ttl_ms: 5_000,
            failure_detection_ms: 15_000,
            timeout: Duration::from_secs(1),
            switch_timeout: Duration::from_secs(2),
            node_lost_wait: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// Taking the lease from Redis Sentinel (`sentinel.addrs` set), and being
/// seen by it at this leasegate's address (see `control::sentinel`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// `host:port` of every Sentinel monitoring this node's master; empty
    /// disables Sentinel.
    pub addrs: Vec<String>,
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The Sentinels' own password (`requirepass` in their config), if any.
    pub password: Option<String>,
    /// The ACL user `password` belongs to (a Sentinel with `user` rules of
    /// its own); unset: the password alone.
    pub user: Option<String>,
    /// This leasegate's address as the Sentinels know it; default: `listen`
    /// (which must then name an address, not 0.0.0.0).
    pub address: Option<String>,
    /// How often the Sentinels are asked.
    #[serde(rename = "poll_interval_ms", with = "super::millis")]
    pub poll_interval: Duration,
    /// Bound of one question to one Sentinel.
    #[serde(rename = "timeout_ms", with = "super::millis")]
    pub timeout: Duration,
    /// The longest lease one poll grants, whatever the Sentinels allow
    /// (they allow up to `down-after-milliseconds`): how long a master cut
    /// off from every Sentinel goes on acknowledging writes that its
    /// replicas may never get.
    pub max_lease_ms: u64,
    /// Make the node announce this leasegate's address to its master
    /// (`replica-announce-port`, and `replica-announce-ip` when `address`
    /// names one), so that Sentinel finds the replica behind its leasegate.
    pub announce: bool,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        Self {
            addrs: Vec::new(),
            master_name: String::new(),
            password: None,
            user: None,
            address: None,
            poll_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
            max_lease_ms: 5_000,
            announce: true,
        }
    }
}

impl SentinelConfig {
    pub fn enabled(&self) -> bool {
        !self.addrs.is_empty()
    }

    /// The login of leasegate's connections to the Sentinels, if any.
    pub fn login(&self) -> Option<crate::resp::login::Login> {
        super::login(&self.user, &self.password)
    }
}

/// `verify.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    #[default]
    Off,
    /// Every write waits for a controller confirmation sent after it arrived.
    EveryWrite,
}

/// Verification of mastership with the controller on every write; uses `controller.*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    pub mode: VerifyMode,
    /// What waits for the confirmation: the write (`request`: nothing
    /// unconfirmed reaches the node) or only its reply (`acknowledgement`:
    /// the node's time and the controller's overlap).
    pub hold: VerifyHold,
    /// A confirmation slower than this rejects the writes waiting for it.
    #[serde(rename = "timeout_ms", with = "super::millis")]
    pub timeout: Duration,
    /// Confirmation requests allowed on the wire at once, over all session
    /// threads (see `guard::verify`). 1 (the default)
    /// gives the largest batches; more cut the wait of writes that arrive
    /// while a round is in flight, at the cost of more controller requests.
    pub max_in_flight: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            mode: VerifyMode::Off,
            hold: VerifyHold::Request,
            timeout: Duration::from_millis(200),
            max_in_flight: 1,
        }
    }
}

/// Write pauses: how much may be held, and where held writes go after a demotion.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PauseConfig {
    /// Bytes of held requests across all connections; past it, `-TRYAGAIN`.
    pub max_buffered_bytes: usize,
    /// Held requests across all connections; past it, `-TRYAGAIN`.
    pub max_buffered_requests: usize,
    pub on_demote: OnDemote,
    /// The controller's `CLIENT PAUSE ... WRITE` on a Kvrocks master with
    /// one replica begins when the replica's promotion can follow at once
    /// (its replication tick), not on arrival
    /// ([`crate::control::failover::controller_pause`]).
    pub promotion_timing: bool,
}

impl Default for PauseConfig {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 64 * 1024 * 1024,
            max_buffered_requests: 100_000,
            on_demote: OnDemote::default(),
            promotion_timing: true,
        }
    }
}
