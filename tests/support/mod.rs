//! Test support: real `redis-server` and `leasegate` processes on free
//! loopback ports, cleaned up on drop, and a small blocking RESP client that
//! decodes replies with `redis-protocol` (the oracle, independent of the
//! proxy's own framers).

#![allow(dead_code)]

pub mod cluster_py;
pub mod controller;
pub mod history;
pub mod kvctl;
pub mod kvrocks;
pub mod load;
pub mod netns;
pub mod node;
pub mod scripted;
pub mod sentinel;
pub mod tls;
pub mod unread;
pub mod upgrade;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it is a failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A loopback port that was free a moment ago. Nothing reserves it: until
/// the server meant for it binds it, another process may take it. Servers
/// are therefore started with [`wait_listening`], which tells whose
/// listener it finds, and moved to another port if theirs lost.
///
/// Chosen below the kernel's ephemeral range (32768–60999 by default), at
/// random, never twice in this process: a port from the ephemeral range
/// (what binding port 0 gives) is also what every outgoing connection of
/// every test gets as its local port, and a test whose ports cannot all be
/// moved (a TLS port named in another leasegate's config) failed when one
/// was taken that way.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<(HashSet<u16>, u64)>> = Mutex::new(None);
    const LOW: u64 = 20_000;
    const HIGH: u64 = 32_768;
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let (ports, state) = given.get_or_insert_with(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        (HashSet::new(), seed | 1)
    });
    for _ in 0..1_000 {
        // xorshift64: enough to spread the ports of parallel tests.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let port = (LOW + *state % (HIGH - LOW)) as u16;
        if ports.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.insert(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// How many ports a server is tried on before the test gives up.
const PORT_ATTEMPTS: usize = 5;

/// Waits until `child` itself listens on 127.0.0.1:`port`; its exit status
/// if it exits first (its port was taken between choosing and binding it).
///
/// A connection that succeeds is no proof: it shows only that *some* process
/// listens there. Taking another test's server for ours let a test talk to a
/// stranger, and fail with "Connection reset by peer" when the stranger's
/// test ended and killed it.
pub fn wait_listening(port: u16, child: &mut Child, what: &str) -> Result<(), ExitStatus> {
    wait_listening_on([127, 0, 0, 1], port, child, what)
}

/// [`wait_listening`] for a listener bound to `ip` (`[0, 0, 0, 0]`: all
/// addresses) rather than 127.0.0.1.
pub fn wait_listening_on(
    ip: [u8; 4],
    port: u16,
    child: &mut Child,
    what: &str,
) -> Result<(), ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if listens_on(child.id(), ip, port) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not listen on {port} within {PATIENCE:?}");
}

/// Whether process `pid` holds the listening socket on `ip`:`port`:
/// `/proc/net/tcp` names the listening socket's inode, `/proc/<pid>/fd`
/// lists the process's sockets. For the wildcard address (`0.0.0.0`) a
/// dual-stack `[::]` listener (`/proc/net/tcp6`, as Go binds it) counts too.
///
/// The tables are the process's own (`/proc/<pid>/net`): those of its
/// network namespace, a lab host's too (`netns::Lab`).
fn listens_on(pid: u32, ip: [u8; 4], port: u16) -> bool {
    let mut tables = vec![(
        format!("/proc/{pid}/net/tcp"),
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip)),
    )];
    if ip == [0; 4] {
        tables.push((
            format!("/proc/{pid}/net/tcp6"),
            format!("{:032X}:{port:04X}", 0),
        ));
    }
    let mut listeners: Vec<String> = Vec::new();
    for (path, local) in &tables {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        // Columns: sl local_address rem_address st ... inode; st 0A is LISTEN.
        listeners.extend(
            table
                .lines()
                .skip(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>())
                .filter(|f| f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                .filter_map(|f| f.get(9).map(|inode| format!("socket:[{inode}]"))),
        );
    }
    if listeners.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| listeners.iter().any(|l| target.as_os_str() == l.as_str()))
    })
}

