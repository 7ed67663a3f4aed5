//! A test controller speaking the kvrocks-controller HTTP API shape.
//!
//! A blocking HTTP/1.1 server on a loopback port, one thread per connection,
//! with keep-alive (the proxy's pooled client reuses connections). It serves
//! `GET /api/v1/namespaces/{ns}/clusters/{cluster}` from state the test
//! changes while the proxy runs: the topology, a delay, an outage, a redirect.
//! `GET /count` tells how many topology answers it served.
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
        let Some((method, path, close)) = read_request(&mut reader) else {
            return;
        };
        let (status, headers, body, content_type) = if path == COUNT_PATH {
            // Not delayed, not recorded: the benchmark's own look at the count.
            let served = state.lock().expect("state").served;
            ("200 OK", String::new(), format!("{served}\n"), "text/plain")
        } else {
            let Some((status, headers, body)) = delayed_answer(state, stop, &method, &path) else {
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
    method: &str,
    path: &str,
) -> Option<(&'static str, String, String)> {
    let received = Instant::now();
    let delay = {
        let mut s = state.lock().expect("state");
        if !s.forget_requests {
            s.requests.push((received, path.to_string()));
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
    Some(answer(&mut s, method, path))
}

/// Reads one request; `None` when the connection closed or broke.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, bool)> {
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
    Some((method, path, close))
}

/// Status line, extra headers and body for one request.
fn answer(s: &mut State, method: &str, path: &str) -> (&'static str, String, String) {
    let expected = format!("/api/v1/namespaces/{}/clusters/{}", s.namespace, s.cluster);
    if let Some(base) = &s.redirect {
        return (
            "307 Temporary Redirect",
            format!("Location: {base}{path}\r\n"),
            String::new(),
        );
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
            serde_json::json!({
                "nodes": nodes,
                "slot_ranges": [format!("{}-{}", i * 1000, i * 1000 + 999)],
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
