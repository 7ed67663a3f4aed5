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
mod tests {
    use super::*;

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
    fn deny_typo_is_an_error() {
        let text = "backend:\n  addr: h:1\ncommands:\n  deny: [flushal]\n";
        let err = Config::parse(text, "f").unwrap_err().to_string();
        assert!(err.contains("flushal"), "{err}");
        let ok = "backend:\n  addr: h:1\ncommands:\n  deny: [FLUSHALL, mod.cmd]\n  classes: {mod.cmd: write}\n";
        Config::parse(ok, "f").expect("valid");
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
