//! The failovers: `POST /v1/failover` on the current master's admin API
//! (`--flow leasegate`) or the controller's shard failover with
//! `wait_for_sync` (`--flow controller`, the kvrocks-controller PR #389
//! flow), A→B, B→A, … with steady load between them, and what each report
//! said.
//!
//! The server's report (result, `stall_ms`, the step times) is kept beside
//! the client-side times of the POST, so the statistics can place each
//! failover's pause on the load generator's clock. With a controller
//! (`--controller-url`), its timing of the failover is kept too: how long
//! the push that promoted the new master took (`promote_ms`, the node's own
//! promotion). With `--flow leasegate` each request says whether leasegate
//! times its pause to the target's promotion (`promotion_timing`, per
//! `--timing`), and the report's `promotion_ms` and `timing` (outcome, wait
//! before the pause) are kept. The waits between failovers follow
//! `--schedule` ([`crate::schedule`]). The HTTP APIs are spoken with a minimal HTTP/1.1 client over
//! one `Connection: close` request: the benchmark needs nothing more and
//! stays off the proxy's own HTTP stack.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::{Args, Flow};
use crate::load::Shared;
use crate::schedule::{self, Schedule};
use leasegate::kvrocks::admin_api::{FailoverReport, FailoverRequest, TimingOutcome};

/// The proxies' names in the report, by index (0 = A, 1 = B).
pub const NAMES: [&str; 2] = ["A", "B"];

/// One failover as the benchmark ran it and the server reported it.
pub struct Failover {
    pub n: usize,
    pub from: &'static str,
    pub to: &'static str,
    /// `promotion_timing` as requested; `None` where it does not apply
    /// (`--flow controller`).
    pub timing: Option<bool>,
    /// Steady load before this failover's POST (since the previous reply,
    /// or the load's start for the first), ms, as the schedule drew it.
    pub gap_ms: u64,
    /// µs since the start: POST sent, reply received.
    pub posted: u64,
    pub replied: u64,
    pub http_status: u16,
    pub result: String,
    pub error: Option<String>,
    pub stall_ms: Option<f64>,
    pub epoch: Option<u64>,
    /// Step times (ms since the failover started on the server).
    pub pause_at_ms: Option<f64>,
    pub success_at_ms: Option<f64>,
    pub steps: String,
    /// The controller's push of the new topology to the new master (its
    /// promotion), ms, when a controller timed it.
    pub promote_ms: Option<f64>,
    /// How long the controller took over its shard failover (from taking
    /// the request up to its answer), ms.
    pub controller_ms: Option<f64>,
    /// The failover report's `promotion_ms`: the command that made the
    /// target master (`SLAVEOF NO ONE`, or its `CLUSTERX SETNODES`), from
    /// its send to its answer.
    pub promotion_ms: Option<f64>,
    /// The report's `timing`: what the promotion timing did, how long the
    /// failover waited before its pause (ms), and the server's note.
    pub outcome: Option<TimingOutcome>,
    pub wait_ms: Option<f64>,
    pub timing_note: Option<String>,
    /// The report's `timing.after_tick_ms`: the promotion's answer after
    /// its planned tick.
    pub after_tick_ms: Option<f64>,
}

impl Failover {
    /// Failover `n` from `from` to `to` (proxy indexes), not yet run: no
    /// answer, no times.
    pub fn new(n: usize, from: usize, to: usize, timing: Option<bool>) -> Failover {
        Failover {
            n,
            from: NAMES[from],
            to: NAMES[to],
            timing,
            gap_ms: 0,
            posted: 0,
            replied: 0,
            http_status: 0,
            result: "http-error".into(),
            error: None,
            stall_ms: None,
            epoch: None,
            pause_at_ms: None,
            success_at_ms: None,
            steps: String::new(),
            promote_ms: None,
            controller_ms: None,
            promotion_ms: None,
            outcome: None,
            wait_ms: None,
            timing_note: None,
            after_tick_ms: None,
        }
    }

