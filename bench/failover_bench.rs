//! Failover benchmark (driven by bench/failover.sh).
//!
//! An open-loop load generator writes `--rate` SETs/s of `--value-size`-byte
//! values over `--connections` connections to proxy A (the first master's
//! leasegate) while the master role is moved A→B, B→A, … `--failovers` times
//! with `POST /v1/failover` on the current master's admin API. Every request
//! records its send time, reply time and outcome. Per failover it reports the
//! longest write latency (the stall a client saw) and p99.9 of the requests
//! sent around the switch, client errors and lost writes (every acknowledged
//! key is read back from the final master's node), and writes a
//! latency-over-time plot around the switches.
//!
//! Run it through `bench/failover.sh`; by hand:
//!
//! ```text
//! cargo run --release --example failover_bench -- \
//!   --proxy-a 127.0.0.1:7001 --proxy-b 127.0.0.1:7002 \
//!   --admin-a 127.0.0.1:8001 --admin-b 127.0.0.1:8002 \
//!   --redis-a 127.0.0.1:6379 --redis-b 127.0.0.1:6380 --token tk
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "leasegate failover benchmark")]
struct Args {
    /// Client address of proxy A (the leasegate of the initial master).
    #[arg(long)]
    proxy_a: String,
    /// Client address of proxy B (the leasegate of the initial replica).
    #[arg(long)]
    proxy_b: String,
    /// Admin API address of proxy A.
    #[arg(long)]
    admin_a: String,
    /// Admin API address of proxy B.
    #[arg(long)]
    admin_b: String,
    /// Node (redis-server) behind proxy A, read directly for the lost-write check.
    #[arg(long)]
    redis_a: String,
    /// Node (redis-server) behind proxy B.
    #[arg(long)]
    redis_b: String,
    /// Admin bearer token (same for both proxies).
    #[arg(long, default_value = "")]
    token: String,
    /// Node ids (only printed in the report).
    #[arg(long, default_value = "")]
    node_a: String,
    #[arg(long, default_value = "")]
    node_b: String,
    /// Failovers to run (A→B, B→A, …).
    #[arg(long, default_value_t = 20)]
    failovers: usize,
    /// Total SET rate, requests/s.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Client connections (all to proxy A).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 2048)]
    value_size: usize,
    /// Steady load before the first failover, ms.
    #[arg(long, default_value_t = 2000)]
    warmup_ms: u64,
    /// Steady load between failovers (after one's reply, before the next), ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Steady load after the last failover, ms.
    #[arg(long, default_value_t = 1000)]
    tail_ms: u64,
    /// The window around a failover whose requests count for its stall:
    /// sent from `window_before_ms` before the POST to `window_after_ms` after.
    #[arg(long, default_value_t = 50)]
    window_before_ms: u64,
    #[arg(long, default_value_t = 500)]
    window_after_ms: u64,
    /// `sync_timeout_ms` and `pause_timeout_ms` of the failover request.
    #[arg(long, default_value_t = 100)]
    sync_timeout_ms: u64,
    #[arg(long, default_value_t = 500)]
    pause_timeout_ms: u64,
    /// Lease TTL granted to each new master (long: no controller renews it here).
    #[arg(long, default_value_t = 600_000)]
    lease_ttl_ms: u64,
    /// After each successful failover (once its measuring window is over), every client
    /// drains its connection and reconnects to the new master's proxy, as a client that
    /// follows topology changes would. Default: clients stay on proxy A for the whole run
    /// and rely on leasegate's session hand-over alone.
    #[arg(long, default_value_t = false)]
    follow_master: bool,
    /// Stop failing over after the first failed failover (else go on with the same roles).
    #[arg(long, default_value_t = false)]
    stop_on_failure: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Goal for the longest stall, ms (reported as met / not met).
    #[arg(long, default_value_t = 5.0)]
    goal_ms: f64,
    /// Output files' name stem: NAME.md, NAME.svg, NAME-timeline.svg (and with --raw
    /// NAME-requests.csv, NAME-events.csv).
    #[arg(long, default_value = "failover")]
    name: String,
    /// Output directory.
    #[arg(long, default_value = "bench/out")]
    out_dir: String,
    /// Also write every request (conn, seq, scheduled, sent, done µs since the start, ok) to
    /// `failover-requests.csv` and the failovers to `failover-events.csv` in the output directory.
    #[arg(long, default_value_t = false)]
    raw: bool,
    /// Extra text (host description) put under the report's title.
    #[arg(long, default_value = "")]
    note: String,
}

/// One request as a client saw it. Times are µs since the run's start.
#[derive(Clone, Copy)]
struct Rec {
    conn: u32,
    seq: u32,
    scheduled: u64,
    sent: u64,
    /// `u64::MAX`: no reply.
    done: u64,
    ok: bool,
}

impl Rec {
    fn latency_ms(&self) -> f64 {
        (self.done.saturating_sub(self.sent)) as f64 / 1000.0
    }
    fn answered(&self) -> bool {
        self.done != u64::MAX
    }
}

