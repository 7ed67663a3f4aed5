//! Live reload of the config file: SIGHUP and `POST /v1/reload` both call
//! [`reload`].
//!
//! The file is read and validated first ([`Config::load`]); a file that
//! cannot be used changes nothing: the error is logged, answered, and
//! counted in `leasegate_config_reloads_total{result="failed"}`.
//!
//! Otherwise every key is compared with the running config ([`KEYS`]):
//!
//! * **live** keys take effect at once, without closing a connection: each
//!   setting is swapped whole (an `ArcSwap` or an atomic), so a request sees
//!   either its old or its new value, never a mix within one setting; a
//!   request admitted during the reload may see some settings old and some
//!   new;
//! * **restart** keys keep their running value and are reported in
//!   `needs_restart`: the sockets (`listen`, `admin.listen`), the node
//!   (`backend.addr`), the worker threads (`threads`), the node's identity
//!   (`node_id`), what only start-up reads (`lease.initial`,
//!   `commands.learn_from_backend`, `log.format`), and the controller's
//!   cluster (`controller.url`, `.namespace`, `.cluster`: the versions the
//!   poller remembers belong to one cluster, and the verifier exists only
//!   with a controller; `verify.mode: every-write` too when leasegate
//!   started without `controller.url`), and which Sentinels and master
//!   the Sentinel poller asks, and as what (`sentinel.addrs`,
//!   `.master_name`, `.address`, `.announce`).
//!
//! What "at once" means per key: the lease margins (`lease.clock_drift`,
//! `.safety_margin_ms`) apply from the next grant (a deadline granted stands);
//! `limits.*` apply to connections accepted from now on (a session keeps the
//! limits it started with); `control.password` and `.allow_from` decide new
//! AUTHs and connections (one already authenticated or trusted as the
//! controller stays so); the poller and the probe pick up their intervals at
//! once.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, VerifyMode};
use crate::control::ControlContext;
use crate::guard::control::ControlPolicy;
use crate::guard::lease::LeaseTuning;
use crate::kvrocks::admin_api::ReloadResponse;

/// Whether a reload applies a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Live,
    Restart,
}

/// Every key of the config file, as written in it, and whether a reload
/// applies it. A key missing here fails the unit tests.
pub const KEYS: &[(&str, Apply)] = &[
    ("listen", Apply::Restart),
    ("backend.addr", Apply::Restart),
    ("backend.password", Apply::Live),
    ("backend.user", Apply::Live),
    ("backend.connect_timeout_ms", Apply::Live),
    ("backend.tls.enabled", Apply::Live),
    ("backend.tls.ca_file", Apply::Live),
    ("backend.tls.server_name", Apply::Live),
    ("backend.tls.cert_file", Apply::Live),
    ("backend.tls.key_file", Apply::Live),
    ("drain_timeout_ms", Apply::Live),
    ("threads", Apply::Restart),
    ("tls.listen", Apply::Restart),
    ("tls.cert_file", Apply::Live),
    ("tls.key_file", Apply::Live),
    ("tls.ca_file", Apply::Live),
    ("tls.handshake_timeout_ms", Apply::Live),
    ("tls.handover", Apply::Live),
    ("tls.peer_port", Apply::Live),
    ("tls.peer_ca_file", Apply::Live),
    ("node_id", Apply::Restart),
    ("admin.listen", Apply::Restart),
    ("admin.token", Apply::Live),
    ("admin.tls.cert_file", Apply::Live),
    ("admin.tls.key_file", Apply::Live),
    ("admin.tls.ca_file", Apply::Live),
    ("control.password", Apply::Live),
    ("control.allow_from", Apply::Live),
    ("lease.mode", Apply::Live),
    ("lease.initial", Apply::Restart),
    ("lease.clock_drift", Apply::Live),
    ("lease.safety_margin_ms", Apply::Live),
    ("lease.reject_prefix", Apply::Live),
    ("lease.fence_reads", Apply::Live),
    ("lease.probe_interval_ms", Apply::Live),
    ("durability.min_replicas", Apply::Live),
    ("durability.timeout_ms", Apply::Live),
    ("upgrade.socket", Apply::Restart),
    ("controller.url", Apply::Restart),
    ("controller.namespace", Apply::Restart),
    ("controller.cluster", Apply::Restart),
    ("controller.poll_interval_ms", Apply::Live),
    ("controller.ttl_ms", Apply::Live),
    ("controller.failure_detection_ms", Apply::Live),
    ("controller.timeout_ms", Apply::Live),
    ("controller.switch_timeout_ms", Apply::Live),
    ("controller.node_lost_wait_ms", Apply::Live),
    ("controller.ca_file", Apply::Live),
    ("sentinel.addrs", Apply::Restart),
    ("sentinel.master_name", Apply::Restart),
    ("sentinel.password", Apply::Live),
    ("sentinel.user", Apply::Live),
    ("sentinel.address", Apply::Restart),
    ("sentinel.poll_interval_ms", Apply::Live),
    ("sentinel.timeout_ms", Apply::Live),
    ("sentinel.max_lease_ms", Apply::Live),
    ("sentinel.announce", Apply::Restart),
    ("verify.mode", Apply::Live),
    ("verify.hold", Apply::Live),
    ("verify.timeout_ms", Apply::Live),
    ("verify.max_in_flight", Apply::Live),
    ("pause.max_buffered_bytes", Apply::Live),
    ("pause.max_buffered_requests", Apply::Live),
    ("pause.on_demote", Apply::Live),
    ("pause.promotion_timing", Apply::Live),
    ("commands.deny", Apply::Live),
    ("commands.classes", Apply::Live),
    ("commands.learn_from_backend", Apply::Restart),
    ("limits.max_clients", Apply::Live),
    ("limits.max_bulk_len", Apply::Live),
    ("limits.max_multibulk_len", Apply::Live),
    ("limits.max_inline_len", Apply::Live),
    ("limits.max_request_bytes", Apply::Live),
    ("limits.max_client_output_bytes", Apply::Live),
    ("limits.client_idle_timeout_ms", Apply::Live),
    ("log.format", Apply::Restart),
    ("log.level", Apply::Live),
];

