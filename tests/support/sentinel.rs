//! Real Redis Sentinels (`redis-server --sentinel`, what Debian's
//! `redis-sentinel` runs) on free ports, each with its own config file in a
//! temporary directory, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Client, Reply, PATIENCE};

/// What the Sentinels monitor and how quickly they act.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The name the master is monitored under.
    pub name: String,
    /// `host:port` of the master (its leasegate, in these tests).
    pub master: String,
    pub quorum: usize,
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
    /// The nodes' password (`sentinel auth-pass`), if they have one.
    pub auth_pass: Option<String>,
    /// The nodes' ACL user the Sentinels log in as (`sentinel auth-user`).
    pub auth_user: Option<String>,
    /// The Sentinels' own ACL user and password, if they have one: their
    /// `default` user is then off, they log in to each other with it
    /// (`sentinel sentinel-user`, `sentinel-pass`), and so does every
    /// [`Sentinel::client`].
    pub login: Option<(String, String)>,
    /// More lines for each Sentinel's config (such as more ACL users).
    pub extra: String,
    /// The address the Sentinels listen on (`0.0.0.0` for nodes in other
    /// network namespaces).
    pub bind: String,
}

impl Monitor {
    pub fn new(name: &str, master: &str, quorum: usize) -> Monitor {
        Monitor {
            name: name.into(),
            master: master.into(),
            quorum,
            down_after_ms: 2_000,
            failover_timeout_ms: 6_000,
            auth_pass: None,
            auth_user: None,
            login: None,
            extra: String::new(),
            bind: "127.0.0.1".into(),
        }
    }
}

/// One Sentinel.
pub struct Sentinel {
    pub port: u16,
    /// `AUTH` and its arguments for every client (empty: none).
    auth: Vec<String>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// Starts a Sentinel monitoring `monitor`.
    pub fn start(monitor: &Monitor) -> Sentinel {
        let dir = config_dir();
        for _ in 0..5 {
            let port = free_port();
            let path = dir.path().join("sentinel.conf");
            let (host, master_port) = monitor.master.rsplit_once(':').expect("host:port");
            let mut conf = format!(
                "port {port}\nbind {}\ndir {}\nlogfile {}\nsentinel monitor {} {host} {master_port} {}\nsentinel down-after-milliseconds {} {}\nsentinel failover-timeout {} {}\n",
                monitor.bind,
                dir.path().display(),
                dir.path().join("sentinel.log").display(),
                monitor.name,
                monitor.quorum,
                monitor.name,
                monitor.down_after_ms,
                monitor.name,
                monitor.failover_timeout_ms,
            );
            if let Some(pw) = &monitor.auth_pass {
                conf.push_str(&format!("sentinel auth-pass {} {pw}\n", monitor.name));
            }
            if let Some(user) = &monitor.auth_user {
                conf.push_str(&format!("sentinel auth-user {} {user}\n", monitor.name));
            }
            if let Some((user, pw)) = &monitor.login {
                conf.push_str(&format!(
                    "user default off\nuser {user} on >{pw} allchannels +@all\nsentinel sentinel-user {user}\nsentinel sentinel-pass {pw}\n"
                ));
            }
            conf.push_str(&monitor.extra);
            std::fs::write(&path, conf).expect("write sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&path)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (with --sentinel) must be installed");
            let ip = if monitor.bind == "0.0.0.0" {
                [0, 0, 0, 0]
            } else {
                [127, 0, 0, 1]
            };
            if super::wait_listening_on(ip, port, &mut child, "redis-sentinel").is_ok() {
                return Sentinel {
                    port,
                    auth: monitor
                        .login
                        .as_ref()
                        .map(|(u, p)| vec!["AUTH".to_string(), u.clone(), p.clone()])
                        .unwrap_or_default(),
                    child: Some(child),
                    _dir: dir,
                };
            }
        }
        panic!("redis-sentinel could not listen on any of 5 free ports");
    }

    /// `host:port` of this Sentinel.
    /// The Sentinel's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client of this Sentinel, logged in where it has its own user.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.port);
        if !self.auth.is_empty() {
            let auth: Vec<&str> = self.auth.iter().map(String::as_str).collect();
            assert_eq!(c.cmd(&auth), Reply::ok(), "AUTH at Sentinel {}", self.port);
        }
        c
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`, as `host:port`.
    pub fn master_addr(&self, name: &str) -> Option<String> {
        match self
            .client()
            .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])
        {
            Reply::Array(parts) if parts.len() == 2 => {
                Some(format!("{}:{}", parts[0].text(), parts[1].text()))
            }
            _ => None,
        }
    }

    /// `SENTINEL REPLICAS`: each replica's `name` (`host:port`) and `flags`.
    pub fn replicas(&self, name: &str) -> Vec<(String, String)> {
        let Reply::Array(replicas) = self.client().cmd(&["SENTINEL", "REPLICAS", name]) else {
            return Vec::new();
        };
        replicas
            .iter()
            .filter_map(|r| match r {
                Reply::Array(fields) => {
                    let get = |key: &str| {
                        fields
                            .chunks(2)
                            .find(|kv| kv[0].text() == key)
                            .map(|kv| kv[1].text())
                    };
                    Some((get("name")?, get("flags")?))
                }
                _ => None,
            })
            .collect()
    }

    /// How many other Sentinels this one knows.
    pub fn other_sentinels(&self, name: &str) -> usize {
        match self.client().cmd(&["SENTINEL", "SENTINELS", name]) {
            Reply::Array(s) => s.len(),
            _ => 0,
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    /// Stops the Sentinel; when the test failed, prints the end of its log
    /// (what it saw and did: `+sdown`, `+failover-*`, aborts) to stderr.
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            super::print_log_tail(
                &format!("Sentinel {}", self.port),
                &self._dir.path().join("sentinel.log"),
            );
        }
    }
}

/// A directory for a Sentinel's config, in memory where the host has
/// `/dev/shm`. A Sentinel rewrites and fsyncs its config at each step of a
/// failover; on a busy disk (tests building and writing beside it) one
/// fsync took 2.5 s, the Sentinel's timer saw the jump and entered TILT
/// mode, and for the next 30 s it did nothing: the failover it led never
/// finished ("+tilt" in its log, the test's "Sentinels name B" timing out).
fn config_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sentinel")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

/// `n` Sentinels monitoring `monitor`, waited for until they know each
/// other (their hello messages pass through the master's leasegate).
pub fn start_all(monitor: &Monitor, n: usize) -> Vec<Sentinel> {
    let sentinels: Vec<Sentinel> = (0..n).map(|_| Sentinel::start(monitor)).collect();
    eventually(
        "the Sentinels know each other",
        Duration::from_secs(15),
        || {
            sentinels
                .iter()
                .all(|s| s.other_sentinels(&monitor.name) == n - 1)
        },
    );
    sentinels
}

/// Waits (polling every 50 ms) until `check` holds; fails after `within`.
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within.max(PATIENCE),
            "{what}: not within {:?}",
            within.max(PATIENCE)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
