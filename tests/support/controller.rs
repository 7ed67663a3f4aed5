//! A test controller speaking the kvrocks-controller HTTP API shape.
//!
//! A blocking HTTP/1.1 server on a loopback port, one thread per connection,
//! with keep-alive (the proxy's pooled client reuses connections). It serves
//! `GET /api/v1/namespaces/{ns}/clusters/{cluster}` from state the test
//! changes while the proxy runs: the topology, a delay, an outage, a redirect.
//! `GET /count` tells how many topology answers it served.
//!
//! Like kvrocks-controller it also *drives* the nodes, over RESP at the
//! addresses in its topology (leasegate addresses, as the controller
//! registers them): [`TestController::push`] sends every node
//! `CLUSTERX SETNODES <nodes> <version>`, and
//! `POST .../shards/{i}/failover` with `{"preferred_node_id": ...}` promotes
//! that replica: the roles swap, the version goes up by one, the topology is
//! pushed to every node (the new master first) and, when
//! [`TestController::set_lease_heartbeat`] is on, the new master is sent
//! `CLUSTERX HEARTBEAT <id> <ttl> <version>`; the answer is
//! `{"data":{"new_master_id":...,"promote_ms":...,"timing":{...}}}`.
//! With `"wait_for_sync": true` it runs the failover of kvrocks-controller
//! PR #389 around that switch (options `sync_timeout_ms` 100,
//! `pause_timeout_ms` 500, `force_on_timeout` false, and `poll_interval_ms`
//! 1 where PR #389 polls every 10 ms): `CLIENT PAUSE <pause_timeout_ms>
//! WRITE` to the master, `INFO replication` of the master
//! (`master_repl_offset`) and the replica (`slave_repl_offset`) polled until
//! the replica's reaches the master's (else `CLIENT UNPAUSE` and an error,
//! unless `force_on_timeout`), the switch, then `CLIENT UNPAUSE` on the old
//! master. The controller keeps one RESP connection per node.
//! `GET /last-failover` answers the last failover's `timing` (when each step
//! happened, and `promote_ms`: how long the push that promoted the new
//! master took, i.e. the node's own promotion).
//!
//! The benchmarks run the same controller as a process: `bench/fake_controller.rs`
//! includes this file and starts it with [`TestController::start_on`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The namespace and cluster the test controller answers for.
pub const NAMESPACE: &str = "test-ns";
pub const CLUSTER: &str = "test-cluster";

/// The path that answers the number of topology answers served so far.
pub const COUNT_PATH: &str = "/count";

/// The path that answers the last shard failover's timing (JSON; 404 before
/// the first).
pub const LAST_FAILOVER_PATH: &str = "/last-failover";

/// kvrocks-controller's raft leader and peers (its embedded raft store).
pub const RAFT_PEERS_PATH: &str = "/api/v1/raft/peers";