struct Shared {
    t0: Instant,
    stop_at: AtomicU64,
    /// Writers have stopped; readers drain until this deadline (µs).
    drain_deadline: AtomicU64,
    done: AtomicBool,
    records: Mutex<Vec<Rec>>,
    error_samples: Mutex<Vec<(u64, String)>>,
    sent: AtomicU64,
    answered: AtomicU64,
    connects: AtomicU64,
    /// Which proxy (0 = A, 1 = B) new connections go to.
    target: std::sync::atomic::AtomicUsize,
    /// Connections closed to follow the master (--follow-master).
    moves: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
    fn note_error(&self, at: u64, text: String) {
        let mut s = self.error_samples.lock().unwrap();
        if s.len() < 200 {
            s.push((at, text));
        }
    }
}

fn key(conn: u32, seq: u32) -> String {
    format!("fo:{conn}:{seq}")
}

fn encode_set(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    write!(
        ByteWriter(buf),
        "*3\r\n$3\r\nSET\r\n${}\r\n{}\r\n${}\r\n",
        key.len(),
        key,
        value.len()
    )
    .unwrap();
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

struct ByteWriter<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A RESP2/3 reply frame's outcome.
#[derive(Debug)]
#[allow(dead_code)] // the texts are only printed (Debug)
enum Reply {
    Ok(String),
    Err(String),
    Int(i64),
    Other,
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

/// Parses one complete frame at `buf[pos..]`; returns its end.
fn parse_frame(buf: &[u8], pos: usize) -> Result<Option<(usize, Reply)>, String> {
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[pos + 1..eol]).map_err(|e| e.to_string())?;
    let next = eol + 2;
    match buf[pos] {
        b'+' => Ok(Some((next, Reply::Ok(line.to_string())))),
        b'-' => Ok(Some((next, Reply::Err(line.to_string())))),
        b':' => Ok(Some((
            next,
            Reply::Int(line.parse().map_err(|_| format!("bad integer {line}"))?),
        ))),
        b'$' => {
            let n: i64 = line.parse().map_err(|_| format!("bad length {line}"))?;
            if n < 0 {
                return Ok(Some((next, Reply::Other)));
            }
            let end = next + n as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some((end, Reply::Other)))
        }
        b'*' => {
            let n: i64 = line.parse().map_err(|_| format!("bad count {line}"))?;
            let mut at = next;
            for _ in 0..n.max(0) {
                match parse_frame(buf, at)? {
                    Some((end, _)) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some((at, Reply::Other)))
        }
        other => Err(format!("unexpected reply type byte {:?}", other as char)),
    }
}

/// One client connection: an open-loop writer (a SET every `period`, on a
/// fixed schedule, pipelined when replies are late) and a reader matching
/// replies in order. Reconnects after a connection failure (counted as
/// errors for the requests it lost).
async fn client(shared: Arc<Shared>, args: Arc<Args>, conn: u32) {
    let period_us = (1_000_000.0 * args.connections as f64 / args.rate as f64) as u64;
    let phase_us = period_us * conn as u64 / args.connections as u64;
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| b'a' + ((i + conn as usize) % 26) as u8)
        .collect();
    let mut seq: u32 = 0;
    let start_us = shared.now_us() + 10_000;
    let proxies = [args.proxy_a.as_str(), args.proxy_b.as_str()];
    loop {
        // Normally always proxy A; with --follow-master the current master's proxy.
        let target = shared.target.load(Ordering::Acquire);
        let stream = match TcpStream::connect(proxies[target]).await {
            Ok(s) => s,
            Err(e) => {
                shared.note_error(shared.now_us(), format!("conn {conn}: connect: {e}"));
                if shared.now_us() >= shared.stop_at.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connects.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true).ok();
        let (mut rd, mut wr) = stream.into_split();
        let pending: Arc<Mutex<VecDeque<Rec>>> = Arc::new(Mutex::new(VecDeque::new()));
        let broken = Arc::new(AtomicBool::new(false));
        let writer_done = Arc::new(AtomicBool::new(false));

        let reader = {
            let writer_done = Arc::clone(&writer_done);
            let shared = Arc::clone(&shared);
            let pending = Arc::clone(&pending);
            let broken = Arc::clone(&broken);
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
                let mut done: Vec<Rec> = Vec::with_capacity(4096);
                let mut chunk = vec![0u8; 64 * 1024];
                let why = loop {
                    // The writer stopped (end of the run, or moving to the new
                    // master's proxy) and every reply came back.
                    if writer_done.load(Ordering::Acquire) && pending.lock().unwrap().is_empty() {
                        break None;
                    }
                    let deadline = shared.drain_deadline.load(Ordering::Relaxed);
                    let read = if deadline != u64::MAX {
                        let left = deadline.saturating_sub(shared.now_us());
                        match tokio::time::timeout(
                            Duration::from_micros(left.min(20_000)),
                            rd.read(&mut chunk),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => {
                                if shared.now_us() >= deadline {
                                    break Some("no reply before the end of the run".to_string());
                                }
                                continue;
                            }
                        }
                    } else {
                        let wait = if writer_done.load(Ordering::Relaxed) {
                            2
                        } else {
                            50
                        };
                        match tokio::time::timeout(Duration::from_millis(wait), rd.read(&mut chunk))
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => continue,
                        }
                    };
                    let n = match read {
                        Ok(0) => break Some("connection closed by the proxy".to_string()),
                        Ok(n) => n,
                        Err(e) => break Some(format!("read: {e}")),
                    };
                    let now = shared.now_us();
                    buf.extend_from_slice(&chunk[..n]);
                    let mut pos = 0;
                    let mut bad = None;
                    loop {
                        match parse_frame(&buf, pos) {
                            Ok(Some((end, reply))) => {
                                pos = end;
                                let Some(mut rec) = pending.lock().unwrap().pop_front() else {
                                    bad = Some(format!("unexpected reply {reply:?}"));
                                    break;
                                };
                                rec.done = now;
                                match reply {
                                    Reply::Ok(s) if s == "OK" => rec.ok = true,
                                    other => {
                                        rec.ok = false;
                                        shared.note_error(
                                            now,
                                            format!(
                                                "conn {} {}: {:?}",
                                                rec.conn,
                                                key(rec.conn, rec.seq),
                                                other
                                            ),
                                        );
                                    }
                                }
                                shared.answered.fetch_add(1, Ordering::Relaxed);
                                done.push(rec);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                bad = Some(format!("protocol error: {e}"));
                                break;
                            }
                        }
                    }
                    buf.drain(..pos);
                    if done.len() >= 1024 {
                        shared.records.lock().unwrap().append(&mut done);
                    }
                    if let Some(b) = bad {
                        break Some(b);
                    }
                };
                broken.store(true, Ordering::Relaxed);
                // Whatever is still pending got no reply: errors.
                let lost: Vec<Rec> = pending.lock().unwrap().drain(..).collect();
                if let Some(why) = why {
                    if !lost.is_empty() || !shared.done.load(Ordering::Relaxed) {
                        shared.note_error(
                            shared.now_us(),
                            format!("conn {conn}: {why} ({} requests unanswered)", lost.len()),
                        );
                    }
                }
                done.extend(lost);
                shared.records.lock().unwrap().append(&mut done);
            })
        };

        let mut out: Vec<u8> = Vec::with_capacity(args.value_size + 64);
        let mut moving = false;
        loop {
            let scheduled = start_us + phase_us + seq as u64 * period_us;
            if scheduled >= shared.stop_at.load(Ordering::Relaxed) {
                break;
            }
            if broken.load(Ordering::Relaxed) {
                break;
            }
            if shared.target.load(Ordering::Relaxed) != target {
                moving = true;
                break;
            }
            let now = shared.now_us();
            if scheduled > now {
                tokio::time::sleep_until(
                    tokio::time::Instant::from_std(shared.t0) + Duration::from_micros(scheduled),
                )
                .await;
            }
            out.clear();
            encode_set(&mut out, &key(conn, seq), &value);
            let sent = shared.now_us();
            pending.lock().unwrap().push_back(Rec {
                conn,
                seq,
                scheduled,
                sent,
                done: u64::MAX,
                ok: false,
            });
            shared.sent.fetch_add(1, Ordering::Relaxed);
            seq += 1;
            if let Err(e) = wr.write_all(&out).await {
                shared.note_error(shared.now_us(), format!("conn {conn}: write: {e}"));
                break;
            }
        }
        writer_done.store(true, Ordering::Release);
        let reconnect = !shared.done.load(Ordering::Relaxed)
            && shared.now_us() < shared.stop_at.load(Ordering::Relaxed);
        if !reconnect {
            // Keep the write half open until the reader drained.
            let _ = reader.await;
            drop(wr);
            return;
        }
        let _ = reader.await;
        drop(wr);
        if moving {
            shared.moves.fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ------------------------------------------------------------------ admin HTTP

async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).ok();
        let body = body.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !token.is_empty() {
            let _ = write!(req, "Authorization: Bearer {token}\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&resp).to_string();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no HTTP status")?;
        // Chunked bodies are not expected (hyper sends Content-Length for Full bodies).
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| format!("{method} {addr}{path}: timeout"))?
}

