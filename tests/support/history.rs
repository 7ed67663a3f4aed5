//! A history of client operations and a checker for leasegate's promise,
//! in the manner of Jepsen: real clients record every write they make
//! (invocation and completion time, outcome, key and value), the test
//! records what the controller did (lease grants, promotions), every node's
//! data is read back at the end, and [`History::check`] looks for:
//!
//! * **split-brain writes**: a write acknowledged through a node after that
//!   node lost mastership (the instant another node was promoted);
//! * **lost writes**: an acknowledged write that is not on the final master,
//!   unless a write to the same key that did not finish before it began
//!   explains the value found there;
//! * **late acknowledgements**: a write answered `OK` through a node when no
//!   lease the controller granted that node covered the answer's arrival
//!   (grant sent at `s` with TTL `t` covers `[s, s + t]`: whatever leasegate
//!   anchors its lease to, it must not be later than the controller's send);
//! * **refused writes applied**: a write answered with an error (fenced,
//!   refused) whose value the final master holds anyway.
//!
//! Outcomes are `ok`, `error` (the write certainly failed, e.g. a fenced
//! write) or `unknown` (`-UNKNOWN`, a timeout, a broken connection: it may
//! or may not have been applied). Only `ok` writes are held to the promise;
//! `error` and `unknown` writes may explain a value found on the master.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The node or leasegate refused it (fenced, READONLY, ...): not applied.
    Error(String),
    /// It may have been applied: `-UNKNOWN`, no answer, a broken connection.
    Unknown(String),
}

impl Outcome {
    /// Classifies a reply line's text: `OK`, an `UNKNOWN ...` error, or
    /// another error.
    pub fn of_error(text: &str) -> Outcome {
        if text.starts_with("UNKNOWN") {
            Outcome::Unknown(text.to_string())
        } else {
            Outcome::Error(text.to_string())
        }
    }
}

/// One write.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client (thread) made it.
    pub client: String,
    /// The node it was sent through (a name the test chose: "A", "B").
    pub node: String,
    pub key: String,
    pub value: String,
    pub invoked: Instant,
    pub completed: Instant,
    pub outcome: Outcome,
}

/// The controller granted `node` a lease of `ttl`, sent at `sent`.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub node: String,
    pub sent: Instant,
    pub ttl: Duration,
}

/// What the test recorded: writes, lease grants, promotions.
#[derive(Default)]
struct Log {
    ops: Vec<Op>,
    grants: Vec<LeaseGrant>,
    /// `(node, instant)`: the node became master (others lost mastership).
    promotions: Vec<(String, Instant)>,
}

/// A shared history: clone it into every client thread.
#[derive(Clone, Default)]
pub struct History {
    log: Arc<Mutex<Log>>,
    started: Arc<Mutex<Option<Instant>>>,
}

/// The violations found, and counts for the report.
#[derive(Debug, Default)]
pub struct Verdict {
    pub ok: usize,
    pub errors: usize,
    pub unknown: usize,
    pub split_brain: Vec<Op>,
    pub lost: Vec<Op>,
    pub late: Vec<Op>,
    /// Writes answered with an error (refused, fenced) that the final
    /// master has anyway, with no other write to explain the value.
    pub applied_refused: Vec<Op>,
    /// The short report: counts and the first violations with their timelines.
    pub report: String,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.split_brain.is_empty()
            && self.lost.is_empty()
            && self.late.is_empty()
            && self.applied_refused.is_empty()
    }

    /// Panics with the report unless no violation was found.
    pub fn assert_clean(&self) {
        assert!(self.clean(), "{}", self.report);
    }
}

impl History {
    pub fn new() -> History {
        let h = History::default();
        *h.started.lock().expect("history") = Some(Instant::now());
        h
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, op: Op) {
        self.log().ops.push(op);
    }