/// Waits until the server at `port` answers a request (anything but
/// `-LOADING`: an error such as `-NOAUTH` is an answer too).
fn wait_answering(port: u16, what: &str) {
    let start = Instant::now();
    loop {
        let mut c = Client::connect(port);
        c.send_raw(b"PING\r\n");
        match c.read() {
            Reply::Error(e) if e.starts_with("LOADING") => {}
            _ => return,
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what} on {port} still loading after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `redis-server` (standing in for Kvrocks) on a free port.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(status) => eprintln!(
                    "redis-server could not listen on {} ({status}); trying another port",
                    server.port
                ),
            }
        }
        panic!("redis-server could not listen on any of {PORT_ATTEMPTS} free ports");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Starts the server on `self.port`; its exit status if it could not
    /// listen there.
    fn launch(&mut self) -> Result<(), ExitStatus> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--logfile", &self.log_path().display().to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        wait_listening(self.port, &mut child, "redis-server")?;
        self.child = Some(child);
        wait_answering(self.port, "redis-server");
        Ok(())
    }

    /// Its log file (printed when a test fails).
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Kills the server (the port stays reserved for `restart`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port. The port is not reserved while the
    /// server is down: if another process holds it, wait for it to be free.
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        while let Err(status) = self.launch() {
            assert!(
                start.elapsed() < PATIENCE,
                "redis-server could not listen on {} again ({status}): another process holds the port",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A direct client, bypassing the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for RedisServer {
    /// Stops the server; when the test failed, prints the end of its log
    /// (replication: links, syncs, role changes) to stderr.
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            print_log_tail(&format!("redis-server {}", self.port), &self.log_path());
        }
    }
}

/// How many of a server's last log lines a failing test prints.
const LOG_TAIL: usize = 60;

/// Prints the last [`LOG_TAIL`] lines of the log at `path` to stderr,
/// headed by `what` (for a failing test: what the servers saw).
pub fn print_log_tail(what: &str, path: &std::path::Path) {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
    eprintln!(
        "--- {what} (last {} lines of its log) ---\n{}",
        tail.len(),
        tail.join("\n")
    );
}

/// The real `leasegate` binary, configured by a YAML file, on a free port.
pub struct Proxy {
    pub port: u16,
    child: Option<Child>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts leasegate in front of `backend` with extra YAML appended to the
    /// generated config (top-level keys other than `listen`/`backend`).
    pub fn start(backend: &str, extra_yaml: &str) -> Proxy {
        Proxy::start_with_backend_yaml(&format!("backend:\n  addr: {backend}\n"), extra_yaml)
    }

    /// A leasegate as the failover tests run it beside a node: `node_id`
    /// `id`, an admin API with `token`, loopback as the controller, the
    /// lease in `block-write` and the node probed every 100 ms.
    pub fn for_failover(backend: &str, id: &str, token: &str) -> Proxy {
        Proxy::start(
            backend,
            &format!(
                "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {token}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n",
                free_port()
            ),
        )
    }

    pub fn start_with_backend_yaml(backend_yaml: &str, extra_yaml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut extra_yaml = extra_yaml.to_string();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match Proxy::launch(&dir, port, backend_yaml, &extra_yaml) {
                Ok((child, config_path)) => {
                    return Proxy {
                        port,
                        child: Some(child),
                        config_path,
                        _dir: dir,
                    }
                }
                // Its port or its admin port was taken: new ones for both.
                Err(status) => {
                    eprintln!("leasegate could not start on {port} ({status}); trying other ports");
                    extra_yaml = with_fresh_admin_port(&extra_yaml);
                }
            }
        }
        panic!("leasegate could not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// As [`Proxy::start`], listening on `port`, chosen beforehand (for
    /// servers that must know the address first, such as a Sentinel
    /// monitoring it); panics if the port was taken meanwhile.
    pub fn start_at(port: u16, backend: &str, extra_yaml: &str) -> Proxy {
        Proxy::start_at_with_backend_yaml(
            port,
            &format!("backend:\n  addr: {backend}\n"),
            extra_yaml,
        )
    }

    /// [`Proxy::start_at`] with its `backend:` section given in full.
    #[allow(dead_code)]
    pub fn start_at_with_backend_yaml(port: u16, backend_yaml: &str, extra_yaml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        match Proxy::launch(&dir, port, backend_yaml, extra_yaml) {
            Ok((child, config_path)) => Proxy {
                port,
                child: Some(child),
                config_path,
                _dir: dir,
            },
            Err(status) => panic!("leasegate could not start on {port} ({status})"),
        }
    }

    /// Writes the config into `dir` and starts leasegate on `port`; its
    /// exit status if it could not listen there.
    fn launch(
        dir: &tempfile::TempDir,
        port: u16,
        backend_yaml: &str,
        extra_yaml: &str,
    ) -> Result<(Child, PathBuf), ExitStatus> {
        let config_path = dir.path().join("leasegate.yaml");
        // The admin API defaults to 127.0.0.1:9180; tests running in
        // parallel would fight over it, so it is off unless asked for.
        let admin = if extra_yaml.lines().any(|l| l.starts_with("admin:")) {
            ""
        } else {
            "admin:\n  listen: \"\"\n"
        };
        let yaml = format!(
            "listen: 127.0.0.1:{port}\n{backend_yaml}log:\n  level: '{}'\n{admin}{extra_yaml}",
            // LEASEGATE_TEST_LOG=info (or a filter) to see what the proxies did.
            std::env::var("LEASEGATE_TEST_LOG").unwrap_or_else(|_| "warn".into())
        );
        std::fs::write(&config_path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["run", "-c"])
            .arg(&config_path)
            // Its upgrade socket (by default in the temporary directory)
            // goes with the test's directory, killed or not.
            .env("TMPDIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leasegate");
        tag_log(&mut child, port);
        wait_listening(port, &mut child, "leasegate")?;
        Ok((child, config_path))
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The test's directory for this leasegate: its config, and its
    /// temporary directory (`TMPDIR`: the default upgrade socket is there,
    /// so a successor started by hand needs it too).
    #[allow(dead_code)]
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The port of the admin API, from `admin.listen` in the config.
    pub fn admin_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parse config");
        let listen = yaml["admin"]["listen"]
            .as_str()
            .expect("admin.listen is configured");
        listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("admin.listen has a port")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) to the proxy.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Starts the proxy again with the same config file (same ports), as
    /// a supervisor would after a crash; kills it first if it still runs.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["run", "-c"])
            .arg(&self.config_path)
            .env("TMPDIR", self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leasegate");
        tag_log(&mut child, self.port);
        if let Err(status) = wait_listening(self.port, &mut child, "leasegate") {
            panic!(
                "leasegate could not start again on {} ({status})",
                self.port
            );
        }
        self.child = Some(child);
    }

    /// Waits for the proxy to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("leasegate did not exit within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Number of open file descriptors of the proxy process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }
}

/// `yaml` with the port of a loopback `admin.listen` replaced by a fresh
/// one (tests learn it from the config file, [`Proxy::admin_port`]).
fn with_fresh_admin_port(yaml: &str) -> String {
    let mut in_admin = false;
    let mut out = String::new();
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_admin = line.starts_with("admin:");
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim_start().strip_prefix("listen: 127.0.0.1:") {
            Some(port) if in_admin && port.parse::<u16>().is_ok() => {
                out.push_str(&format!("{indent}listen: 127.0.0.1:{}", free_port()));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends signal `name` (`STOP`, `CONT`, `USR2`, ...) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A decoded reply, in one shape for RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Push(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Other(String),
}

impl Reply {
    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
    pub fn error_text(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Status(s) => s.clone(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }
}

fn from_resp2(f: redis_protocol::resp2::types::OwnedFrame) -> Reply {
    use redis_protocol::resp2::types::OwnedFrame as F;
    match f {
        F::SimpleString(s) => Reply::Status(String::from_utf8_lossy(&s).into_owned()),
        F::Error(e) => Reply::Error(e),
        F::Integer(i) => Reply::Int(i),
        F::BulkString(b) => Reply::Bulk(b),
        F::Array(items) => Reply::Array(items.into_iter().map(from_resp2).collect()),
        F::Null => Reply::Nil,
    }
}

fn from_resp3(f: redis_protocol::resp3::types::OwnedFrame) -> Reply {
    use redis_protocol::resp3::types::OwnedFrame as F;
    match f {
        F::SimpleString { data, .. } => Reply::Status(String::from_utf8_lossy(&data).into_owned()),
        F::SimpleError { data, .. } => Reply::Error(data),
        F::BlobError { data, .. } => Reply::Error(String::from_utf8_lossy(&data).into_owned()),
        F::Number { data, .. } => Reply::Int(data),
        F::BlobString { data, .. } => Reply::Bulk(data),
        F::Null => Reply::Nil,
        F::Array { data, .. } => Reply::Array(data.into_iter().map(from_resp3).collect()),
        F::Push { data, .. } => Reply::Push(data.into_iter().map(from_resp3).collect()),
        F::Map { data, .. } => Reply::Map(
            data.into_iter()
                .map(|(k, v)| (from_resp3(k), from_resp3(v)))
                .collect(),
        ),
        other => Reply::Other(format!("{other:?}")),
    }
}

/// The `key:value` lines of an INFO-format reply (a heartbeat's lease report).
pub fn info_fields(reply: &Reply) -> std::collections::HashMap<String, String> {
    reply
        .text()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    leasegate::resp::encode::request(args).to_vec()
}

/// What a [`Client`] talks over: a plain socket, or TLS over one
/// ([`tls::TlsConn`]).
pub trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, wait: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, wait: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, wait)
    }
}

/// A blocking RESP client over a real socket.
pub struct Client {
    stream: Box<dyn Conn>,
    buf: Vec<u8>,
    /// Decode as RESP3 (after a successful `HELLO 3`).
    pub resp3: bool,
}

impl Client {
    /// Switches to RESP3 (`HELLO 3`) and subscribes to `channel`: RESP3's
    /// subscribe mode, where any command may still be sent.
    pub fn subscribe_in_resp3(&mut self, channel: &str) {
        self.send(&["HELLO", "3"]);
        self.resp3 = true;
        assert!(matches!(self.read(), Reply::Map(_)), "HELLO 3");
        self.send(&["SUBSCRIBE", channel]);
        assert!(matches!(self.read(), Reply::Push(_)), "SUBSCRIBE {channel}");
    }

    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    /// A client connected from `src`, another loopback address (an
    /// application host that is not the controller's, where 127.0.0.1 is
    /// trusted as the controller: `control.allow_from`).
    pub fn connect_from(src: &str, port: u16) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(format!("{src}:0").parse().expect("source address"))
                .expect("bind the source address");
            socket
                .connect(([127, 0, 0, 1], port).into())
                .await
                .expect("connect")
        });
        let stream = stream.into_std().expect("std stream");
        stream.set_nonblocking(false).expect("blocking");
        Client::from_stream(stream)
    }

    /// A client on a connection made elsewhere (another host, a namespace).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        Client::over(Box::new(stream))
    }

    /// A client over `stream` (TLS, say).
    pub fn over(stream: Box<dyn Conn>) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            resp3: false,
        }
    }

    /// Sends a command without waiting for its reply.
    pub fn send(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_raw(&encode(&args));
    }

    /// Sends a command; `Err` if the connection is broken (no panic).
    pub fn try_send(&mut self, args: &[&str]) -> Result<(), String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.stream
            .write_all(&encode(&args))
            .map_err(|e| format!("write failed: {e}"))
    }

    /// One raw byte of what the peer sent (for answers that are not RESP).
    pub fn read_byte(&mut self) -> Option<u8> {
        if !self.buf.is_empty() {
            return Some(self.buf.remove(0));
        }
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.read()
    }

    /// Reads one reply; panics after [`PATIENCE`].
    pub fn read(&mut self) -> Reply {
        self.try_read(PATIENCE)
            .unwrap_or_else(|| panic!("no reply within {PATIENCE:?}"))
    }

    /// Reads one reply, or `None` if none arrives within `wait`; panics if
    /// the connection closes or breaks.
    pub fn try_read(&mut self, wait: Duration) -> Option<Reply> {
        self.read_within(wait).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one reply within `wait`: `Ok(None)` if none came, `Err` if the
    /// connection closed or broke (for tests where that is expected).
    pub fn read_within(&mut self, wait: Duration) -> Result<Option<Reply>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(reply) = self.decode() {
                return Ok(Some(reply));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed while waiting for a reply".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                // A signal to the test process (a child's exit, a
                // `SIGSTOP`/`SIGCONT` sent by a test) is not the peer's doing.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn decode(&mut self) -> Option<Reply> {
        let (reply, used) = if self.resp3 {
            let (f, used) = redis_protocol::resp3::decode::complete::decode(&self.buf)
                .expect("valid RESP3 from the proxy")?;
            (from_resp3(f), used)
        } else {
            let (f, used) = redis_protocol::resp2::decode::decode(&self.buf)
                .expect("valid RESP2 from the proxy")?;
            (from_resp2(f), used)
        };
        self.buf.drain(..used);
        Some(reply)
    }

    /// Whether the server closed the connection (after any pending bytes).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(PATIENCE))
            .expect("timeout");
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Bytes received but not yet decoded.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// `client`, having sent `AUTH password` first when a password is given.
#[allow(dead_code)]
pub fn authenticated(mut client: Client, password: Option<&str>) -> Client {
    if let Some(pw) = password {
        assert_eq!(client.cmd(&["AUTH", pw]), Reply::ok(), "AUTH");
    }
    client
}

/// A connection authenticated as the controller with `control.password`.
pub fn controller_client(proxy: &Proxy, password: &str) -> Client {
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["AUTH", password]), Reply::ok(), "control AUTH");
    c
}