// ------------------------------------------------------------------ direct RESP

async fn redis_cmds(s: &mut TcpStream, cmds: &[Vec<&[u8]>]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    for c in cmds {
        let _ = write!(ByteWriter(&mut out), "*{}\r\n", c.len());
        for a in c {
            let _ = write!(ByteWriter(&mut out), "${}\r\n", a.len());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut replies = Vec::with_capacity(cmds.len());
    let mut pos = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while replies.len() < cmds.len() {
        if let Some((end, r)) = parse_frame(&buf, pos)? {
            pos = end;
            replies.push(r);
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(replies)
}

async fn role(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    out.extend_from_slice(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n");
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some((end, _)) = parse_frame(&buf, 0)? {
            let text = String::from_utf8_lossy(&buf[..end]).to_string();
            return Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("role:"))
                .unwrap_or("unknown")
                .trim()
                .to_string());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ------------------------------------------------------------------ failovers

struct Failover {
    n: usize,
    from: &'static str,
    to: &'static str,
    /// µs since the start: POST sent, reply received.
    posted: u64,
    replied: u64,
    http_status: u16,
    result: String,
    error: Option<String>,
    stall_ms: Option<f64>,
    epoch: Option<u64>,
    /// Step times (ms since the failover started on the server).
    pause_at_ms: Option<f64>,
    success_at_ms: Option<f64>,
    steps: String,
}

impl Failover {
    fn ok(&self) -> bool {
        self.result == "success"
    }
    /// Estimated pause start in the client's clock (µs since the start).
    fn pause_us(&self) -> u64 {
        self.posted + (self.pause_at_ms.unwrap_or(0.0) * 1000.0) as u64
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // nearest-rank
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.2}")
    }
}

fn main() {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let args = Arc::new(args);
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        stop_at: AtomicU64::new(u64::MAX),
        drain_deadline: AtomicU64::new(u64::MAX),
        done: AtomicBool::new(false),
        records: Mutex::new(Vec::new()),
        error_samples: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        target: std::sync::atomic::AtomicUsize::new(0),
        moves: AtomicU64::new(0),
    });
    eprintln!(
        "[failover_bench] {} conns → {}, {} SET/s of {} B, {} failovers",
        args.connections, args.proxy_a, args.rate, args.value_size, args.failovers
    );
    let clients: Vec<_> = (0..args.connections as u32)
        .map(|c| tokio::spawn(client(Arc::clone(&shared), Arc::clone(&args), c)))
        .collect();

    // Progress line every second.
    let progress = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if shared.done.load(Ordering::Relaxed) {
                    return;
                }
                let a = shared.answered.load(Ordering::Relaxed);
                eprintln!(
                    "[failover_bench] t={:.0}s sent={} answered={} (+{}/s) errors={}",
                    shared.t0.elapsed().as_secs_f64(),
                    shared.sent.load(Ordering::Relaxed),
                    a,
                    a - last,
                    shared.error_samples.lock().unwrap().len()
                );
                last = a;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let admins = [args.admin_a.as_str(), args.admin_b.as_str()];
    const NAMES: [&str; 2] = ["A", "B"];
    let mut master = 0usize;
    let mut failovers: Vec<Failover> = Vec::new();
    for n in 1..=args.failovers {
        let (from, to) = (master, 1 - master);
        let body = serde_json::json!({
            "to": admins[to],
            "sync_timeout_ms": args.sync_timeout_ms,
            "pause_timeout_ms": args.pause_timeout_ms,
            "lease_ttl_ms": args.lease_ttl_ms,
        })
        .to_string();
        let posted = shared.now_us();
        let answer = http(
            admins[from],
            "POST",
            "/v1/failover",
            &args.token,
            Some(&body),
        )
        .await;
        let replied = shared.now_us();
        let mut f = Failover {
            n,
            from: NAMES[from],
            to: NAMES[to],
            posted,
            replied,
            http_status: 0,
            result: "http-error".into(),
            error: None,
            stall_ms: None,
            epoch: None,
            pause_at_ms: None,
            success_at_ms: None,
            steps: String::new(),
        };
        match answer {
            Ok((status, text)) => {
                f.http_status = status;
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) => {
                        f.result = v["result"].as_str().unwrap_or("?").to_string();
                        f.error = v["error"].as_str().map(str::to_string);
                        f.stall_ms = v["stall_ms"].as_f64();
                        f.epoch = v["epoch"].as_u64();
                        if let Some(steps) = v["steps"].as_array() {
                            for s in steps {
                                let state = s["state"].as_str().unwrap_or("?");
                                let at = s["at_ms"].as_f64().unwrap_or(f64::NAN);
                                let _ = write!(f.steps, "{state}@{at:.2} ");
                                match state {
                                    "pause_write" => f.pause_at_ms = Some(at),
                                    "success" | "failed" => f.success_at_ms = Some(at),
                                    _ => {}
                                }
                            }
                        }
                        if f.error.is_none() && v.get("result").is_none() {
                            f.error = Some(text.trim().to_string());
                        }
                    }
                    Err(e) => f.error = Some(format!("HTTP {status}, bad JSON ({e}): {text}")),
                }
            }
            Err(e) => f.error = Some(e),
        }
        eprintln!(
            "[failover_bench] failover {n} {}→{}: {} (HTTP {}) stall_ms={:?} epoch={:?} took {:.2} ms; steps {}{}",
            f.from,
            f.to,
            f.result,
            f.http_status,
            f.stall_ms,
            f.epoch,
            (replied - posted) as f64 / 1000.0,
            f.steps,
            f.error.as_deref().map(|e| format!("; error: {e}")).unwrap_or_default()
        );
        let ok = f.ok();
        let (posted_us, replied_us) = (f.posted, f.replied);
        failovers.push(f);
        if ok {
            master = to;
        } else if args.stop_on_failure {
            eprintln!("[failover_bench] stopping failovers after a failed one (--stop-on-failure)");
            break;
        }
        let wait = if n == args.failovers {
            args.tail_ms
        } else {
            args.interval_ms
        };
        let resume_us = replied_us + wait * 1000;
        if args.follow_master && ok {
            // Clients move once this failover's window is over.
            let window_end =
                (posted_us + args.window_after_ms * 1000).max(replied_us + 100_000) + 10_000;
            tokio::time::sleep(Duration::from_micros(
                window_end.saturating_sub(shared.now_us()),
            ))
            .await;
            shared.target.store(master, Ordering::Release);
        }
        tokio::time::sleep(Duration::from_micros(
            resume_us.saturating_sub(shared.now_us()),
        ))
        .await;
    }
    let stop = shared.now_us();
    shared.stop_at.store(stop, Ordering::Relaxed);
    shared
        .drain_deadline
        .store(stop + 5_000_000, Ordering::Relaxed);
    shared.done.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    progress.abort();
    let elapsed_s = stop as f64 / 1e6;

    let mut recs = std::mem::take(&mut *shared.records.lock().unwrap());
    recs.sort_by_key(|r| r.sent);
    let errors_sample = shared.error_samples.lock().unwrap().clone();

    // ---------------------------------------------------------- lost writes
    let final_master = NAMES[master];
    let redis = [args.redis_a.as_str(), args.redis_b.as_str()];
    let roles = [role(redis[0]).await, role(redis[1]).await];
    let acked: Vec<&Rec> = recs.iter().filter(|r| r.ok).collect();
    let mut lost_keys: Vec<(u64, String)> = Vec::new();
    let mut check_error = None;
    match TcpStream::connect(redis[master]).await {
        Ok(mut s) => {
            for batch in acked.chunks(2000) {
                let keys: Vec<String> = batch.iter().map(|r| key(r.conn, r.seq)).collect();
                let cmds: Vec<Vec<&[u8]>> = keys
                    .iter()
                    .map(|k| vec![&b"STRLEN"[..], k.as_bytes()])
                    .collect();
                match redis_cmds(&mut s, &cmds).await {
                    Ok(replies) => {
                        for ((r, k), reply) in batch.iter().zip(&keys).zip(replies) {
                            match reply {
                                Reply::Int(n) if n as usize == args.value_size => {}
                                _ => lost_keys.push((r.sent, k.clone())),
                            }
                        }
                    }
                    Err(e) => {
                        check_error = Some(format!("reading keys from {}: {e}", redis[master]));
                        break;
                    }
                }
            }
        }
        Err(e) => check_error = Some(format!("connect {}: {e}", redis[master])),
    }

    // ---------------------------------------------------------- per failover
    let errors_total = recs.iter().filter(|r| !r.ok).count();
    let all_lat: Vec<f64> = {
        let mut v: Vec<f64> = recs
            .iter()
            .filter(|r| r.answered())
            .map(Rec::latency_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let before_us = args.window_before_ms * 1000;
    let window = |f: &Failover| -> (u64, u64) {
        let lo = f.posted.saturating_sub(before_us);
        let hi = (f.posted + args.window_after_ms * 1000).max(f.replied + 100_000);
        (lo, hi)
    };
    // Steady state: requests outside every window.
    let steady: Vec<f64> = {
        let mut v: Vec<f64> = recs
            .iter()
            .filter(|r| r.answered())
            .filter(|r| {
                failovers.iter().all(|f| {
                    let (lo, hi) = window(f);
                    r.sent < lo || r.sent >= hi
                })
            })
            .map(Rec::latency_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let segment = |i: usize| -> (u64, u64) {
        let lo = if i == 0 {
            0
        } else {
            failovers[i].posted.saturating_sub(before_us)
        };
        let hi = failovers
            .get(i + 1)
            .map_or(u64::MAX, |n| n.posted.saturating_sub(before_us));
        (lo, hi)
    };

    struct Row {
        max: f64,
        p999: f64,
        p99: f64,
        n: usize,
        errors: usize,
        lost: usize,
        lag: f64,
        worst_conn: u32,
        /// Max latency of requests sent from 5 ms before the pause to 20 ms after the release.
        at_switch: f64,
        /// Max latency in the steady period after the window, until the next window.
        control: f64,
    }
    let mut rows = Vec::new();
    for (i, f) in failovers.iter().enumerate() {
        let (lo, hi) = window(f);
        let in_window: Vec<&Rec> = recs
            .iter()
            .filter(|r| r.sent >= lo && r.sent < hi)
            .collect();
        let mut lat: Vec<f64> = in_window
            .iter()
            .filter(|r| r.answered())
            .map(|r| r.latency_ms())
            .collect();
        lat.sort_by(f64::total_cmp);
        let worst_conn = in_window
            .iter()
            .filter(|r| r.answered())
            .max_by(|a, b| a.latency_ms().total_cmp(&b.latency_ms()))
            .map_or(0, |r| r.conn);
        let lag = in_window
            .iter()
            .map(|r| r.sent.saturating_sub(r.scheduled) as f64 / 1000.0)
            .fold(0.0, f64::max);
        let (slo, shi) = segment(i);
        let errors = recs
            .iter()
            .filter(|r| r.sent >= slo && r.sent < shi && !r.ok)
            .count();
        let lost = lost_keys
            .iter()
            .filter(|(t, _)| *t >= slo && *t < shi)
            .count();
        let unanswered = in_window.iter().any(|r| !r.answered());
        let pause = f.pause_us();
        let release = pause + (f.stall_ms.unwrap_or(0.0) * 1000.0) as u64;
        let max_lat = |from: u64, to: u64| {
            recs.iter()
                .filter(|r| r.sent >= from && r.sent < to && r.answered())
                .map(Rec::latency_ms)
                .fold(f64::NAN, f64::max)
        };
        let at_switch = max_lat(pause.saturating_sub(5_000), release + 20_000);
        let control = max_lat(hi, shi.min(stop));
        rows.push(Row {
            max: if unanswered {
                f64::INFINITY
            } else {
                lat.last().copied().unwrap_or(f64::NAN)
            },
            p999: quantile(&lat, 0.999),
            p99: quantile(&lat, 0.99),
            n: in_window.len(),
            errors,
            lost,
            lag,
            worst_conn,
            at_switch,
            control,
        });
    }

    // ---------------------------------------------------------- report
    let mut md = String::new();
    let _ = writeln!(md, "## leasegate failover benchmark ({})\n", utc_now());
    if !args.note.is_empty() {
        let _ = writeln!(md, "{}\n", args.note);
    }
    let _ = writeln!(
        md,
        "Load: open-loop SET of {} B values, {} requests/s target over {} connections to proxy A ({}), \
         unique keys; achieved {:.0} requests/s ({} sent, {} acknowledged, {} connects) over {:.1} s. {} \
         Failovers: {} alternating (A→B, B→A, …) with `POST /v1/failover` \
         (`sync_timeout_ms` {}, `pause_timeout_ms` {}, `lease_ttl_ms` {}), {} ms of steady load between them.",
        args.value_size,
        args.rate,
        args.connections,
        args.proxy_a,
        recs.len() as f64 / elapsed_s,
        recs.len(),
        acked.len(),
        shared.connects.load(Ordering::Relaxed),
        elapsed_s,
        if args.follow_master {
            format!(
                "**Clients follow the master**: after each successful failover's window every connection drains and reconnects to the new master's proxy ({} moves).",
                shared.moves.load(Ordering::Relaxed)
            )
        } else {
            "Clients stay connected to proxy A for the whole run (sessions move only by leasegate's hand-over).".to_string()
        },
        failovers.len(),
        args.sync_timeout_ms,
        args.pause_timeout_ms,
        args.lease_ttl_ms,
        args.interval_ms,
    );
    let _ = writeln!(
        md,
        "\nPer failover: requests sent from {} ms before the POST to {} ms after it (at least 100 ms \
         past the reply) form the window; *longest stall* is the largest reply−send time of any request \
         in it (∞ if one got no reply), p99.9 / p99 are nearest-rank over it. *report stall* is the \
         failover report's `stall_ms` (pause→release on the old master). *errors* are error replies, \
         broken connections or missing replies, *lost* acknowledged keys missing on the final master ({}), \
         both counted from this failover's window start to the next one's. *gen lag* is the load \
         generator's largest delay behind its schedule in the window (latency is measured from the actual send). \
         Diagnostics: *max at switch* is the longest latency of requests sent from 5 ms before the pause start \
         (POST time + the report's pause_write step) to 20 ms after the release; *control max* the longest \
         latency in the steady period after this window up to the next one (no failover in it): the noise \
         floor of this host.\n",
        args.window_before_ms, args.window_after_ms, final_master
    );
    md.push_str("| # | failover | result | took ms | report stall ms | longest stall ms | p99.9 ms | p99 ms | max at switch ms | control max ms | reqs in window | errors | lost | gen lag ms |\n");
    md.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (f, r) in failovers.iter().zip(&rows) {
        let _ = writeln!(
            md,
            "| {} | {}→{} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            f.n,
            f.from,
            f.to,
            f.result,
            (f.replied - f.posted) as f64 / 1000.0,
            f.stall_ms.map_or("-".into(), |s| format!("{s:.2}")),
            if r.max.is_infinite() {
                "∞".into()
            } else {
                fmt_ms(r.max)
            },
            fmt_ms(r.p999),
            fmt_ms(r.p99),
            fmt_ms(r.at_switch),
            fmt_ms(r.control),
            r.n,
            r.errors,
            r.lost,
            r.lag
        );
    }
    let max_stall = rows.iter().map(|r| r.max).fold(f64::NAN, f64::max);
    let max_p999 = rows.iter().map(|r| r.p999).fold(f64::NAN, f64::max);
    let max_report = failovers
        .iter()
        .filter_map(|f| f.stall_ms)
        .fold(f64::NAN, f64::max);
    let failed = failovers.iter().filter(|f| !f.ok()).count();
    let lost_total = lost_keys.len();
    let _ = writeln!(
        md,
        "| **all** | {} ok / {} | | | **{}** (max) | **{}** (max) | **{}** (max) | | **{}** (max) | **{}** (max) | | **{}** | **{}** | |",
        failovers.len() - failed,
        failovers.len(),
        fmt_ms(max_report),
        if max_stall.is_infinite() { "∞".into() } else { fmt_ms(max_stall) },
        fmt_ms(max_p999),
        fmt_ms(rows.iter().map(|r| r.at_switch).fold(f64::NAN, f64::max)),
        fmt_ms(rows.iter().map(|r| r.control).fold(f64::NAN, f64::max)),
        errors_total,
        lost_total
    );
    let _ = writeln!(
        md,
        "\nWhole run: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms. Outside the failover windows: p50 {} ms, p99.9 {} ms, max {} ms.",
        fmt_ms(quantile(&all_lat, 0.5)),
        fmt_ms(quantile(&all_lat, 0.99)),
        fmt_ms(quantile(&all_lat, 0.999)),
        fmt_ms(all_lat.last().copied().unwrap_or(f64::NAN)),
        fmt_ms(quantile(&steady, 0.5)),
        fmt_ms(quantile(&steady, 0.999)),
        fmt_ms(steady.last().copied().unwrap_or(f64::NAN)),
    );
    let _ = writeln!(
        md,
        "Final roles: A ({}) {}, B ({}) {}; expected master {}. Lost-write check: {} acknowledged keys read back (STRLEN) from {}{}.",
        args.redis_a,
        roles[0].as_deref().unwrap_or("?"),
        args.redis_b,
        roles[1].as_deref().unwrap_or("?"),
        final_master,
        acked.len(),
        redis[master],
        check_error.as_deref().map(|e| format!(" — CHECK INCOMPLETE: {e}")).unwrap_or_default()
    );
    let goal_met = failed == 0
        && errors_total == 0
        && lost_total == 0
        && check_error.is_none()
        && max_stall <= args.goal_ms;
    let _ = writeln!(
        md,
        "\n**Goal** (every failover succeeds, 0 client errors, 0 lost writes, longest stall ≤ {} ms): **{}**.",
        args.goal_ms,
        if goal_met { "met" } else { "NOT met" }
    );
    if failed > 0 {
        md.push_str("\nFailed failovers:\n\n");
        for f in failovers.iter().filter(|f| !f.ok()) {
            let _ = writeln!(
                md,
                "- #{} {}→{}: HTTP {}, `{}`; steps {}",
                f.n,
                f.from,
                f.to,
                f.http_status,
                f.error.as_deref().unwrap_or("?"),
                f.steps.trim()
            );
        }
    }
    if !errors_sample.is_empty() {
        let _ = writeln!(
            md,
            "\nClient errors (first {} of {} recorded; t = s since the start):\n",
            errors_sample.len().min(20),
            errors_sample.len()
        );
        for (t, e) in errors_sample.iter().take(20) {
            let _ = writeln!(md, "- t={:.3}: `{}`", *t as f64 / 1e6, e);
        }
    }
    if !lost_keys.is_empty() {
        let _ = writeln!(md, "\nLost keys (first 10 of {}):\n", lost_keys.len());
        for (t, k) in lost_keys.iter().take(10) {
            let _ = writeln!(md, "- `{k}` sent at t={:.3}s", *t as f64 / 1e6);
        }
    }
    let _ = writeln!(
        md,
        "\nPlots: `{0}.svg` (top: the largest latency per 0.5 ms of send time relative to the pause start, every failover overlaid; bottom: every request of the worst failover), `{0}-timeline.svg` (max and p99 latency per 10 ms over the whole run).",
        args.name
    );
    md.push_str("\nServer-side steps (ms since the failover started):\n\n");
    for f in &failovers {
        let _ = writeln!(md, "- #{} {}→{}: {}", f.n, f.from, f.to, f.steps.trim());
    }

    print!("{md}");
    if let Err(e) = std::fs::create_dir_all(&args.out_dir) {
        eprintln!("cannot create {}: {e}", args.out_dir);
    }
    let md_path = format!("{}/{}.md", args.out_dir, args.name);
    if let Err(e) = std::fs::write(&md_path, &md) {
        eprintln!("cannot write {md_path}: {e}");
    }
    let worst = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.max.is_nan())
        .max_by(|a, b| a.1.max.total_cmp(&b.1.max))
        .map(|(i, _)| i);
    if let Err(e) = plot_switches(
        &args,
        &recs,
        &failovers,
        worst,
        &rows.iter().map(|r| r.worst_conn).collect::<Vec<_>>(),
    ) {
        eprintln!("plot failed: {e}");
    }
    if args.raw {
        let mut csv = String::from("conn,seq,scheduled_us,sent_us,done_us,ok\n");
        for r in &recs {
            let done = if r.answered() {
                r.done.to_string()
            } else {
                String::new()
            };
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{}",
                r.conn,
                r.seq,
                r.scheduled,
                r.sent,
                done,
                u8::from(r.ok)
            );
        }
        let _ = std::fs::write(format!("{}/{}-requests.csv", args.out_dir, args.name), csv);
        let mut ev = String::from("n,from,to,result,posted_us,replied_us,pause_at_ms,stall_ms\n");
        for f in &failovers {
            let _ = writeln!(
                ev,
                "{},{},{},{},{},{},{},{}",
                f.n,
                f.from,
                f.to,
                f.result,
                f.posted,
                f.replied,
                f.pause_at_ms.map_or(String::new(), |v| v.to_string()),
                f.stall_ms.map_or(String::new(), |v| v.to_string())
            );
        }
        let _ = std::fs::write(format!("{}/{}-events.csv", args.out_dir, args.name), ev);
    }
    if let Err(e) = plot_timeline(&args, &recs, &failovers) {
        eprintln!("timeline plot failed: {e}");
    }
    eprintln!(
        "[failover_bench] written {md_path}, {1}/{0}.svg, {1}/{0}-timeline.svg",
        args.name, args.out_dir
    );
    // The stall goal is reported, not enforced; correctness is.
    let _ = goal_met;
    if failed == 0 && errors_total == 0 && lost_total == 0 && check_error.is_none() {
        0
    } else {
        2
    }
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86400;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    // civil-from-days (Howard Hinnant)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

// ------------------------------------------------------------------ plots

fn plot_switches(
    args: &Args,
    recs: &[Rec],
    failovers: &[Failover],
    worst: Option<usize>,
    _worst_conns: &[u32],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let path = format!("{}/{}.svg", args.out_dir, args.name);
    let root = SVGBackend::new(&path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let x_lo = -(args.window_before_ms as f64);
    let x_hi = failovers
        .iter()
        .filter_map(|f| f.stall_ms)
        .fold(70.0f64, f64::max)
        + 30.0;
    // Points relative to each failover's pause start.
    let rel = |f: &Failover| -> Vec<(f64, f64)> {
        let p = f.pause_us() as i64;
        recs.iter()
            .filter(|r| r.answered())
            .filter_map(|r| {
                let x = (r.sent as i64 - p) as f64 / 1000.0;
                (x >= x_lo && x <= x_hi).then(|| (x, r.latency_ms()))
            })
            .collect()
    };
    let all: Vec<(usize, Vec<(f64, f64)>)> = failovers
        .iter()
        .enumerate()
        .map(|(i, f)| (i, rel(f)))
        .collect();
    let y_max = all
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;

    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                sets: &[(usize, Vec<(f64, f64)>)],
                points: bool|
     -> Result<(), Box<dyn std::error::Error>> {
        let ys = sets
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, 0.0..ys.max(0.5))?;
        chart
            .configure_mesh()
            .x_desc("send time relative to the pause start (ms)")
            .y_desc("latency (ms)")
            .draw()?;
        for (i, pts) in sets {
            let f = &failovers[*i];
            let color = if f.from == "A" {
                BLUE.mix(0.5)
            } else {
                RED.mix(0.5)
            };
            if points {
                chart.draw_series(
                    pts.iter()
                        .map(|&(x, y)| Circle::new((x, y), 2, color.filled())),
                )?;
            } else {
                // The largest latency per 0.5 ms of send time, as a line (keeps the SVG small).
                let mut buckets: std::collections::BTreeMap<i64, f64> = Default::default();
                for &(x, y) in pts {
                    let b = buckets.entry((x * 2.0).floor() as i64).or_insert(0.0);
                    *b = b.max(y);
                }
                chart.draw_series(LineSeries::new(
                    buckets.into_iter().map(|(b, y)| (b as f64 / 2.0 + 0.25, y)),
                    color.stroke_width(1),
                ))?;
            }
        }
        // The pause start, and the release (report stall) of the worst / every failover.
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (0.0, ys)],
                BLACK.stroke_width(2),
            ))?
            .label("pause start")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let mut labelled = false;
        for (i, _) in sets {
            if let Some(s) = failovers[*i].stall_ms {
                let series = chart.draw_series(LineSeries::new(
                    vec![(s, 0.0), (s, ys)],
                    GREEN.mix(0.6).stroke_width(1),
                ))?;
                if !labelled {
                    series.label("release (report stall_ms)").legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2))
                    });
                    labelled = true;
                }
            }
        }
        chart
            .draw_series(Vec::<Circle<(f64, f64), i32>>::new())?
            .label("request, A→B")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
        chart
            .draw_series(Vec::<Circle<(f64, f64), i32>>::new())?
            .label("request, B→A")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };
    let _ = y_max;
    draw(
        &top,
        &format!(
            "Write latency around the switch, all {} failovers overlaid, max per 0.5 ms ({} SET/s × {} B, {} conns)",
            failovers.len(),
            args.rate,
            args.value_size,
            args.connections
        ),
        &all,
        false,
    )?;
    if let Some(w) = worst {
        let f = &failovers[w];
        draw(
            &bottom,
            &format!(
                "Worst failover: #{} {}→{} (report stall {} ms)",
                f.n,
                f.from,
                f.to,
                f.stall_ms.map_or("-".into(), |s| format!("{s:.2}"))
            ),
            &all[w..=w],
            true,
        )?;
    }
    root.present()?;
    Ok(())
}

