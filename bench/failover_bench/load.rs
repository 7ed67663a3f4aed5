//! The open-loop load: `--connections` clients writing SETs on a fixed
//! schedule through proxy A (or, with `--follow-master`, the current
//! master's proxy), each request recorded with its send and reply times.
//!
//! Open loop, because a closed-loop client stops sending while it waits and
//! so hides a stall behind its own silence: here every client keeps sending
//! on schedule (pipelining when replies are late), so the latency of the
//! requests sent around a switch is the stall a real client would see. Each
//! connection has a writer (the schedule) and a reader task (matching
//! replies, decoded with `redis-protocol`, to requests in order).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::resp::{self, Reply};

/// One request as a client saw it. Times are µs since the run's start.
#[derive(Clone, Copy)]
pub struct Rec {
    pub conn: u32,
    pub seq: u32,
    pub scheduled: u64,
    pub sent: u64,
    /// `u64::MAX`: no reply.
    pub done: u64,
    pub ok: bool,
}

impl Rec {
    pub fn latency_us(&self) -> u64 {
        self.done.saturating_sub(self.sent)
    }
    pub fn latency_ms(&self) -> f64 {
        self.latency_us() as f64 / 1000.0
    }
    pub fn answered(&self) -> bool {
        self.done != u64::MAX
    }
}

/// The key of request `seq` of connection `conn` (unique over the run).
pub fn key(conn: u32, seq: u32) -> String {
    format!("fo:{conn}:{seq}")
}

/// State shared by the clients and the driver.
pub struct Shared {
    pub t0: Instant,
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
    target: AtomicUsize,
    /// Connections closed to follow the master (--follow-master).
    moves: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            t0: Instant::now(),
            stop_at: AtomicU64::new(u64::MAX),
            drain_deadline: AtomicU64::new(u64::MAX),
            done: AtomicBool::new(false),
            records: Mutex::new(Vec::new()),
            error_samples: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            target: AtomicUsize::new(0),
            moves: AtomicU64::new(0),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Sends new connections to proxy `to` (0 = A, 1 = B); open ones move.
    pub fn retarget(&self, to: usize) {
        self.target.store(to, Ordering::Release);
    }

    fn stopping(&self) -> bool {
        self.now_us() >= self.stop_at.load(Ordering::Relaxed)
    }

    fn note_error(&self, at: u64, text: String) {
        let mut s = self.error_samples.lock().unwrap();
        if s.len() < 200 {
            s.push((at, text));
        }
    }
}

/// What the load saw, once it stopped.
pub struct Outcome {
    /// Every request, by send time.
    pub recs: Vec<Rec>,
    /// The first 200 client errors: (µs since the start, text).
    pub errors_sample: Vec<(u64, String)>,
    /// When the writers stopped, µs since the start.
    pub stop_us: u64,
    pub connects: u64,
    pub moves: u64,
}

/// The running load generator.
pub struct Load {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
    progress: JoinHandle<()>,
}