    /// The controller sent `node` a lease grant of `ttl` at `sent`.
    pub fn granted(&self, node: &str, sent: Instant, ttl: Duration) {
        self.log().grants.push(LeaseGrant {
            node: node.to_string(),
            sent,
            ttl,
        });
    }

    /// `node` was promoted at `at`: every other node lost mastership then.
    pub fn promoted(&self, node: &str, at: Instant) {
        self.log().promotions.push((node.to_string(), at));
    }

    pub fn ops(&self) -> Vec<Op> {
        self.log().ops.clone()
    }

    /// Checks the history against `final_data` (key → value as read from
    /// the final master after the run; a key missing there is absent).
    pub fn check(&self, final_data: &HashMap<String, String>) -> Verdict {
        let log = self.log();
        let origin = self.started.lock().ok().and_then(|s| *s);
        let mut v = Verdict::default();
        for op in &log.ops {
            match op.outcome {
                Outcome::Ok => v.ok += 1,
                Outcome::Error(_) => v.errors += 1,
                Outcome::Unknown(_) => v.unknown += 1,
            }
        }
        let acked = || log.ops.iter().filter(|o| o.outcome == Outcome::Ok);
        // (a) split brain.
        for op in acked() {
            let lost_at = log
                .promotions
                .iter()
                .filter(|(n, _)| *n != op.node)
                .map(|(_, t)| *t)
                .min();
            if lost_at.is_some_and(|t| op.completed > t && !promoted_again(&log, &op.node, t, op)) {
                v.split_brain.push(op.clone());
            }
        }
        // (b) lost writes.
        let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
        for op in &log.ops {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        for op in acked() {
            let found = final_data.get(&op.key);
            if found == Some(&op.value) {
                continue;
            }
            // Another write to the key that did not finish before this one
            // began (and was not refused) may explain what is there.
            let explained = found.is_some_and(|value| {
                by_key[op.key.as_str()].iter().any(|w| {
                    w.value == *value
                        && !matches!(w.outcome, Outcome::Error(_))
                        && w.completed >= op.invoked
                })
            });
            if !explained {
                v.lost.push(op.clone());
            }
        }
        // (d) refused writes that took effect anyway.
        for op in log
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Error(_)))
        {
            if final_data.get(&op.key) == Some(&op.value) {
                let explained = by_key[op.key.as_str()]
                    .iter()
                    .any(|w| w.value == op.value && !matches!(w.outcome, Outcome::Error(_)));
                if !explained {
                    v.applied_refused.push(op.clone());
                }
            }
        }
        // (c) late acknowledgements.
        if !log.grants.is_empty() {
            for op in acked() {
                let covered = log.grants.iter().any(|g| {
                    g.node == op.node && g.sent <= op.completed && op.completed <= g.sent + g.ttl
                });
                if !covered {
                    v.late.push(op.clone());
                }
            }
        }
        v.report = report(&v, &log, origin);
        v
    }
}

/// Whether `node` was promoted again after `lost_at` and before `op` was
/// invoked (it is master again then: its writes count).
fn promoted_again(log: &Log, node: &str, lost_at: Instant, op: &Op) -> bool {
    let again = log
        .promotions
        .iter()
        .filter(|(n, t)| n == node && *t > lost_at)
        .map(|(_, t)| *t)
        .min();
    let Some(again) = again else { return false };
    // Lost again after that?
    let next_loss = log
        .promotions
        .iter()
        .filter(|(n, t)| n != node && *t > again)
        .map(|(_, t)| *t)
        .min();
    op.invoked >= again && next_loss.is_none_or(|l| op.completed <= l)
}

fn ms(origin: Option<Instant>, t: Instant) -> f64 {
    origin.map_or(0.0, |o| {
        t.saturating_duration_since(o).as_secs_f64() * 1000.0
    })
}