    /// The timing mode in the report: on, off, or n/a.
    pub fn mode(&self) -> &'static str {
        match self.timing {
            Some(true) => "on",
            Some(false) => "off",
            None => "n/a",
        }
    }

    /// The node's promotion, ms: the failover report's `promotion_ms`, else
    /// (controller-run failovers) the controller's push to the new master.
    pub fn promotion(&self) -> Option<f64> {
        self.promotion_ms.or(self.promote_ms)
    }

    pub fn ok(&self) -> bool {
        self.result == "success"
    }

    /// Estimated pause start in the client's clock (µs since the start).
    pub fn pause_us(&self) -> u64 {
        self.posted + (self.pause_at_ms.unwrap_or(0.0) * 1000.0) as u64
    }

    /// The POST's round trip, ms.
    pub fn took_ms(&self) -> f64 {
        (self.replied - self.posted) as f64 / 1000.0
    }

    /// Takes the result, stall, epoch and steps from the failover report.
    fn read_report(&mut self, report: FailoverReport) {
        self.result = report.result.as_str().to_string();
        self.error = report.error;
        self.stall_ms = report.stall_ms;
        self.epoch = report.epoch;
        self.promotion_ms = report.promotion_ms;
        if let Some(t) = report.timing {
            self.outcome = Some(t.outcome);
            self.wait_ms = Some(t.wait_ms);
            self.timing_note = Some(t.note);
            self.after_tick_ms = t.after_tick_ms;
        }
        for step in &report.steps {
            let (state, at) = (step.state.as_str(), step.at_ms);
            let _ = write!(self.steps, "{state}@{at:.2} ");
            match state {
                "pause_write" => self.pause_at_ms = Some(at),
                "success" | "failed" => self.success_at_ms = Some(at),
                _ => {}
            }
        }
    }

    /// Takes the controller's timing of this failover (its `data.timing`,
    /// or `GET /last-failover`): the promotion time, and its steps.
    fn read_timing(&mut self, t: &serde_json::Value) {
        self.promote_ms = t["promote_ms"].as_f64();
        self.controller_ms = t["total_ms"].as_f64();
        let mut steps = String::from("controller:");
        for (name, key) in [
            ("pause", "pause_at_ms"),
            ("synced", "synced_at_ms"),
            ("pushed", "pushed_at_ms"),
            ("heartbeat", "heartbeat_at_ms"),
            ("unpause", "unpause_at_ms"),
        ] {
            if let Some(at) = t[key].as_f64() {
                let _ = write!(steps, " {name}@{at:.2}");
            }
        }
        if let Some(p) = self.promote_ms {
            let _ = write!(steps, " (promotion {p:.2} ms)");
        }
        if !self.steps.is_empty() {
            self.steps.push_str("; ");
        }
        self.steps.push_str(&steps);
    }

    /// Takes the controller's answer to its shard failover (`--flow
    /// controller`): times are ms since the controller took the request up.
    fn read_controller_answer(&mut self, answer: Result<(u16, String), String>) {
        let (status, text) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.http_status = status;
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(format!("HTTP {status}, not JSON ({e}): {}", text.trim()));
                return;
            }
        };
        if status != 200 {
            self.result = "failed".into();
            self.error = Some(
                v["error"]["message"]
                    .as_str()
                    .map_or_else(|| text.trim().to_string(), str::to_string),
            );
            return;
        }
        let t = &v["data"]["timing"];
        self.result = "success".into();
        self.pause_at_ms = t["pause_at_ms"].as_f64();
        self.stall_ms = t["stall_ms"].as_f64();
        self.success_at_ms = t["total_ms"].as_f64();
        self.epoch = t["version"].as_u64();
        self.read_timing(t);
    }

    /// Takes the HTTP answer (or why there was none).
    fn read_answer(&mut self, answer: Result<(u16, String), String>) {
        match answer {
            Ok((status, text)) => {
                self.http_status = status;
                match serde_json::from_str::<FailoverReport>(&text) {
                    Ok(report) => self.read_report(report),
                    Err(e) => {
                        self.error = Some(format!(
                            "HTTP {status}, not a failover report ({e}): {}",
                            text.trim()
                        ))
                    }
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn log(&self) {
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        eprintln!(
            "[failover_bench] failover {} {}→{} after {} ms, timing {}: {} (HTTP {}) stall_ms={} promotion_ms={} \
             outcome={} after_tick_ms={} wait_ms={} epoch={:?} took {:.2} ms; steps {}{}{}",
            self.n,
            self.from,
            self.to,
            self.gap_ms,
            self.mode(),
            self.result,
            self.http_status,
            opt(self.stall_ms),
            opt(self.promotion()),
            self.outcome.map_or("-", TimingOutcome::as_str),
            opt(self.after_tick_ms),
            opt(self.wait_ms),
            self.epoch,
            self.took_ms(),
            self.steps,
            self.timing_note
                .as_deref()
                .map(|t| format!("; timing: {t}"))
                .unwrap_or_default(),
            self.error.as_deref().map(|e| format!("; error: {e}")).unwrap_or_default()
        );
    }
}

/// Runs `--failovers` failovers from A (the first master), with steady load
/// between them. Returns them and the index of the final master.
pub async fn run(args: &Args, shared: &Shared) -> (Vec<Failover>, usize) {
    let mut master = 0usize;
    let mut failovers: Vec<Failover> = Vec::new();
    let mut schedule = Schedule::of(args);
    // The first failover: after the warm-up (slept by the caller) and the
    // schedule's random part.
    let mut gap_ms = args.warmup_ms + schedule.extra_ms();
    sleep_until_us(shared, gap_ms * 1000).await;
    // The controller's count of failovers before this run's first.
    let mut counted = last_controller_failover(args)
        .await
        .map_or(0, |t| number(&t));
    for n in 1..=args.failovers {
        let mut f = failover(args, shared, n, master).await;
        f.gap_ms = gap_ms;
        if args.flow == Flow::Leasegate {
            // The promotion inside a leasegate-run failover: what the
            // controller timed, if it carried out a new one.
            if let Some(t) = last_controller_failover(args).await {
                if number(&t) > counted {
                    counted = number(&t);
                    f.read_timing(&t);
                }
            }
        }
        f.log();
        let ok = f.ok();
        let (posted, replied) = (f.posted, f.replied);
        failovers.push(f);
        if ok && args.flow != Flow::Upgrade {
            master = 1 - master;
        } else if !ok && args.stop_on_failure {
            eprintln!("[failover_bench] stopping failovers after a failed one (--stop-on-failure)");
            break;
        } else if !ok && args.flow != Flow::Upgrade {
            // A failover that failed after the controller's switch leaves
            // the other node master: the next one starts from there.
            master = crate::check::actual_master(args, master, Duration::from_secs(3)).await;
        }
        let wait_ms = if n == args.failovers {
            args.tail_ms
        } else {
            schedule.wait_ms(args.interval_ms)
        };
        gap_ms = wait_ms;
        if args.follow_master && ok {
            // Clients move once this failover's window is over.
            let window_end = (posted + args.window_after_ms * 1000).max(replied + 100_000) + 10_000;
            sleep_until_us(shared, window_end).await;
            shared.retarget(master);
        }
        sleep_until_us(shared, replied + wait_ms * 1000).await;
    }
    (failovers, master)
}

/// Sleeps until `at` µs since the start (not at all if that has passed).
async fn sleep_until_us(shared: &Shared, at: u64) {
    tokio::time::sleep(Duration::from_micros(at.saturating_sub(shared.now_us()))).await;
}

/// The controller's `GET /last-failover` (`None` without a controller, or
/// before its first failover).
async fn last_controller_failover(args: &Args) -> Option<serde_json::Value> {
    let addr = host_port(args.controller_url.as_deref()?);
    match http(addr, "GET", "/last-failover", "", "").await {
        Ok((200, text)) => serde_json::from_str(&text).ok(),
        _ => None,
    }
}

/// The controller's count of failovers in its timing.
fn number(timing: &serde_json::Value) -> u64 {
    timing["failover"].as_u64().unwrap_or(0)
}

/// `host:port` of an `http://host:port` URL.
fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// Failover number `n` from proxy `from` to the other one (with
/// `--flow upgrade`: upgrade number `n` of proxy `from`).
async fn failover(args: &Args, shared: &Shared, n: usize, from: usize) -> Failover {
    if args.flow == Flow::Upgrade {
        return upgrade(args, shared, n, from).await;
    }
    let to = 1 - from;
    let mut timing = schedule::timing_for(args.timing, args.flow, n);
    if args.flow == Flow::Controller {
        // The leasegates time the controller's pause: set before the POST.
        timing = match timing {
            Some(on) => controller_pause_timing(args, on).await,
            None => None,
        };
    }
    let admins = [args.admin_a.as_str(), args.admin_b.as_str()];
    let (addr, path, token, body) = match args.flow {
        Flow::Leasegate => {
            let request = FailoverRequest {
                sync_timeout_ms: args.sync_timeout_ms,
                pause_timeout_ms: args.pause_timeout_ms,
                lease_ttl_ms: args.lease_ttl_ms,
                promotion_timing: timing.unwrap_or(true),
                // In cluster mode too (opt-in there).
                cluster_timing: timing.unwrap_or(false),
                ..FailoverRequest::new(admins[to])
            };
            let body = serde_json::to_string(&request).unwrap_or_default();
            (
                admins[from],
                "/v1/failover".to_string(),
                args.token.as_str(),
                body,
            )
        }
        Flow::Controller | Flow::Upgrade => {
            let ids = [args.node_a.as_str(), args.node_b.as_str()];
            let body = serde_json::json!({
                "preferred_node_id": ids[to],
                "wait_for_sync": true,
                "sync_timeout_ms": args.sync_timeout_ms,
                "pause_timeout_ms": args.pause_timeout_ms,
                "poll_interval_ms": args.controller_poll_ms,
            });
            let path = format!(
                "/api/v1/namespaces/{}/clusters/{}/shards/{}/failover",
                args.namespace, args.cluster, args.shard
            );
            let url = args.controller_url.as_deref().unwrap_or_default();
            (host_port(url), path, "", body.to_string())
        }
    };
    // The controller's pause is timed by the old master's leasegate: its
    // count of outcomes says what came of it.
    let outcomes_before = match args.flow {
        Flow::Controller => pause_outcomes(admins[from]).await,
        _ => None,
    };
    let posted = shared.now_us();
    let answer = http(addr, "POST", &path, token, &body).await;
    let replied = shared.now_us();
    let mut f = Failover {
        posted,
        replied,
        ..Failover::new(n, from, to, timing)
    };
    match args.flow {
        Flow::Leasegate => f.read_answer(answer),
        Flow::Controller | Flow::Upgrade => f.read_controller_answer(answer),
    }
    if let (Some(before), Some(true)) = (outcomes_before, timing) {
        f.outcome = controller_pause_outcome(admins[from], before).await;
    }
    f
}

/// Upgrade number `n` of proxy `at`: `SIGUSR2` to the process its
/// `/v1/status` names, done when `/v1/status` names another (10 s at most).
async fn upgrade(args: &Args, shared: &Shared, n: usize, at: usize) -> Failover {
    let admin = [args.admin_a.as_str(), args.admin_b.as_str()][at];
    let pid_of = || async {
        let (_, text) = http(admin, "GET", "/v1/status", &args.token, "").await?;
        let status: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        status["pid"]
            .as_u64()
            .ok_or_else(|| format!("no pid in /v1/status: {text}"))
    };
    let posted = shared.now_us();
    let result = async {
        let old = pid_of().await?;
        let sent = std::process::Command::new("kill")
            .args(["-USR2", &old.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err(format!("kill -USR2 {old} failed"));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(pid) = pid_of().await {
                if pid != old {
                    return Ok(pid);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("leasegate {old} was not replaced within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    .await;
    let replied = shared.now_us();
    let mut f = Failover {
        posted,
        replied,
        ..Failover::new(n, at, at, None)
    };
    match result {
        Ok(_) => {
            f.http_status = 200;
            f.result = "success".into();
        }
        Err(e) => {
            f.result = "failed".into();
            f.error = Some(e);
        }
    }
    f
}

/// `leasegate_controller_pause_timing_total` of the leasegate at `admin`:
/// held, missed, unknown.
async fn pause_outcomes(admin: &str) -> Option<[u64; 3]> {
    let (_, text) = http(admin, "GET", "/metrics", "", "").await.ok()?;
    let count = |outcome: &str| {
        let series = format!("leasegate_controller_pause_timing_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    Some([count("held")?, count("missed")?, count("unknown")?])
}

/// What came of the controller's timed pause at `admin` since its counts
/// were `before` (judged when the replica's link closes, at its
/// promotion; waited for up to 1.5 s): `Unused` where it was not timed.
async fn controller_pause_outcome(admin: &str, before: [u64; 3]) -> Option<TimingOutcome> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        let now = pause_outcomes(admin).await?;
        if now[0] > before[0] {
            return Some(TimingOutcome::Held);
        }
        if now[1] > before[1] {
            return Some(TimingOutcome::Missed);
        }
        if now[2] > before[2] || tokio::time::Instant::now() >= deadline {
            return Some(TimingOutcome::Unused);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets `pause.promotion_timing` to `on` in both leasegates' config files
/// and reloads them; `Some(on)` once both took it, `None` (n/a) without the
/// files or if a reload failed (said on stderr).
async fn controller_pause_timing(args: &Args, on: bool) -> Option<bool> {
    let (Some(a), Some(b)) = (&args.config_a, &args.config_b) else {
        return None;
    };
    for (path, admin) in [(a, &args.admin_a), (b, &args.admin_b)] {
        let done = match std::fs::read_to_string(path) {
            Ok(text) => std::fs::write(path, with_promotion_timing(&text, on))
                .map_err(|e| format!("write {}: {e}", path.display())),
            Err(e) => Err(format!("read {}: {e}", path.display())),
        };
        let reloaded = match done {
            Ok(()) => http(admin, "POST", "/v1/reload", &args.token, "").await,
            Err(e) => Err(e),
        };
        match reloaded {
            Ok((200, _)) => {}
            other => {
                eprintln!("[failover_bench] setting pause.promotion_timing at {admin}: {other:?}");
                return None;
            }
        }
    }
    Some(on)
}

/// `text` (a leasegate config) with `pause.promotion_timing: on`: the
/// key's line replaced, or added under `pause:`, or a `pause:` section
/// added.
fn with_promotion_timing(text: &str, on: bool) -> String {
    let line = format!("  promotion_timing: {on}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if let Some(l) = lines
        .iter_mut()
        .find(|l| l.trim_start().starts_with("promotion_timing:"))
    {
        *l = line;
    } else if let Some(at) = lines.iter().position(|l| l.trim_end() == "pause:") {
        lines.insert(at + 1, line);
    } else {
        lines.push("pause:".to_string());
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

/// One HTTP/1.1 request (`Connection: close`, 30 s at most): the status and
/// the body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).ok();
        let req = request(addr, method, path, token, body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse_response(&resp)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("{method} {addr}{path}: timeout"))?
}

fn request(addr: &str, method: &str, path: &str, token: &str, body: &str) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !token.is_empty() {
        let _ = write!(req, "Authorization: Bearer {token}\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

/// Status and body of a whole response. Chunked bodies are not expected
/// (hyper sends Content-Length for Full bodies).
fn parse_response(resp: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    Ok((status, body.to_string()))
}