impl Load {
    /// Starts every client (their first requests go out 10 ms later) and a
    /// progress line on stderr every second.
    pub fn start(args: &Arc<Args>) -> Load {
        let shared = Arc::new(Shared::new());
        eprintln!(
            "[failover_bench] {} conns → {}, {} SET/s of {} B, {} failovers",
            args.connections, args.proxy_a, args.rate, args.value_size, args.failovers
        );
        let clients = (0..args.connections as u32)
            .map(|c| tokio::spawn(client(Arc::clone(&shared), Arc::clone(args), c)))
            .collect();
        let progress = tokio::spawn(progress(Arc::clone(&shared)));
        Load {
            shared,
            clients,
            progress,
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Stops the writers, lets the readers drain (5 s at most) and collects
    /// the records.
    pub async fn finish(self) -> Outcome {
        let shared = self.shared;
        let stop = shared.now_us();
        shared.stop_at.store(stop, Ordering::Relaxed);
        shared
            .drain_deadline
            .store(stop + 5_000_000, Ordering::Relaxed);
        shared.done.store(true, Ordering::Relaxed);
        for c in self.clients {
            let _ = c.await;
        }
        self.progress.abort();
        let mut recs = std::mem::take(&mut *shared.records.lock().unwrap());
        recs.sort_by_key(|r| r.sent);
        let errors_sample = shared.error_samples.lock().unwrap().clone();
        Outcome {
            recs,
            errors_sample,
            stop_us: stop,
            connects: shared.connects.load(Ordering::Relaxed),
            moves: shared.moves.load(Ordering::Relaxed),
        }
    }
}

/// Prints sent / answered / errors every second until the run is done.
async fn progress(shared: Arc<Shared>) {
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
}

/// One client's fixed schedule: a SET every `period_us`, shifted by a
/// per-connection phase so the connections spread over the period.
struct Schedule {
    conn: u32,
    start_us: u64,
    phase_us: u64,
    period_us: u64,
    value: Vec<u8>,
    /// The next request's sequence number (kept across reconnects).
    seq: u32,
}

impl Schedule {
    fn new(shared: &Shared, args: &Args, conn: u32) -> Schedule {
        let period_us = (1_000_000.0 * args.connections as f64 / args.rate as f64) as u64;
        Schedule {
            conn,
            start_us: shared.now_us() + 10_000,
            phase_us: period_us * conn as u64 / args.connections as u64,
            period_us,
            value: (0..args.value_size)
                .map(|i| b'a' + ((i + conn as usize) % 26) as u8)
                .collect(),
            seq: 0,
        }
    }

    /// When the next request is due, µs since the start.
    fn due(&self) -> u64 {
        self.start_us + self.phase_us + self.seq as u64 * self.period_us
    }
}

/// One connection's requests in flight and how it is doing.
#[derive(Default)]
struct ConnState {
    pending: Mutex<VecDeque<Rec>>,
    /// The reader gave up (the connection broke or the run ended).
    broken: AtomicBool,
    /// The writer stopped (end of the run, or moving to the new master's proxy).
    writer_done: AtomicBool,
}

/// How a connection ended.
enum End {
    /// The run is over.
    Finished,
    /// Closed to follow the master (--follow-master).
    Moving,
    /// Broken: reconnect after a short pause.
    Broken,
}

/// One client connection at a time: an open-loop writer and a reader
/// matching replies in order. Reconnects after a connection failure (counted
/// as errors for the requests it lost).
async fn client(shared: Arc<Shared>, args: Arc<Args>, conn: u32) {
    let mut schedule = Schedule::new(&shared, &args, conn);
    let proxies = [args.proxy_a.as_str(), args.proxy_b.as_str()];
    loop {
        // Normally always proxy A; with --follow-master the current master's proxy.
        let target = shared.target.load(Ordering::Acquire);
        let stream = match resp::connect(proxies[target], &args.password).await {
            Ok(s) => s,
            Err(e) => {
                shared.note_error(shared.now_us(), format!("conn {conn}: {e}"));
                if shared.stopping() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connects.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true).ok();
        match run_connection(&shared, &mut schedule, stream, target).await {
            End::Finished => return,
            End::Moving => {
                shared.moves.fetch_add(1, Ordering::Relaxed);
            }
            End::Broken => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Writes on schedule over `stream` until the run ends, the connection
/// breaks or the clients move; returns once the reader has drained.
async fn run_connection(
    shared: &Arc<Shared>,
    schedule: &mut Schedule,
    stream: TcpStream,
    target: usize,
) -> End {
    let (rd, mut wr) = stream.into_split();
    let state = Arc::new(ConnState::default());
    let reader = tokio::spawn(read_replies(
        Arc::clone(shared),
        Arc::clone(&state),
        rd,
        schedule.conn,
    ));
    let moving = write_requests(shared, schedule, &state, &mut wr, target).await;
    state.writer_done.store(true, Ordering::Release);
    let reconnect = !shared.done.load(Ordering::Relaxed) && !shared.stopping();
    // Keep the write half open until the reader drained.
    let _ = reader.await;
    drop(wr);
    match (reconnect, moving) {
        (false, _) => End::Finished,
        (true, true) => End::Moving,
        (true, false) => End::Broken,
    }
}

/// The writer: a SET whenever one is due. Returns whether it stopped to
/// move to another proxy.
async fn write_requests(
    shared: &Shared,
    schedule: &mut Schedule,
    state: &ConnState,
    wr: &mut OwnedWriteHalf,
    target: usize,
) -> bool {
    let conn = schedule.conn;
    let mut out: Vec<u8> = Vec::with_capacity(schedule.value.len() + 64);
    loop {
        let scheduled = schedule.due();
        if scheduled >= shared.stop_at.load(Ordering::Relaxed)
            || state.broken.load(Ordering::Relaxed)
        {
            return false;
        }
        if shared.target.load(Ordering::Relaxed) != target {
            return true;
        }
        if scheduled > shared.now_us() {
            let at = tokio::time::Instant::from_std(shared.t0) + Duration::from_micros(scheduled);
            tokio::time::sleep_until(at).await;
        }
        let seq = schedule.seq;
        out.clear();
        resp::encode(
            &mut out,
            &[b"SET", key(conn, seq).as_bytes(), &schedule.value],
        );
        let sent = shared.now_us();
        state.pending.lock().unwrap().push_back(Rec {
            conn,
            seq,
            scheduled,
            sent,
            done: u64::MAX,
            ok: false,
        });
        shared.sent.fetch_add(1, Ordering::Relaxed);
        schedule.seq += 1;
        if let Err(e) = wr.write_all(&out).await {
            shared.note_error(shared.now_us(), format!("conn {conn}: write: {e}"));
            return false;
        }
    }
}

/// The outcome of one read attempt.
enum Read {
    Data(usize),
    /// Nothing yet: check the state and read again.
    Again,
    /// The connection is done with, and why.
    End(String),
}

/// The reader task: matches replies to pending requests until the writer
/// stopped and every reply came back, the connection broke, or the drain
/// deadline passed. Requests left without a reply are recorded as errors.
async fn read_replies(
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    mut rd: OwnedReadHalf,
    conn: u32,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut done: Vec<Rec> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let why = loop {
        if state.writer_done.load(Ordering::Acquire) && state.pending.lock().unwrap().is_empty() {
            break None;
        }
        let n = match read_some(&shared, &state, &mut rd, &mut chunk).await {
            Read::Data(n) => n,
            Read::Again => continue,
            Read::End(why) => break Some(why),
        };
        let now = shared.now_us();
        buf.extend_from_slice(&chunk[..n]);
        let bad = take_replies(&shared, &state, &mut buf, now, &mut done);
        if done.len() >= 1024 {
            shared.records.lock().unwrap().append(&mut done);
        }
        if let Some(b) = bad {
            break Some(b);
        }
    };
    state.broken.store(true, Ordering::Relaxed);
    // Whatever is still pending got no reply: errors.
    let lost: Vec<Rec> = state.pending.lock().unwrap().drain(..).collect();
    if let Some(why) = why {
        if !lost.is_empty() || !shared.done.load(Ordering::Relaxed) {
            let text = format!("conn {conn}: {why} ({} requests unanswered)", lost.len());
            shared.note_error(shared.now_us(), text);
        }
    }
    done.extend(lost);
    shared.records.lock().unwrap().append(&mut done);
}

/// Reads what arrived, waiting at most 50 ms (2 ms once the writer
/// stopped; in 20 ms steps up to the drain deadline once the run ended).
async fn read_some(
    shared: &Shared,
    state: &ConnState,
    rd: &mut OwnedReadHalf,
    chunk: &mut [u8],
) -> Read {
    let deadline = shared.drain_deadline.load(Ordering::Relaxed);
    let wait = if deadline != u64::MAX {
        Duration::from_micros(deadline.saturating_sub(shared.now_us()).min(20_000))
    } else if state.writer_done.load(Ordering::Relaxed) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(50)
    };
    match tokio::time::timeout(wait, rd.read(chunk)).await {
        Err(_) if deadline != u64::MAX && shared.now_us() >= deadline => {
            Read::End("no reply before the end of the run".to_string())
        }
        Err(_) => Read::Again,
        Ok(Ok(0)) => Read::End("connection closed by the proxy".to_string()),
        Ok(Ok(n)) => Read::Data(n),
        Ok(Err(e)) => Read::End(format!("read: {e}")),
    }
}

/// Decodes every complete reply in `buf` (and removes them), completing the
/// oldest pending request with each. Returns why the connection cannot go
/// on, if it cannot (an undecodable or unexpected reply).
fn take_replies(
    shared: &Shared,
    state: &ConnState,
    buf: &mut Vec<u8>,
    now: u64,
    done: &mut Vec<Rec>,
) -> Option<String> {
    let mut pos = 0;
    let bad = loop {
        match resp::decode_reply(&buf[pos..]) {
            Ok(Some((reply, used))) => {
                pos += used;
                match complete(shared, state, reply, now) {
                    Ok(rec) => done.push(rec),
                    Err(e) => break Some(e),
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(format!("protocol error: {e}")),
        }
    };
    buf.drain(..pos);
    bad
}

/// Completes the oldest pending request with `reply` (an error unless it is
/// `+OK`); an error if no request was pending.
fn complete(shared: &Shared, state: &ConnState, reply: Reply, now: u64) -> Result<Rec, String> {
    let Some(mut rec) = state.pending.lock().unwrap().pop_front() else {
        return Err(format!("unexpected reply {reply:?}"));
    };
    rec.done = now;
    rec.ok = matches!(&reply, Reply::Ok(s) if s == "OK");
    if !rec.ok {
        let text = format!("conn {} {}: {:?}", rec.conn, key(rec.conn, rec.seq), reply);
        shared.note_error(now, text);
    }
    shared.answered.fetch_add(1, Ordering::Relaxed);
    Ok(rec)
}