fn report(v: &Verdict, log: &Log, origin: Option<Instant>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "history: {} writes: {} ok, {} error, {} unknown; {} lease grants, {} promotions",
        log.ops.len(),
        v.ok,
        v.errors,
        v.unknown,
        log.grants.len(),
        log.promotions.len()
    );
    for (node, at) in &log.promotions {
        let _ = writeln!(out, "  promotion of {node} at {:.1} ms", ms(origin, *at));
    }
    let _ = writeln!(
        out,
        "violations: {} split-brain, {} lost, {} late acknowledgements, {} refused but applied",
        v.split_brain.len(),
        v.lost.len(),
        v.late.len(),
        v.applied_refused.len()
    );
    let mut show = |what: &str, ops: &[Op]| {
        for op in ops.iter().take(5) {
            let _ = writeln!(
                out,
                "  {what}: {} via {} {}={} invoked {:.1} ms, answered {:?} at {:.1} ms",
                op.client,
                op.node,
                op.key,
                op.value,
                ms(origin, op.invoked),
                op.outcome,
                ms(origin, op.completed)
            );
        }
    };
    show("split-brain", &v.split_brain);
    show("lost", &v.lost);
    show("late", &v.late);
    show("refused but applied", &v.applied_refused);
    out
}

/// A client that records every write it makes in a [`History`], and never
/// panics on a fault: a refused connection is an `error` (nothing was
/// sent), a timeout or a broken connection after sending is `unknown` (the
/// connection is dropped and the next write opens a new one).
pub struct Recorder {
    pub name: String,
    /// The node's name in the history ("A", "B").
    pub node: String,
    addr: String,
    timeout: Duration,
    conn: Option<(std::net::TcpStream, Vec<u8>)>,
    history: History,
    /// Sent as `AUTH <password>` on every new connection, before its first
    /// write ([`Self::with_password`]).
    password: Option<String>,
}

impl Recorder {
    pub fn new(
        history: &History,
        name: &str,
        node: &str,
        addr: &str,
        timeout: Duration,
    ) -> Recorder {
        Recorder {
            name: name.to_string(),
            node: node.to_string(),
            addr: addr.to_string(),
            timeout,
            conn: None,
            history: history.clone(),
            password: None,
        }
    }

    /// Authenticates every connection it opens with `AUTH <password>`
    /// first. A connection whose `AUTH` is not answered `OK` is dropped and
    /// the write it was opened for is an `error` (it was never sent).
    pub fn with_password(mut self, password: Option<&str>) -> Recorder {
        self.password = password.map(str::to_string);
        self
    }

    /// `SET key value`, recorded.
    pub fn set(&mut self, key: &str, value: &str) -> Outcome {
        let invoked = Instant::now();
        let outcome = self.exchange(&["SET", key, value]);
        self.history.record(Op {
            client: self.name.clone(),
            node: self.node.clone(),
            key: key.to_string(),
            value: value.to_string(),
            invoked,
            completed: Instant::now(),
            outcome: outcome.clone(),
        });
        outcome
    }

    fn exchange(&mut self, args: &[&str]) -> Outcome {
        if self.conn.is_none() {
            let addr = match self.addr.parse::<std::net::SocketAddr>() {
                Ok(a) => a,
                Err(e) => return Outcome::Error(format!("bad address: {e}")),
            };
            match std::net::TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    self.conn = Some((s, Vec::new()));
                }
                Err(e) => return Outcome::Error(format!("connect: {e}")),
            }
            if let Some(password) = self.password.clone() {
                let auth = self.round_trip(&["AUTH", &password]);
                if auth != Outcome::Ok {
                    self.conn = None;
                    return Outcome::Error(format!("AUTH: {auth:?}"));
                }
            }
        }
        self.round_trip(args)
    }

    /// Sends `args` on the open connection and reads one reply.
    fn round_trip(&mut self, args: &[&str]) -> Outcome {
        use std::io::{Read, Write};
        let Some((stream, buf)) = self.conn.as_mut() else {
            return Outcome::Error("no connection".into());
        };
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        if let Err(e) = stream.write_all(&super::encode(&parts)) {
            self.conn = None;
            return Outcome::Unknown(format!("write: {e}"));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match redis_protocol::resp2::decode::decode(buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    use redis_protocol::resp2::types::OwnedFrame as F;
                    return match frame {
                        F::SimpleString(s) if s == b"OK" => Outcome::Ok,
                        F::Error(e) => Outcome::of_error(&e),
                        other => Outcome::Error(format!("unexpected reply {other:?}")),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    self.conn = None;
                    return Outcome::Unknown(format!("bad reply: {e:?}"));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.conn = None;
                return Outcome::Unknown("no reply in time".into());
            }
            let _ = stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    self.conn = None;
                    return Outcome::Unknown("connection closed".into());
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    self.conn = None;
                    return Outcome::Unknown(format!("read: {e}"));
                }
            }
        }
    }
}