/// `CLUSTERX HEARTBEAT <master> <ttl_ms> <epoch>` on a control connection.
pub fn heartbeat(c: &mut Client, master: &str, ttl_ms: u64, epoch: u64) -> Reply {
    c.cmd(&[
        "CLUSTERX",
        "HEARTBEAT",
        master,
        &ttl_ms.to_string(),
        &epoch.to_string(),
    ])
}

/// `POST /v1/failover` on `from`'s admin API, to `to`'s leasegate, with
/// `options` (more JSON fields, e.g. `"sync_timeout_ms":2000`; may be empty).
pub fn post_failover(from: &Proxy, to: &Proxy, token: &str, options: &str) -> (u16, String) {
    let sep = if options.is_empty() { "" } else { "," };
    let body = format!(r#"{{"to":"127.0.0.1:{}"{sep}{options}}}"#, to.admin_port());
    http(
        from.admin_port(),
        "POST",
        "/v1/failover",
        Some(token),
        Some(&body),
    )
}

/// Passes the log of the leasegate listening on `port` (its successors'
/// too: they inherit the pipe) to the test's stderr, each line tagged with
/// the port, so that the logs of a test's leasegates can be told apart.
fn tag_log(child: &mut Child, port: u16) {
    use std::io::{BufRead, Write};
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(std::io::stderr().lock(), "[leasegate :{port}] {line}");
        }
    });
}