fn plot_timeline(
    args: &Args,
    recs: &[Rec],
    failovers: &[Failover],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let path = format!("{}/{}-timeline.svg", args.out_dir, args.name);
    let root = SVGBackend::new(&path, (1400, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let end_s = recs.last().map_or(1.0, |r| r.sent as f64 / 1e6);
    let bucket_us = 10_000u64;
    let nb = (end_s * 1e6 / bucket_us as f64) as usize + 1;
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); nb];
    for r in recs.iter().filter(|r| r.answered()) {
        buckets[(r.sent / bucket_us) as usize].push(r.latency_ms());
    }
    let mut max_pts = Vec::new();
    let mut p99_pts = Vec::new();
    for (i, b) in buckets.iter_mut().enumerate() {
        if b.is_empty() {
            continue;
        }
        b.sort_by(f64::total_cmp);
        let t = i as f64 * bucket_us as f64 / 1e6;
        max_pts.push((t, *b.last().unwrap()));
        p99_pts.push((t, quantile(b, 0.99)));
    }
    let ys = max_pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Write latency over the whole run (per 10 ms of send time); vertical lines: failover POSTs (grey: succeeded, magenta: failed)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0.0..ys)?;
    chart
        .configure_mesh()
        .x_desc("time since the start (s)")
        .y_desc("latency (ms)")
        .draw()?;
    for f in failovers {
        let t = f.posted as f64 / 1e6;
        let color = if f.ok() {
            BLACK.mix(0.4)
        } else {
            MAGENTA.mix(0.8)
        };
        chart.draw_series(LineSeries::new(
            vec![(t, 0.0), (t, ys)],
            color.stroke_width(1),
        ))?;
    }
    chart
        .draw_series(LineSeries::new(max_pts, RED.stroke_width(1)))?
        .label("max")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(p99_pts, BLUE.stroke_width(1)))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