/// Reads every `key` from the node at `addr` (a direct connection): the
/// final data the checker compares with.
pub fn read_back(addr: &str, keys: impl IntoIterator<Item = String>) -> HashMap<String, String> {
    read_back_auth(addr, keys, None)
}

/// [`read_back`] from a node that requires `AUTH <password>`.
pub fn read_back_auth(
    addr: &str,
    keys: impl IntoIterator<Item = String>,
    password: Option<&str>,
) -> HashMap<String, String> {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port");
    let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    let stream = std::net::TcpStream::connect((host, port)).expect("connect for read-back");
    let _ = stream.set_read_timeout(Some(super::PATIENCE));
    let mut c = super::Client::from_stream(stream);
    if let Some(pw) = password {
        assert_eq!(
            c.cmd(&["AUTH", pw]),
            super::Reply::ok(),
            "AUTH for read-back"
        );
    }
    let mut out = HashMap::new();
    for key in keys {
        if let super::Reply::Bulk(v) = c.cmd(&["GET", &key]) {
            out.insert(key, String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The controller's heartbeats and the clients, as threads.

/// Time between heartbeats ([`Beat::nonce`]).
pub const BEAT: Duration = Duration::from_millis(100);

/// The controller's heartbeats to one node, in a thread: every [`BEAT`],
/// `CLUSTERX HEARTBEAT <master> <ttl> <epoch> NONCE <last nonce>` (without
/// a nonce when `nonce` is false), each grant recorded in the history at its
/// send time. A heartbeat that gets no answer in 100 ms drops its connection.
pub struct Heartbeats {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// When a heartbeat last got its answer.
    last_answered: Arc<Mutex<Option<Instant>>>,
    /// The last nonce A sent.
    nonce: Arc<Mutex<Option<String>>>,
}

/// How a [`Heartbeats`] thread talks.
#[derive(Clone)]
pub struct Beat {
    /// Echo the last nonce (`NONCE <n>`).
    pub nonce: bool,
    /// The nonce to echo first (from an earlier exchange).
    pub first_nonce: Option<String>,
    /// How long to wait for an answer before dropping the connection.
    pub patience: Duration,
    /// From one heartbeat's send to the next.
    pub interval: Duration,
    /// The lease TTL each heartbeat grants.
    pub ttl: Duration,
}

impl Beat {
    pub fn nonce() -> Beat {
        Beat {
            nonce: true,
            first_nonce: None,
            patience: BEAT,
            interval: BEAT,
            ttl: Duration::from_millis(500),
        }
    }
}

impl Heartbeats {
    pub fn start(
        history: &History,
        node: &'static str,
        addr: String,
        master: &'static str,
        epoch: u64,
        beat: Beat,
    ) -> Heartbeats {
        let stop = Arc::new(AtomicBool::new(false));
        let last_answered = Arc::new(Mutex::new(None));
        let nonce = Arc::new(Mutex::new(beat.first_nonce.clone()));
        let (s, answered, history, shared_nonce) = (
            Arc::clone(&stop),
            Arc::clone(&last_answered),
            history.clone(),
            Arc::clone(&nonce),
        );
        let thread = std::thread::spawn(move || {
            let mut conn: Option<super::Client> = None;
            let mut last_nonce: Option<String> = beat.first_nonce.clone();
            while !s.load(Ordering::SeqCst) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => {
                        let Ok(sa) = addr.parse() else { return };
                        match std::net::TcpStream::connect_timeout(&sa, BEAT) {
                            Ok(stream) => conn.insert(super::Client::from_stream(stream)),
                            Err(_) => {
                                std::thread::sleep(BEAT);
                                continue;
                            }
                        }
                    }
                };
                let ttl = beat.ttl.as_millis().to_string();
                let epoch = epoch.to_string();
                let mut args = vec!["CLUSTERX", "HEARTBEAT", master, &ttl, &epoch];
                let echoed = last_nonce.clone();
                if let (true, Some(n)) = (beat.nonce, echoed.as_deref()) {
                    args.extend(["NONCE", n]);
                }
                let sent = Instant::now();
                history.granted(node, sent, beat.ttl);
                if c.try_send(&args).is_err() {
                    conn = None;
                    continue;
                }
                match c.read_within(beat.patience) {
                    Ok(Some(reply)) if !reply.is_error() => {
                        *answered.lock().expect("answered") = Some(Instant::now());
                        last_nonce = super::info_fields(&reply).get("lease_nonce").cloned();
                        shared_nonce.lock().expect("nonce").clone_from(&last_nonce);
                    }
                    _ => conn = None,
                }
                std::thread::sleep(beat.interval.saturating_sub(sent.elapsed()));
            }
        });
        Heartbeats {
            stop,
            thread: Some(thread),
            last_answered,
            nonce,
        }
    }

    pub fn nonce(&self) -> Option<String> {
        self.nonce.lock().expect("nonce").clone()
    }

    pub fn last_answered(&self) -> Option<Instant> {
        *self.last_answered.lock().expect("answered")
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writers recording into the history until stopped; `inside`: the threads
/// enter that host first (its own clients). Each writes unique keys, a
/// few ms apart (more after a failure).
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Clients {
    pub fn start(
        history: &History,
        node: &str,
        addr: String,
        inside: Option<&super::netns::Host>,
        n: usize,
    ) -> Clients {
        Clients::start_authenticated(history, node, addr, inside, n, None)
    }

    /// [`Self::start`] with clients that authenticate every connection
    /// with `AUTH <password>` ([`Recorder::with_password`]).
    pub fn start_authenticated(
        history: &History,
        node: &str,
        addr: String,
        inside: Option<&super::netns::Host>,
        n: usize,
        password: Option<&str>,
    ) -> Clients {
        let password = password.map(str::to_string);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|w| {
                let (stop, history, inside) = (Arc::clone(&stop), history.clone(), inside.cloned());
                let (node, addr, password) = (node.to_string(), addr.clone(), password.clone());
                std::thread::spawn(move || {
                    if let Some(host) = &inside {
                        host.enter();
                    }
                    let name = format!("{node}{w}");
                    let mut r =
                        Recorder::new(&history, &name, &node, &addr, Duration::from_secs(2))
                            .with_password(password.as_deref());
                    let mut keys = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("{name}-{i}");
                        let outcome = r.set(&key, &format!("v{i}"));
                        keys.push(key);
                        i += 1;
                        let pause = if matches!(outcome, Outcome::Ok) {
                            2
                        } else {
                            20
                        };
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                    keys
                })
            })
            .collect();
        Clients { stop, threads }
    }

    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    }
}

/// Milliseconds from `from` to `to`, negative where `to` came first.
pub fn signed_ms(from: Instant, to: Instant) -> i128 {
    if to >= from {
        (to - from).as_millis() as i128
    } else {
        -((from - to).as_millis() as i128)
    }
}
