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
//! pushed to every node and, when [`TestController::set_lease_heartbeat`]
//! is on, the new master is sent `CLUSTERX HEARTBEAT <id> <ttl> <version>`;
//! the answer is `{"data":{"new_master_id":...}}`.
//!
//! The benchmarks run the same controller as a process: `bench/fake_controller.rs`
//! includes this file and starts it with [`TestController::start_on`].

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
    redirect: Option<String>,
    requests: Vec<(Instant, String)>,
    /// Do not keep `requests` (a long-running controller would grow it without end).
    forget_requests: bool,
    /// Topology answers (200) served.
    served: u64,
    /// `AUTH` sent first on every RESP connection to a node.
    node_password: Option<String>,
    /// Lease TTL of the heartbeat sent to a new master after a failover.
    lease_heartbeat_ms: Option<u64>,
    /// Answer the failover endpoint with this error (status, message).
    failover_error: Option<(u16, String)>,
    /// Shard failovers carried out.
    failovers: u64,
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
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// While down, connections are closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
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
        let s = self.state();
        push_topology(&s)
    }

    /// Sends `node` (`host:port`) `CLUSTERX HEARTBEAT <master_id> <ttl_ms>
    /// <version>` at the current version; the reply's first line.
    pub fn heartbeat(&self, node: &str, master_id: &str, ttl_ms: u64) -> Result<String, String> {
        let s = self.state();
        let version = s.version.to_string();
        let ttl = ttl_ms.to_string();
        resp_call(
            node,
            s.node_password.as_deref(),
            &["CLUSTERX", "HEARTBEAT", master_id, &ttl, &version],
        )
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

fn push_topology(s: &State) -> Result<(), String> {
    let text = nodes_text(s);
    let version = s.version.to_string();
    let mut first_error = None;
    for (_, addr, _) in s.shards.iter().flatten() {
        let reply = resp_call(
            addr,
            s.node_password.as_deref(),
            &["CLUSTERX", "SETNODES", &text, &version],
        );
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
    first_error.map_or(Ok(()), Err)
}

/// One RESP command on a fresh connection to `addr` (after `AUTH` when a
/// password is given); the reply's first line (`+OK`, `-ERR ...`, `$n`, ...).
fn resp_call(addr: &str, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut call = |args: &[&str]| -> Result<String, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        writer
            .write_all(&out)
            .map_err(|e| format!("write to {addr}: {e}"))?;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        let line = line.trim_end().to_string();
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
            let mut body = vec![0u8; len + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read from {addr}: {e}"))?;
        }
        Ok(line)
    };
    if let Some(pw) = password {
        let line = call(&["AUTH", pw])?;
        if line != "+OK" {
            return Err(format!("AUTH at {addr}: {line}"));
        }
    }
    call(args)
}

/// `POST .../shards/{i}/failover`: promote the preferred replica (or any
/// replica), push the new topology, heartbeat the new master if asked.
fn shard_failover(s: &mut State, shard: &str, body: &str) -> (&'static str, String, String) {
    let error = |status: &'static str, message: String| {
        let body = serde_json::json!({"error": {"message": message}});
        (status, String::new(), body.to_string())
    };
    if let Some((status, message)) = s.failover_error.clone() {
        let status = match status {
            400 => "400 Bad Request",
            409 => "409 Conflict",
            _ => "500 Internal Server Error",
        };
        return error(status, message);
    }
    let Some(index) = shard.parse::<usize>().ok().filter(|i| *i < s.shards.len()) else {
        return error("404 Not Found", format!("shard {shard} not found"));
    };
    let preferred = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("preferred_node_id")?.as_str().map(str::to_string));
    let nodes = &mut s.shards[index];
    let candidate = nodes
        .iter()
        .position(|(id, _, role)| role != "master" && preferred.as_ref().map_or(true, |p| p == id));
    let Some(candidate) = candidate else {
        return error(
            "400 Bad Request",
            "no such replica in the shard to promote".to_string(),
        );
    };
    for node in nodes.iter_mut() {
        node.2 = "slave".to_string();
    }
    nodes[candidate].2 = "master".to_string();
    let (new_master, new_addr) = (nodes[candidate].0.clone(), nodes[candidate].1.clone());
    s.version += 1;
    s.failovers += 1;
    if let Err(e) = push_topology(s) {
        return error("500 Internal Server Error", e);
    }
    if let Some(ttl) = s.lease_heartbeat_ms {
        let (ttl, version) = (ttl.to_string(), s.version.to_string());
        let beat = resp_call(
            &new_addr,
            s.node_password.as_deref(),
            &["CLUSTERX", "HEARTBEAT", &new_master, &ttl, &version],
        );
        if let Err(e) = beat {
            return error("500 Internal Server Error", format!("heartbeat: {e}"));
        }
    }
    let body = serde_json::json!({"data": {"new_master_id": new_master}});
    ("200 OK", String::new(), body.to_string())
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
        s.delay
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    let mut s = state.lock().expect("state");
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
fn answer(s: &mut State, request: &Request) -> (&'static str, String, String) {
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
    let body = serde_json::json!({
        "data": {"cluster": {"version": s.version, "name": s.cluster, "shards": shards}}
    });
    s.served += 1;
    ("200 OK", String::new(), body.to_string())
}