/// A 40-character node id made of `n` in hex.
pub fn node_id(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

/// One shard's nodes: `(id, addr, role)`.
pub type ShardNodes = Vec<(String, String, String)>;

#[derive(Default)]
struct State {
    namespace: String,
    cluster: String,
    version: u64,
    shards: Vec<ShardNodes>,
    delay: Duration,
    down: bool,
    /// The raft leader `RAFT_PEERS_PATH` names; `None`: no raft store
    /// (answered with an error, as a controller on etcd answers it).
    raft_leader: Option<u64>,
    redirect: Option<String>,
    requests: Vec<(Instant, String)>,
    /// Do not keep `requests` (a long-running controller would grow it without end).
    forget_requests: bool,
    /// Topology answers (200) served.
    served: u64,
    /// Delayed requests being answered now, and the most at once since
    /// [`TestController::take_most_concurrent`].
    answering: usize,
    most_concurrent: usize,
    /// `AUTH` sent first on every RESP connection to a node.
    node_password: Option<String>,
    /// Lease TTL of the heartbeat sent to a new master after a failover.
    lease_heartbeat_ms: Option<u64>,
    /// Answer the failover endpoint with this error (status, message).
    failover_error: Option<(u16, String)>,
    /// Answer shard failovers as done without switching anything (a
    /// follower whose leader just died: 1.2.0 answers `200` and the change
    /// is never committed).
    failover_lost: bool,
    /// Shard failovers carried out.
    failovers: u64,
    /// The last shard failover's timing.
    last_failover: Option<serde_json::Value>,
    /// The RESP connections to the nodes, by address.
    conns: HashMap<String, NodeConn>,
    /// The last topology answer's body and the version and shards it was
    /// built from: answered again while they are unchanged, so a large
    /// topology served thousands of times a second (`bench/verify.sh`)
    /// is not serialized for each request.
    topology_body: Option<(u64, Vec<ShardNodes>, String)>,
}

/// The test controller; stops accepting when dropped.
pub struct TestController {
    pub port: u16,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl TestController {
    /// Starts with an empty topology at version 0.
    pub fn start() -> TestController {
        TestController::start_on("127.0.0.1:0", NAMESPACE, CLUSTER)
            .expect("bind the test controller")
    }

    /// Listens on `addr` (port 0: a free one) and answers for `namespace` and
    /// `cluster`; empty topology at version 0.
    pub fn start_on(addr: &str, namespace: &str, cluster: &str) -> std::io::Result<TestController> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        let state = Arc::new(Mutex::new(State {
            namespace: namespace.to_string(),
            cluster: cluster.to_string(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if s.lock().expect("state").down {
                    drop(conn);
                    continue;
                }
                let (s, st) = (Arc::clone(&s), Arc::clone(&st));
                std::thread::spawn(move || serve(conn, &s, &st));
            }
        });
        Ok(TestController {
            port,
            addr,
            state,
            stop,
        })
    }

    /// `http://127.0.0.1:<port>` (the address it listens on).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `controller:` section of a proxy config that polls this controller.
    pub fn yaml(&self, poll_interval_ms: u64, ttl_ms: u64) -> String {
        let (namespace, cluster) = {
            let s = self.state();
            (s.namespace.clone(), s.cluster.clone())
        };
        format!(
            "controller:\n  url: {}\n  namespace: {namespace}\n  cluster: {cluster}\n  poll_interval_ms: {poll_interval_ms}\n  ttl_ms: {ttl_ms}\n  timeout_ms: 500\n",
            self.url()
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state")
    }

    /// The cluster the controller reports: version and shards of `(id, addr, role)`.
    pub fn set_topology(&self, version: u64, shards: Vec<Vec<(&str, &str, &str)>>) {
        let mut s = self.state();
        s.version = version;
        s.shards = shards
            .into_iter()
            .map(|nodes| {
                nodes
                    .into_iter()
                    .map(|(id, addr, role)| (id.to_string(), addr.to_string(), role.to_string()))
                    .collect()
            })
            .collect();
    }

    /// Wait this long before answering each request.
    /// The most requests answered at once since the last call (a request is
    /// being answered from its arrival to its answer, delay included).
    pub fn take_most_concurrent(&self) -> usize {
        let mut s = self.state();
        let now = s.answering;
        std::mem::replace(&mut s.most_concurrent, now)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// While down, connections are closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// The raft leader this controller knows (`Some(0)`: none, as one cut
    /// off from the other controllers); `None`: it has no raft store.
    pub fn set_raft_leader(&self, leader: Option<u64>) {
        self.state().raft_leader = leader;
    }

    /// Answer `307` to `{base}{path}` (`base` like `http://127.0.0.1:1234`).
    pub fn set_redirect(&self, base: Option<String>) {
        self.state().redirect = base;
    }

    /// Every request received: when, and its path.
    pub fn requests(&self) -> Vec<(Instant, String)> {
        self.state().requests.clone()
    }

    /// Requests received after `since`.
    pub fn requests_since(&self, since: Instant) -> usize {
        self.requests().iter().filter(|(t, _)| *t >= since).count()
    }

    /// Whether to keep every request for [`TestController::requests`] (the
    /// default); a long-running controller turns it off.
    pub fn set_keep_requests(&self, keep: bool) {
        let mut s = self.state();
        s.forget_requests = !keep;
        if !keep {
            s.requests = Vec::new();
        }
    }

    /// Topology answers served so far (what `GET /count` answers).
    pub fn served(&self) -> u64 {
        self.state().served
    }

    /// RESP connections to the nodes authenticate with `AUTH <password>`.
    pub fn set_node_password(&self, password: Option<&str>) {
        self.state().node_password = password.map(str::to_string);
    }

    /// After a shard failover, send the new master a lease heartbeat of
    /// `ttl_ms` at the new version (`None`: no heartbeat, pull mode).
    pub fn set_lease_heartbeat(&self, ttl_ms: Option<u64>) {
        self.state().lease_heartbeat_ms = ttl_ms;
    }

    /// Refuse shard failovers with this status and message (`None`: carry them out).
    /// Answer shard failovers `200` with the new master's id, and switch
    /// nothing (a change its raft never commits).
    pub fn set_failover_lost(&self, lost: bool) {
        self.state().failover_lost = lost;
    }

    pub fn set_failover_error(&self, error: Option<(u16, &str)>) {
        self.state().failover_error = error.map(|(s, m)| (s, m.to_string()));
    }

    /// Shard failovers carried out so far.
    pub fn failovers(&self) -> u64 {
        self.state().failovers
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.state().version
    }

    /// Sends every node `CLUSTERX SETNODES <nodes> <version>` (through the
    /// addresses of the topology); the first error, if any.
    pub fn push(&self) -> Result<(), String> {
        let mut s = self.state();
        push_topology(&mut s, None).map(|_| ())
    }

    /// Sends every node `CLUSTERX SETNODEID <its id>` (as kvrocks-controller
    /// does before its first `SETNODES`); the first error, if any.
    pub fn push_node_ids(&self) -> Result<(), String> {
        let mut s = self.state();
        let nodes: Vec<(String, String)> = s
            .shards
            .iter()
            .flatten()
            .map(|(id, addr, _)| (id.clone(), addr.clone()))
            .collect();
        for (id, addr) in nodes {
            match resp_call(&mut s, &addr, &["CLUSTERX", "SETNODEID", &id]) {
                Ok(line) if line == "+OK" => {}
                Ok(line) => return Err(format!("SETNODEID to {addr}: {line}")),
                Err(e) => return Err(format!("SETNODEID to {addr}: {e}")),
            }
        }
        Ok(())
    }

    /// Sends `node` (`host:port`) `CLUSTERX HEARTBEAT <master_id> <ttl_ms>
    /// <version>` at the current version; the reply's first line.
    pub fn heartbeat(&self, node: &str, master_id: &str, ttl_ms: u64) -> Result<String, String> {
        let mut s = self.state();
        let version = s.version.to_string();
        let ttl = ttl_ms.to_string();
        resp_call(
            &mut s,
            node,
            &["CLUSTERX", "HEARTBEAT", master_id, &ttl, &version],
        )
    }

    /// Heartbeats every node of every shard naming its shard's master
    /// (`CLUSTERX HEARTBEAT <master_id> <ttl_ms> <version>`), as a
    /// lease-aware controller's probe does: the master renews its lease,
    /// the others learn the version. Failovers and these heartbeats take
    /// turns, so none names a master the topology has just replaced. The
    /// first failure (an I/O error or an error reply), if any.
    pub fn heartbeat_masters(&self, ttl_ms: u64) -> Result<(), String> {
        let mut s = self.state();
        let (version, ttl) = (s.version.to_string(), ttl_ms.to_string());
        let beats: Vec<(String, String)> = s
            .shards
            .iter()
            .filter_map(|nodes| {
                let master = nodes.iter().find(|(_, _, role)| role == "master")?;
                Some(
                    nodes
                        .iter()
                        .map(|(_, addr, _)| (master.0.clone(), addr.clone())),
                )
            })
            .flatten()
            .collect();
        let mut first_error = None;
        for (master, addr) in beats {
            let reply = resp_call(
                &mut s,
                &addr,
                &["CLUSTERX", "HEARTBEAT", &master, &ttl, &version],
            );
            let error = match reply {
                Ok(line) if line.starts_with('-') => Some(line),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if let Some(e) = error {
                first_error.get_or_insert(format!("HEARTBEAT to {addr}: {e}"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The last shard failover's timing (what `GET /last-failover` answers).
    pub fn last_failover(&self) -> Option<serde_json::Value> {
        self.state().last_failover.clone()
    }
}

/// Slot range of shard `i` of `n`: the 16384 slots split evenly.
fn slot_range(i: usize, n: usize) -> (usize, usize) {
    let n = n.max(1);
    (i * 16384 / n, (i + 1) * 16384 / n - 1)
}

/// The `CLUSTERX SETNODES` text of the whole topology: one line per node,
/// `<id> <host> <port> master - <slots>` or `<id> <host> <port> slave <master id>`.
fn nodes_text(s: &State) -> String {
    let mut lines = Vec::new();
    for (i, nodes) in s.shards.iter().enumerate() {
        let master = nodes
            .iter()
            .find(|(_, _, role)| role == "master")
            .map_or("-", |(id, _, _)| id.as_str());
        let (from, to) = slot_range(i, s.shards.len());
        for (id, addr, role) in nodes {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
            if role == "master" {
                lines.push(format!("{id} {host} {port} master - {from}-{to}"));
            } else {
                lines.push(format!("{id} {host} {port} slave {master}"));
            }
        }
    }
    lines.join("\n")
}

/// Sends every node the topology, `first` (an address) before the others;
/// the time each push took (address, ms), or the first error.
fn push_topology(s: &mut State, first: Option<&str>) -> Result<Vec<(String, f64)>, String> {
    let text = nodes_text(s);
    let version = s.version.to_string();
    let mut addrs: Vec<String> = s
        .shards
        .iter()
        .flatten()
        .map(|(_, addr, _)| addr.clone())
        .collect();
    if let Some(i) = first.and_then(|f| addrs.iter().position(|a| a == f)) {
        let addr = addrs.remove(i);
        addrs.insert(0, addr);
    }
    let mut first_error = None;
    let mut times = Vec::new();
    for addr in addrs {
        let sent = Instant::now();
        let reply = resp_call(s, &addr, &["CLUSTERX", "SETNODES", &text, &version]);
        times.push((addr.clone(), ms(sent.elapsed())));
        match reply {
            Ok(line) if line == "+OK" => {}
            Ok(line) => {
                first_error.get_or_insert(format!("SETNODES to {addr}: {line}"));
            }
            Err(e) => {
                first_error.get_or_insert(format!("SETNODES to {addr}: {e}"));
            }
        }
    }
    first_error.map_or(Ok(times), Err)
}

/// A duration in milliseconds (fractions kept).
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A node's answer to one command: its first line (`+OK`, `-ERR ...`, `:1`,
/// `$n`, `*n`) and, for a bulk string, its body.
pub struct NodeReply {
    pub line: String,
    pub bulk: Option<String>,
}

/// A RESP connection to one node (through the address in the topology),
/// kept open between commands.
struct NodeConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl NodeConn {
    /// Connects to `addr` (and sends `AUTH <password>` when given).
    fn open(addr: &str, password: Option<&str>) -> Result<NodeConn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut conn = NodeConn {
            reader: BufReader::new(stream),
            writer,
        };
        if let Some(pw) = password {
            let reply = conn.call(addr, &["AUTH", pw])?;
            if reply.line != "+OK" {
                return Err(format!("AUTH at {addr}: {}", reply.line));
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    fn call(&mut self, addr: &str, args: &[&str]) -> Result<NodeReply, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer
            .write_all(&out)
            .map_err(|e| format!("write to {addr}: {e}"))?;
        read_reply(&mut self.reader).map_err(|e| format!("read from {addr}: {e}"))
    }
}

/// Reads one whole reply (nested arrays included; only a top-level bulk
/// string's body is kept).
fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<NodeReply, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let line = line.trim_end().to_string();
    let count = |prefix: char| {
        line.strip_prefix(prefix)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
    };
    let mut bulk = None;
    if let Some(len) = count('$') {
        let mut body = vec![0u8; len as usize + 2];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        body.truncate(len as usize);
        bulk = Some(String::from_utf8_lossy(&body).into_owned());
    } else if let Some(n) = count('*') {
        for _ in 0..n {
            read_reply(reader)?;
        }
    }
    Ok(NodeReply { line, bulk })
}

/// One RESP command to `addr` on the controller's connection to it (opened,
/// with `AUTH` when a password is set, on first use; a broken kept
/// connection is replaced once); the whole reply.
fn node_call(s: &mut State, addr: &str, args: &[&str]) -> Result<NodeReply, String> {
    let password = s.node_password.clone();
    let (mut conn, kept) = match s.conns.remove(addr) {
        Some(conn) => (conn, true),
        None => (NodeConn::open(addr, password.as_deref())?, false),
    };
    let reply = match conn.call(addr, args) {
        Err(_) if kept => {
            conn = NodeConn::open(addr, password.as_deref())?;
            conn.call(addr, args)?
        }
        other => other?,
    };
    s.conns.insert(addr.to_string(), conn);
    Ok(reply)
}

/// Like [`node_call`]: the reply's first line (`+OK`, `-ERR ...`, `$n`, ...).
fn resp_call(s: &mut State, addr: &str, args: &[&str]) -> Result<String, String> {
    node_call(s, addr, args).map(|r| r.line)
}

/// An integer field of the `INFO replication` text the node at `addr`
/// answers.
fn replication_field(s: &mut State, addr: &str, field: &str) -> Result<u64, String> {
    let reply = node_call(s, addr, &["INFO", "replication"])?;
    let text = reply
        .bulk
        .ok_or_else(|| format!("INFO replication at {addr}: {}", reply.line))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("INFO replication at {addr} has no {field}"))
}

/// The options of a shard failover (the request's JSON body); those of
/// kvrocks-controller PR #389, and a poll interval.
struct FailoverOptions {
    preferred: Option<String>,
    /// Pause the master's writes and wait for the replica before switching.
    wait_for_sync: bool,
    sync_timeout_ms: u64,
    pause_timeout_ms: u64,
    /// Switch anyway when the replica has not caught up in time.
    force_on_timeout: bool,
    /// Between two reads of the offsets (PR #389: 10 ms).
    poll_interval_ms: u64,
}

impl FailoverOptions {
    fn parse(body: &str) -> Result<FailoverOptions, String> {
        let v: serde_json::Value = if body.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(body).map_err(|e| format!("bad request body: {e}"))?
        };
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(n) => n.as_u64().ok_or(format!("{key} must be a number")),
            }
        };
        let flag = |key: &str| -> Result<bool, String> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(b) => b.as_bool().ok_or(format!("{key} must be true or false")),
            }
        };
        let options = FailoverOptions {
            preferred: v
                .get("preferred_node_id")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            wait_for_sync: flag("wait_for_sync")?,
            sync_timeout_ms: number("sync_timeout_ms", 100)?,
            pause_timeout_ms: number("pause_timeout_ms", 500)?,
            force_on_timeout: flag("force_on_timeout")?,
            poll_interval_ms: number("poll_interval_ms", 1)?,
        };
        if options.wait_for_sync && options.pause_timeout_ms <= options.sync_timeout_ms {
            return Err("pause_timeout_ms must exceed sync_timeout_ms".into());
        }
        Ok(options)
    }
}

/// What a shard failover did and when (ms since its request was taken up):
/// its answer's `data` and `GET /last-failover`.
#[derive(Default)]
struct Timing {
    /// `CLIENT PAUSE` answered by the master (wait_for_sync).
    pause_at_ms: Option<f64>,
    /// The replica's offset reached the master's (wait_for_sync).
    synced_at_ms: Option<f64>,
    /// Offset reads (of both nodes) until then.
    polls: u64,
    offsets: Option<(u64, u64)>,
    /// The push to the new master (the node's promotion) took this long.
    promote_ms: Option<f64>,
    /// Every push, in order: (address, ms).
    pushes: Vec<(String, f64)>,
    pushed_at_ms: Option<f64>,
    heartbeat_at_ms: Option<f64>,
    unpause_at_ms: Option<f64>,
}

impl Timing {
    fn json(&self, number: u64, new_master: &str, version: u64, total: f64) -> serde_json::Value {
        let pushes: Vec<serde_json::Value> = self
            .pushes
            .iter()
            .map(|(addr, ms)| serde_json::json!({"addr": addr, "ms": ms}))
            .collect();
        serde_json::json!({
            "failover": number,
            "new_master_id": new_master,
            "version": version,
            "pause_at_ms": self.pause_at_ms,
            "synced_at_ms": self.synced_at_ms,
            "polls": self.polls,
            "master_offset": self.offsets.map(|o| o.0),
            "replica_offset": self.offsets.map(|o| o.1),
            "promote_ms": self.promote_ms,
            "pushes": pushes,
            "pushed_at_ms": self.pushed_at_ms,
            "heartbeat_at_ms": self.heartbeat_at_ms,
            "unpause_at_ms": self.unpause_at_ms,
            "stall_ms": self.pause_at_ms.zip(self.unpause_at_ms).map(|(p, u)| u - p),
            "total_ms": total,
        })
    }
}

/// An HTTP answer: status line, extra headers, body.
type Answer = (&'static str, String, String);

fn error_answer(status: &'static str, message: &str) -> Answer {
    let body = serde_json::json!({"error": {"message": message}});
    (status, String::new(), body.to_string())
}

/// `POST .../shards/{i}/failover`: promote the preferred replica (or any
/// replica), push the new topology (to the new master first), heartbeat the
/// new master if asked. With `"wait_for_sync": true`, the flow of
/// kvrocks-controller PR #389 around it: `CLIENT PAUSE <pause_timeout_ms>
/// WRITE` on the master, `INFO replication` of both polled every
/// `poll_interval_ms` until the replica's offset reaches the master's
/// (within `sync_timeout_ms`, unless `force_on_timeout`), the switch, then
/// `CLIENT UNPAUSE` on the old master.
fn shard_failover(s: &mut State, shard: &str, body: &str) -> Answer {
    let started = Instant::now();
    if let Some((status, message)) = s.failover_error.clone() {
        let status = match status {
            400 => "400 Bad Request",
            409 => "409 Conflict",
            _ => "500 Internal Server Error",
        };
        return error_answer(status, &message);
    }
    let Some(index) = shard.parse::<usize>().ok().filter(|i| *i < s.shards.len()) else {
        return error_answer("404 Not Found", &format!("shard {shard} not found"));
    };
    let options = match FailoverOptions::parse(body) {
        Ok(o) => o,
        Err(e) => return error_answer("400 Bad Request", &e),
    };
    let nodes = &s.shards[index];
    let candidate = nodes.iter().position(|(id, _, role)| {
        role != "master" && options.preferred.as_ref().is_none_or(|p| p == id)
    });
    let Some(candidate) = candidate else {
        return error_answer("400 Bad Request", "no such replica in the shard to promote");
    };
    if s.failover_lost {
        let body = serde_json::json!({"data": {"new_master_id": nodes[candidate].0}});
        return ("200 OK", String::new(), body.to_string());
    }
    let old_master = nodes
        .iter()
        .find(|(_, _, role)| role == "master")
        .map(|(_, addr, _)| addr.clone());
    let mut timing = Timing::default();
    let paused = if options.wait_for_sync {
        let Some(master) = old_master else {
            return error_answer("400 Bad Request", "the shard has no master to pause");
        };
        let replica = s.shards[index][candidate].1.clone();
        if let Err(e) = pause_and_sync(s, &master, &replica, &options, started, &mut timing) {
            return error_answer("500 Internal Server Error", &e);
        }
        Some(master)
    } else {
        None
    };
    let switched = switch(s, index, candidate, started, &mut timing);
    // The pause ends however the switch went; a switch's failure is the
    // answer before an unpause's.
    let unpaused = match &paused {
        Some(master) => {
            let reply = resp_call(s, master, &["CLIENT", "UNPAUSE"]);
            timing.unpause_at_ms = Some(ms(started.elapsed()));
            match reply {
                Ok(line) if line == "+OK" => Ok(()),
                Ok(line) => Err(format!("CLIENT UNPAUSE at {master}: {line}")),
                Err(e) => Err(format!("CLIENT UNPAUSE at {master}: {e}")),
            }
        }
        None => Ok(()),
    };
    let new_master = match switched.and_then(|id| unpaused.map(|()| id)) {
        Ok(id) => id,
        Err(e) => return error_answer("500 Internal Server Error", &e),
    };
    let report = timing.json(s.failovers, &new_master, s.version, ms(started.elapsed()));
    s.last_failover = Some(report.clone());
    let body = serde_json::json!({"data": {
        "new_master_id": new_master,
        "promote_ms": timing.promote_ms,
        "timing": report,
    }});
    ("200 OK", String::new(), body.to_string())
}

/// wait_for_sync: pauses the master's writes and waits for the replica's
/// offset to reach the master's. On a failure the pause is ended.
fn pause_and_sync(
    s: &mut State,
    master: &str,
    replica: &str,
    options: &FailoverOptions,
    started: Instant,
    timing: &mut Timing,
) -> Result<(), String> {
    let pause_ms = options.pause_timeout_ms.to_string();
    match resp_call(s, master, &["CLIENT", "PAUSE", &pause_ms, "WRITE"]) {
        Ok(line) if line == "+OK" => {}
        Ok(line) => return Err(format!("CLIENT PAUSE at {master}: {line}")),
        Err(e) => return Err(format!("CLIENT PAUSE at {master}: {e}")),
    }
    let paused = Instant::now();
    timing.pause_at_ms = Some(ms(started.elapsed()));
    let sync_timeout = Duration::from_millis(options.sync_timeout_ms);
    let interval = Duration::from_millis(options.poll_interval_ms);
    let unpause = |s: &mut State, why: String| -> Result<(), String> {
        let _ = resp_call(s, master, &["CLIENT", "UNPAUSE"]);
        Err(why)
    };
    loop {
        let offsets = replication_field(s, master, "master_repl_offset")
            .and_then(|m| replication_field(s, replica, "slave_repl_offset").map(|r| (m, r)));
        timing.polls += 1;
        let (master_offset, replica_offset) = match offsets {
            Ok(o) => o,
            Err(e) => return unpause(s, format!("wait for sync: {e}")),
        };
        timing.offsets = Some((master_offset, replica_offset));
        if replica_offset >= master_offset {
            timing.synced_at_ms = Some(ms(started.elapsed()));
            return Ok(());
        }
        if paused.elapsed() >= sync_timeout {
            if options.force_on_timeout {
                return Ok(());
            }
            return unpause(
                s,
                format!(
                    "the replica's offset {replica_offset} did not reach the master's {master_offset} within {} ms",
                    options.sync_timeout_ms
                ),
            );
        }
        std::thread::sleep(interval);
    }
}

/// Promotes replica `candidate` of shard `index`: the roles swap, the
/// version goes up, the topology is pushed (to the new master first, timed)
/// and, with lease heartbeats on, the new master is heartbeated. The new
/// master's id.
fn switch(
    s: &mut State,
    index: usize,
    candidate: usize,
    started: Instant,
    timing: &mut Timing,
) -> Result<String, String> {
    let nodes = &mut s.shards[index];
    for node in nodes.iter_mut() {
        node.2 = "slave".to_string();
    }
    nodes[candidate].2 = "master".to_string();
    let (new_master, new_addr) = (nodes[candidate].0.clone(), nodes[candidate].1.clone());
    s.version += 1;
    s.failovers += 1;
    let pushed = push_topology(s, Some(&new_addr));
    timing.pushed_at_ms = Some(ms(started.elapsed()));
    let times = pushed?;
    timing.promote_ms = times.first().map(|(_, ms)| *ms);
    timing.pushes = times;
    if let Some(ttl) = s.lease_heartbeat_ms {
        let (ttl, version) = (ttl.to_string(), s.version.to_string());
        let beat = resp_call(
            s,
            &new_addr,
            &["CLUSTERX", "HEARTBEAT", &new_master, &ttl, &version],
        );
        timing.heartbeat_at_ms = Some(ms(started.elapsed()));
        beat.map_err(|e| format!("heartbeat: {e}"))?;
    }
    Ok(new_master)
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves requests on one connection until it closes.
fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let close = request.close;
        let (status, headers, body, content_type) = if request.path == COUNT_PATH {
            // Not delayed, not recorded: the benchmark's own look at the count.
            let served = state.lock().expect("state").served;
            ("200 OK", String::new(), format!("{served}\n"), "text/plain")
        } else if request.path == RAFT_PEERS_PATH && !state.lock().expect("state").down {
            // Not delayed, not recorded: asked beside every poll.
            match state.lock().expect("state").raft_leader {
                Some(leader) => (
                    "200 OK",
                    String::new(),
                    format!(
                        r#"{{"data":{{"leader":{leader},"peers":{{"1":"http://127.0.0.1:1"}}}}}}"#
                    ),
                    "application/json",
                ),
                None => {
                    let (status, headers, body) =
                        error_answer("400 Bad Request", "raft engine is not enabled");
                    (status, headers, body, "application/json")
                }
            }
        } else if request.path == LAST_FAILOVER_PATH {
            // Not delayed, not recorded either.
            let last = state.lock().expect("state").last_failover.clone();
            match last {
                Some(timing) => (
                    "200 OK",
                    String::new(),
                    timing.to_string(),
                    "application/json",
                ),
                None => {
                    let (status, headers, body) = error_answer("404 Not Found", "no failover yet");
                    (status, headers, body, "application/json")
                }
            }
        } else {
            let Some((status, headers, body)) = delayed_answer(state, stop, &request) else {
                return;
            };
            (status, headers, body, "application/json")
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}",
            body.len()
        );
        if close {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        response.push_str(&body);
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Records the request, waits the delay, and answers it; `None` to close
/// the connection without an answer (stopping, or down).
fn delayed_answer(
    state: &Mutex<State>,
    stop: &AtomicBool,
    request: &Request,
) -> Option<(&'static str, String, String)> {
    let received = Instant::now();
    let delay = {
        let mut s = state.lock().expect("state");
        if !s.forget_requests {
            s.requests.push((received, request.path.clone()));
        }
        s.answering += 1;
        s.most_concurrent = s.most_concurrent.max(s.answering);
        s.delay
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let mut s = state.lock().expect("state");
    s.answering -= 1;
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    if s.down {
        return None;
    }
    Some(answer(&mut s, request))
}

/// Reads one request; `None` when the connection closed or broke.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut close = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

/// One HTTP request as the controller reads it.
struct Request {
    method: String,
    path: String,
    body: String,
    /// `Connection: close`.
    close: bool,
}

/// Status line, extra headers and body for one request.
fn answer(s: &mut State, request: &Request) -> Answer {
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let expected = format!("/api/v1/namespaces/{}/clusters/{}", s.namespace, s.cluster);
    if let Some(base) = &s.redirect {
        return (
            "307 Temporary Redirect",
            format!("Location: {base}{path}\r\n"),
            String::new(),
        );
    }
    let failover = path
        .strip_prefix(&format!("{expected}/shards/"))
        .and_then(|rest| rest.strip_suffix("/failover"));
    if let (Some(shard), "POST") = (failover, method) {
        return shard_failover(s, shard, &request.body);
    }
    if method != "GET" || path != expected {
        let body = serde_json::json!({"error": {"message": format!("no route {method} {path}")}});
        return ("404 Not Found", String::new(), body.to_string());
    }
    s.served += 1;
    let body = match &s.topology_body {
        Some((version, shards, body)) if *version == s.version && *shards == s.shards => {
            body.clone()
        }
        _ => {
            let body = topology_body(s);
            s.topology_body = Some((s.version, s.shards.clone(), body.clone()));
            body
        }
    };
    ("200 OK", String::new(), body)
}

/// The topology answer's body: `{"data":{"cluster":{...}}}`.
fn topology_body(s: &State) -> String {
    let shards: Vec<serde_json::Value> = s
        .shards
        .iter()
        .enumerate()
        .map(|(i, nodes)| {
            let nodes: Vec<serde_json::Value> = nodes
                .iter()
                .map(|(id, addr, role)| {
                    serde_json::json!({
                        "id": id, "addr": addr, "role": role,
                        "password": "", "created_at": 1_700_000_000,
                    })
                })
                .collect();
            let (from, to) = slot_range(i, s.shards.len());
            let slots = format!("{from}-{to}");
            serde_json::json!({
                "nodes": nodes,
                "slot_ranges": [slots],
                "target_shard_index": -1,
                "migrating_slot": null,
            })
        })
        .collect();
    serde_json::json!({
        "data": {"cluster": {"version": s.version, "name": s.cluster, "shards": shards}}
    })
    .to_string()
}