/// `leasegate_config_reloads_total{result}`: `success` or `failed`.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    pub reloads: Family<ResultLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl ReloadMetrics {
    /// Registers the family with both results at 0.
    pub fn register(&self, registry: &mut Registry) {
        for result in ["success", "failed"] {
            let _ = self.reloads.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP, POST /v1/reload) by result; a failed one changed nothing",
            self.reloads.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("leasegate was started without a config file: there is nothing to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Re-reads the config file and applies what may change live; the one
/// reload path (SIGHUP, `POST /v1/reload`). Logs and counts the outcome.
pub fn reload(shared: &ControlContext) -> Result<ReloadResponse, ReloadError> {
    let _one_at_a_time = shared.reloading.lock().unwrap_or_else(|p| p.into_inner());
    let outcome = match shared.config_path.as_deref() {
        None => Err(ReloadError::NoFile),
        Some(path) => Config::load(path)
            .map_err(ReloadError::from)
            .and_then(|file| apply(shared, file, &path.display().to_string())),
    };
    match &outcome {
        Ok(r) => {
            shared.metrics.reload.count("success");
            if r.needs_restart.is_empty() {
                info!(applied = ?r.applied, needs_restart = ?r.needs_restart, "config reloaded");
            } else {
                warn!(applied = ?r.applied, needs_restart = ?r.needs_restart, "config reloaded; the needs_restart changes take effect only after a restart");
            }
        }
        Err(e) => {
            shared.metrics.reload.count("failed");
            error!(error = %e, "config reload failed; keeping the running config");
        }
    }
    outcome
}

/// Applies `file` (validated, read from `origin`) to the running proxy:
/// the live keys take effect, the others keep their running value.
pub fn apply(
    shared: &ControlContext,
    file: Config,
    origin: &str,
) -> Result<ReloadResponse, ReloadError> {
    let old = shared.config.load_full();
    let mut running = file.clone();
    keep_until_restart(&old, &mut running);
    if running.verify.mode == VerifyMode::EveryWrite && shared.gate.verifier().is_none() {
        // Started without controller.url: there is no verifier to switch on.
        running.verify.mode = old.verify.mode;
    }
    // The file is valid on its own; with the running values of the keys that
    // need a restart it must be too (e.g. ttl_ms 0 beside a kept controller.url).
    running.check(&format!(
        "{origin} (with the settings that need a restart as they run)"
    ))?;
    // The certificate files are read again even when their paths are the
    // same (a certificate renewed in place); unusable, nothing changes.
    let invalid = |(key, reason)| ConfigError::Invalid {
        path: origin.to_string(),
        key,
        reason,
    };
    let client_tls = running.tls.server_config().map_err(invalid)?;
    let node_tls = running.backend.tls.node_tls().map_err(invalid)?;
    let peer_tls = running.tls.peer_tls().map_err(invalid)?;
    let controller_tls = running.controller.tls().map_err(invalid)?;
    let admin_tls = running.admin.tls.server_config().map_err(invalid)?;
    let admin_ca = running.admin.tls.client_config().map_err(invalid)?;
    let changed = changed_keys(&old, &file);
    let applied = changed_keys(&old, &running);
    let needs_restart = changed
        .iter()
        .filter(|k| !applied.contains(k))
        .map(|k| k.to_string())
        .collect();
    if !applied.is_empty() {
        enforce(shared, &old, running);
    }
    let certificates: Vec<String> = [
        ("tls", client_tls.is_some()),
        ("backend.tls", node_tls.is_some()),
        ("controller", controller_tls.is_some()),
        ("admin.tls", admin_tls.is_some() || admin_ca.is_some()),
    ]
    .into_iter()
    .filter(|(_, read)| *read)
    .map(|(name, _)| name.to_string())
    .collect();
    if !certificates.is_empty() {
        info!(
            ?certificates,
            "TLS certificates read again: new TLS connections use them"
        );
    }
    shared.client_tls.store(client_tls);
    // New node connections use it; established ones go on.
    shared.node_tls.store(node_tls);
    // Sessions moving to another leasegate from now on use it.
    shared.peer_tls.store(peer_tls);
    // The poller and the verifier's drivers open new connections with it.
    shared.controller_tls.store(controller_tls);
    shared.admin_tls.store(admin_tls);
    shared.admin_ca.store(admin_ca);
    Ok(ReloadResponse {
        unchanged: changed.is_empty(),
        applied: applied.iter().map(|k| k.to_string()).collect(),
        needs_restart,
        certificates,
    })
}

/// Puts the running value of every restart key into `new`.
fn keep_until_restart(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.tls.listen = old.tls.listen;
    new.admin.listen.clone_from(&old.admin.listen);
    new.backend.addr.clone_from(&old.backend.addr);
    new.threads = old.threads;
    new.node_id.clone_from(&old.node_id);
    new.lease.initial = old.lease.initial;
    new.controller.url.clone_from(&old.controller.url);
    new.controller
        .namespace
        .clone_from(&old.controller.namespace);
    new.controller.cluster.clone_from(&old.controller.cluster);
    new.sentinel.addrs.clone_from(&old.sentinel.addrs);
    new.sentinel
        .master_name
        .clone_from(&old.sentinel.master_name);
    new.sentinel.address.clone_from(&old.sentinel.address);
    new.sentinel.announce = old.sentinel.announce;
    new.commands.learn_from_backend = old.commands.learn_from_backend;
    new.log.format = old.log.format;
    new.upgrade.socket.clone_from(&old.upgrade.socket);
}

/// Makes `new` the running config: the guard's settings, then the config
/// every reader loads, the command table, the server's part, the tasks.
fn enforce(shared: &ControlContext, old: &Config, new: Config) {
    let gate = &shared.gate;
    let lease = gate.lease();
    if lease.mode() != new.lease.mode {
        info!(from = ?lease.mode(), to = ?new.lease.mode, "lease.mode changed");
        lease.set_mode(new.lease.mode);
    }
    lease.set_tuning(LeaseTuning {
        clock_drift: new.lease.clock_drift,
        safety_margin_ms: new.lease.safety_margin_ms,
    });
    gate.reconfigure(
        ControlPolicy::new(new.control.password.as_deref(), &new.control.allow_from),
        &new.lease.reject_prefix,
        new.backend.login(),
    );
    gate.pause().set_bounds(
        new.pause.max_buffered_requests,
        new.pause.max_buffered_bytes,
    );
    gate.set_fence_reads(new.lease.fence_reads);
    gate.replica_acks()
        .set(new.durability.min_replicas, new.durability.timeout);
    shared.role.set_on_demote(new.pause.on_demote);
    shared.role.outside_grants.set(new.outside_grants());
    shared
        .controller_pause
        .set_enabled(new.pause.promotion_timing);
    if let Some(v) = gate.verifier() {
        v.configure(
            new.verify.mode == VerifyMode::EveryWrite,
            new.verify.hold,
            new.verify.max_in_flight,
            new.verify.timeout,
        );
    }
    // Only what this reload brought: the rest was said at start or at the
    // reload that brought it (every reload repeated the `threads` warning:
    // 131 lines in an attack pass).
    let before = old.warnings();
    let warnings: Vec<String> = new
        .warnings()
        .into_iter()
        .filter(|w| !before.contains(w))
        .collect();
    let new = Arc::new(new);
    shared.config.store(Arc::clone(&new));
    shared.refresh_commands();
    if let Some(server) = shared.on_reload.get() {
        server(old, &new);
    }
    shared.reloaded.send_modify(|generation| *generation += 1);
    for warning in warnings {
        warn!("{warning}");
    }
}

/// The keys whose values differ, in [`KEYS`] order.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<&'static str> {
    let (a, b) = (as_value(a), as_value(b));
    KEYS.iter()
        .map(|(key, _)| *key)
        .filter(|key| lookup(&a, key) != lookup(&b, key))
        .collect()
}

/// The config as the file would say it (every key, defaults filled in).
fn as_value(config: &Config) -> Value {
    serde_json::to_value(config).unwrap_or(Value::Null)
}

fn lookup<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of `v` under `prefix`, stopping at the keys of [`KEYS`]
    /// (maps such as `commands.classes` are one key).
    fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) if !KEYS.iter().any(|(k, _)| *k == prefix) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(v, &key, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    fn parse(text: &str) -> Config {
        Config::parse(text, "t").expect("valid config")
    }

    /// A fixture read without validation: it sets every key, including
    /// ones that exclude each other (`controller.url`, `sentinel.addrs`).
    fn fixture(text: &str) -> Config {
        serde_yaml_ng::from_str(text).expect("a config")
    }

    /// A config with every key away from its default, and one with every
    /// key different again.
    const ONE: &str = "\
listen: 127.0.0.1:7001
tls: {listen: 127.0.0.1:7101, cert_file: /a.crt, key_file: /a.key, ca_file: /a-ca.crt, handshake_timeout_ms: 71, handover: plain, peer_port: 7102, peer_ca_file: /a-peer-ca.crt}
backend: {addr: 127.0.0.1:7002, password: a, user: a, connect_timeout_ms: 11, tls: {enabled: true, ca_file: /a-node-ca.crt, server_name: a, cert_file: /a-lg.crt, key_file: /a-lg.key}}
drain_timeout_ms: 12
threads: 2
node_id: 0123456789012345678901234567890123456789
admin: {listen: 127.0.0.1:7003, token: a, tls: {cert_file: /a-adm.crt, key_file: /a-adm.key, ca_file: /a-adm-ca.crt}}
control: {password: a, allow_from: [10.0.0.1]}
lease: {mode: log-only, initial: valid, clock_drift: 0.02, safety_margin_ms: 13, reject_prefix: A, fence_reads: true, probe_interval_ms: 14}
controller: {url: http://a:1, namespace: a, cluster: a, poll_interval_ms: 15, ttl_ms: 16, failure_detection_ms: 17, timeout_ms: 18, switch_timeout_ms: 118, node_lost_wait_ms: 119, ca_file: /a-ctl-ca.crt}
sentinel: {addrs: ['a:1'], master_name: a, password: a, user: a, address: 'a:2', poll_interval_ms: 51, timeout_ms: 52, max_lease_ms: 53, announce: false}
verify: {mode: every-write, hold: acknowledgement, timeout_ms: 19, max_in_flight: 2}
pause: {max_buffered_bytes: 20, max_buffered_requests: 21, on_demote: moved, promotion_timing: false}
durability: {min_replicas: 1, timeout_ms: 27}
upgrade: {socket: /tmp/a.sock}
commands: {deny: [keys], classes: {x.y: read}, learn_from_backend: false}
limits: {max_clients: 22, max_bulk_len: 23, max_multibulk_len: 24, max_inline_len: 25, max_request_bytes: 2000, max_client_output_bytes: 2048, client_idle_timeout_ms: 26}
log: {format: json, level: debug}
";
    const TWO: &str = "\
listen: 127.0.0.1:8001
tls: {listen: 127.0.0.1:8101, cert_file: /b.crt, key_file: /b.key, ca_file: /b-ca.crt, handshake_timeout_ms: 81, handover: tls, peer_port: 8102, peer_ca_file: /b-peer-ca.crt}
backend: {addr: 127.0.0.1:8002, password: b, user: b, connect_timeout_ms: 31, tls: {enabled: false, ca_file: /b-node-ca.crt, server_name: b, cert_file: /b-lg.crt, key_file: /b-lg.key}}
drain_timeout_ms: 32
threads: 3
node_id: 9999999999999999999999999999999999999999
admin: {listen: 127.0.0.1:8003, token: b, tls: {cert_file: /b-adm.crt, key_file: /b-adm.key, ca_file: /b-adm-ca.crt}}
control: {password: b, allow_from: [10.0.0.2]}
lease: {mode: block-write, initial: expired, clock_drift: 0.03, safety_margin_ms: 33, reject_prefix: B, fence_reads: false, probe_interval_ms: 34}
controller: {url: http://b:1, namespace: b, cluster: b, poll_interval_ms: 35, ttl_ms: 36, failure_detection_ms: 37, timeout_ms: 38, switch_timeout_ms: 138, node_lost_wait_ms: 139, ca_file: /b-ctl-ca.crt}
sentinel: {addrs: ['b:1'], master_name: b, password: b, user: b, address: 'b:2', poll_interval_ms: 61, timeout_ms: 62, max_lease_ms: 63, announce: true}
verify: {mode: off, hold: request, timeout_ms: 39, max_in_flight: 3}
pause: {max_buffered_bytes: 40, max_buffered_requests: 41, on_demote: readonly, promotion_timing: true}
durability: {min_replicas: 2, timeout_ms: 47}
upgrade: {socket: /tmp/b.sock}
commands: {deny: [flushall], classes: {x.y: write}, learn_from_backend: true}
limits: {max_clients: 42, max_bulk_len: 43, max_multibulk_len: 44, max_inline_len: 45, max_request_bytes: 4000, max_client_output_bytes: 4096, client_idle_timeout_ms: 46}
log: {format: text, level: warn}
";

    #[test]
    fn every_config_key_is_classified() {
        let mut found = Vec::new();
        leaves(&as_value(&fixture(ONE)), "", &mut found);
        let known: Vec<String> = KEYS.iter().map(|(k, _)| k.to_string()).collect();
        let unclassified: Vec<&String> = found.iter().filter(|k| !known.contains(k)).collect();
        assert!(
            unclassified.is_empty(),
            "add these to reload::KEYS: {unclassified:?}"
        );
        let stale: Vec<&String> = known.iter().filter(|k| !found.contains(k)).collect();
        assert!(stale.is_empty(), "no such config keys: {stale:?}");
    }

    #[test]
    fn only_live_keys_change_and_the_rest_wait_for_a_restart() {
        let (one, two) = (fixture(ONE), fixture(TWO));
        let all: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            changed_keys(&one, &two),
            all,
            "the fixtures differ in every key"
        );
        let mut running = two.clone();
        keep_until_restart(&one, &mut running);
        let live: Vec<&str> = KEYS
            .iter()
            .filter(|(_, a)| *a == Apply::Live)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(changed_keys(&one, &running), live);
        assert!(changed_keys(&one, &one).is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_applies_live_settings_and_reports_the_rest() {
        let base =
            "backend:\n  addr: 127.0.0.1:1\nnode_id: 0123456789012345678901234567890123456789\n";
        let shared = ControlContext::new(
            parse(base),
            Arc::new(crate::guard::lease::ManualClock::new(1_000_000_000)),
        );
        let file = parse(&format!(
            "{base}listen: 127.0.0.1:9\nlease: {{mode: block-write, safety_margin_ms: 7, reject_prefix: FENCED}}\n\
             pause: {{on_demote: readonly, max_buffered_requests: 3}}\nverify: {{mode: every-write}}\n\
             controller: {{url: http://c:1, namespace: n, cluster: c}}\nadmin: {{token: t}}\n"
        ));
        let r = apply(&shared, file, "t").expect("applies");
        assert!(!r.unchanged);
        assert_eq!(
            r.applied,
            [
                "admin.token",
                "lease.mode",
                "lease.safety_margin_ms",
                "lease.reject_prefix",
                "pause.max_buffered_requests",
                "pause.on_demote"
            ]
        );
        assert_eq!(
            r.needs_restart,
            [
                "listen",
                "controller.url",
                "controller.namespace",
                "controller.cluster",
                "verify.mode"
            ]
        );
        let config = shared.config.load();
        assert_eq!(config.listen.to_string(), "0.0.0.0:6380", "kept");
        assert_eq!(config.admin.token.as_deref(), Some("t"));
        let lease = shared.gate.lease();
        assert_eq!(lease.mode(), crate::guard::lease::LeaseMode::BlockWrite);
        assert_eq!(lease.tuning().safety_margin_ms, 7);
        assert_eq!(
            shared.role.on_demote(),
            crate::guard::pause::OnDemote::Readonly
        );
        assert_eq!(*shared.reloaded.borrow(), 1);
        // The same file again: nothing to apply, the restart keys still pending.
        let again = apply(&shared, (**config).clone(), "t").expect("applies");
        assert!(again.unchanged && again.applied.is_empty());
    }
}
