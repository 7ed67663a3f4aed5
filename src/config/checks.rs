//! The config's checks and warnings: what makes a file refused at load,
//! each error naming its key ([`Config::check`]), and what is allowed but
//! unwise, said at start-up and by `check-config` ([`Config::warnings`]).

use std::net::SocketAddr;

use super::{
    Config, LeaseMode, VerifyMode, DEFAULT_MAX_THREADS, MAX_COMMAND_NAME, MAX_THREADS,
    SENTINEL_POLL_BOUND,
};
use crate::config::ConfigError;

impl Config {
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
        // No lease lasts longer; a margin past 2^64 ns wrapped to almost
        // nothing and left a lease its whole term (an audit).
        if self.lease.safety_margin_ms > crate::guard::lease::MAX_TTL_MS {
            return Err((
                "lease.safety_margin_ms",
                format!(
                    "must be at most {} (one hour, the longest lease)",
                    crate::guard::lease::MAX_TTL_MS
                ),
            ));
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
            let bound = c.ttl_ms.saturating_add(self.lease.safety_margin_ms);
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
        if self.controller.url.is_some()
            && self.control.allow_from.is_empty()
            && self
                .control
                .password
                .as_ref()
                .is_some_and(|p| Some(p) != self.backend.password.as_ref())
        {
            out.push(
                "control.password differs from backend.password and control.allow_from is empty: \
                 kvrocks-controller 1.2.0 logs in with the node password, so its connections are \
                 ordinary clients' and its topology pushes are refused (-NOPERM); list its hosts \
                 in control.allow_from"
                    .to_string(),
            );
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
        // (A listener on every address reaches the loopback address of
        // its own family; `[::]` reaching 127.0.0.1 depends on the host's
        // `bindv6only`, so that is not refused.)
        let reaches = |l: SocketAddr| {
            l.port() == port
                && (l.ip() == ip
                    || (l.ip().is_unspecified() && ip.is_loopback() && l.is_ipv4() == ip.is_ipv4()))
        };
        if reaches(self.listen) {
            Some("listen")
        } else if self.tls.listen.is_some_and(reaches) {
            Some("tls.listen")
        } else {
            None
        }
    }
}

/// `host:port` with a host and a port number.
fn is_host_port(addr: &str) -> bool {
    matches!(addr.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests;