/// The log (stderr, piped as a journal or `2>log` takes it) of a leasegate
/// before `backend`, with `lease_yaml` under `lease:` and no admin API,
/// that ran for `run_for` once it listened.
#[allow(dead_code)] // not every test binary reads a log
pub fn piped_log(backend: &str, lease_yaml: &str, run_for: Duration) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("leasegate.yaml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nbackend:\n  addr: {backend}\nadmin:\n  listen: \"\"\nlog:\n  level: info\nlease:\n{lease_yaml}"
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["run", "-c"])
        .arg(&config)
        .env_remove("NO_COLOR")
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leasegate");
    wait_listening(port, &mut child, "leasegate").expect("leasegate listens");
    let mut stderr = child.stderr.take().expect("its stderr");
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    std::thread::sleep(run_for);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("the log reader")
}

/// One series of the `/metrics` of the leasegate whose admin API is on
/// `admin` (`series` with its labels and the space after them); 0 if absent.
#[allow(dead_code)] // not every test binary reads metrics
pub fn metric(admin: u16, series: &str) -> u64 {
    let (_, metrics) = http(admin, "GET", "/metrics", None, None);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until [`metric`] `series` reads `value` (panics after
/// [`PATIENCE`]).
#[allow(dead_code)]
pub fn await_metric(admin: u16, series: &str, value: u64) {
    let start = Instant::now();
    while metric(admin, series) != value {
        assert!(
            start.elapsed() < PATIENCE,
            "{series}never read {value} (now {})",
            metric(admin, series)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets `key` through `c` until the write is acknowledged (the lease
/// came); panics after [`PATIENCE`].
#[allow(dead_code)]
pub fn set_once_leased(c: &mut Client, key: &str) {
    let start = Instant::now();
    loop {
        let reply = c.cmd(&["SET", key, "1"]);
        if reply == Reply::ok() {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "no lease: {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the replica `replica` talks to says its link to its master
/// is up.
#[allow(dead_code)]
pub fn wait_link_up(replica: &mut Client) {
    let start = Instant::now();
    loop {
        let Reply::Bulk(info) = replica.cmd(&["INFO", "replication"]) else {
            panic!("INFO is a bulk string")
        };
        if String::from_utf8_lossy(&info).contains("master_link_status:up") {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "replication link never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `leasegate failover --from <from admin> --to <to admin>` with
/// bounds no loaded test machine reaches (the stall itself is measured by
/// `bench/failover.sh`).
pub fn failover_command(from_admin: u16, to_admin: u16, token: &str) -> std::process::Output {
    failover_command_with(from_admin, to_admin, token, &[])
}

/// [`failover_command`] with more options (e.g. `--cluster-timing`).
pub fn failover_command_with(
    from_admin: u16,
    to_admin: u16,
    token: &str,
    extra: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["failover", "--from", &format!("127.0.0.1:{from_admin}")])
        .args(["--to", &format!("127.0.0.1:{to_admin}")])
        .args(["--token", token])
        .args(["--sync-timeout-ms", "2000", "--pause-timeout-ms", "5000"])
        .args(extra)
        .output()
        .expect("run leasegate failover")
}

/// Starts a Redis and a leasegate in front of it.
pub fn redis_and_proxy(extra_yaml: &str) -> (RedisServer, Proxy) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis.addr(), extra_yaml);
    (redis, proxy)
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`) to
/// 127.0.0.1:`port`; returns the status and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    http_at("127.0.0.1", port, method, path, token, body)
}

/// [`http`] to `ip`:`port` (a lab host's address, say).
pub fn http_at(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect((ip, port)).expect("connect to the admin API");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response head in {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

/// Decodes a chunked HTTP body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
