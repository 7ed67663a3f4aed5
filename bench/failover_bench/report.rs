//! The report: a markdown page (printed and written to `NAME.md`), with
//! `--raw` the requests and failovers as CSV, and the verdict (exit code).
//!
//! The page's tables and sentences are what the README quotes and what
//! `bench/failover.sh` points at, so their fields and order are kept stable;
//! the numbers come from `stats`, the plots from `plot`.

use std::fmt::Write as _;

use leasegate::kvrocks::admin_api::TimingOutcome;

use crate::args::{Args, Flow};
use crate::check::LostWrites;
use crate::failovers::{Failover, NAMES};
use crate::load::Outcome;
use crate::schedule;
use crate::stats::{self, median, ModeStats, Row, Summary};

/// Everything the report is made of.
pub struct Results<'a> {
    pub args: &'a Args,
    pub load: &'a Outcome,
    pub failovers: &'a [Failover],
    /// Index of the final master (0 = A, 1 = B).
    pub master: usize,
    pub lost: &'a LostWrites,
    pub rows: &'a [Row],
    pub summary: &'a Summary,
}

impl Results<'_> {
    fn failed(&self) -> usize {
        self.failovers.iter().filter(|f| !f.ok()).count()
    }

    /// Correctness: every failover succeeded, no client error, no lost write,
    /// and the lost-write check could read every key.
    pub fn correct(&self) -> bool {
        self.failed() == 0
            && self.summary.errors == 0
            && self.lost.keys.is_empty()
            && self.lost.error.is_none()
    }

    /// The longest stall of any failover (∞ if a request got no reply).
    fn max_stall(&self) -> f64 {
        self.rows.iter().map(|r| r.max).fold(f64::NAN, f64::max)
    }

    /// The process's exit code: the stall goal is reported, not enforced;
    /// correctness is.
    pub fn exit_code(&self) -> i32 {
        if self.correct() {
            0
        } else {
            2
        }
    }
}

/// The whole markdown page.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    header(&mut md, r);
    table(&mut md, r);
    side_by_side(&mut md, r);
    medians(&mut md, r);
    totals(&mut md, r);
    problems(&mut md, r);
    footer(&mut md, r);
    md
}

fn header(md: &mut String, r: &Results) {
    let args = r.args;
    let _ = writeln!(md, "## leasegate failover benchmark ({})\n", utc_now());
    if !args.note.is_empty() {
        let _ = writeln!(md, "{}\n", args.note);
    }
    let elapsed_s = r.load.stop_us as f64 / 1e6;
    let clients = if args.follow_master {
        format!(
            "**Clients follow the master**: after each successful failover's window every connection drains and reconnects to the new master's proxy ({} moves).",
            r.load.moves
        )
    } else {
        "Clients stay connected to proxy A for the whole run (sessions move only by leasegate's hand-over).".to_string()
    };
    let _ = writeln!(
        md,
        "Nodes: {}. Load: open-loop SET of {} B values, {} requests/s target over {} connections to proxy A ({}), \
         unique keys; achieved {:.0} requests/s ({} sent, {} acknowledged, {} connects) over {:.1} s. {} \
         Failovers: {} alternating (A→B, B→A, …) with {}.",
        args.node_kind,
        args.value_size,
        args.rate,
        args.connections,
        args.proxy_a,
        r.load.recs.len() as f64 / elapsed_s,
        r.load.recs.len(),
        r.lost.acked,
        r.load.connects,
        elapsed_s,
        clients,
        r.failovers.len(),
        how(args),
    );
    let _ = writeln!(
        md,
        "\n- Schedule: **{}**, seed **{}** (repeat with `--seed {}`, `BENCH_SEED={}`).\n\
         - Promotion timing: **{}**.\n\
         - Rate {} SET/s, {} connections, {} B values; host: {} CPUs (`nproc`); leasegate `threads:` {}; \
         load generator threads {}.",
        schedule::describe(args),
        args.seed(),
        args.seed(),
        args.seed(),
        schedule::describe_timing(args),
        args.rate,
        args.connections,
        args.value_size,
        host_cpus(),
        if args.leasegate_threads == "default" {
            "default (not set: one session thread per CPU)".to_string()
        } else {
            args.leasegate_threads.clone()
        },
        args.threads,
    );
    legend(md, r);
}

/// The CPUs this process may run on (what `nproc` prints).
fn host_cpus() -> String {
    std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
}

/// How the failovers were asked for.
fn how(args: &Args) -> String {
    match args.flow {
        Flow::Leasegate => format!(
            "`POST /v1/failover` on the current master's leasegate (`sync_timeout_ms` {}, `pause_timeout_ms` {}, `lease_ttl_ms` {}){}",
            args.sync_timeout_ms,
            args.pause_timeout_ms,
            args.lease_ttl_ms,
            if args.controller_url.is_some() {
                "; in cluster mode it switches through the controller's shard failover"
            } else {
                ""
            }
        ),
        Flow::Controller => format!(
            "the controller's shard failover (`POST …/shards/{}/failover` with `preferred_node_id`, `wait_for_sync` true, \
             `sync_timeout_ms` {}, `pause_timeout_ms` {}, `poll_interval_ms` {}): the kvrocks-controller PR #389 flow, \
             `CLIENT PAUSE <ms> WRITE` to the master's leasegate, `INFO replication` of both nodes polled until the \
             replica's offset reaches the master's, roles swapped and the topology pushed (new master first), the new \
             master heartbeated, `CLIENT UNPAUSE` to the old master's leasegate",
            args.shard,
            args.sync_timeout_ms,
            args.pause_timeout_ms,
            args.controller_poll_ms,
        ),
        Flow::Upgrade => "no failover: each event is an in-place upgrade of A's leasegate \
             (`SIGUSR2` to the process its `/v1/status` names, over when `/v1/status` answers from a new process)"
            .to_string(),
    }
}

/// Whether a controller timed the node's promotion in any failover.
fn promotions(r: &Results) -> bool {
    r.failovers.iter().any(|f| f.promote_ms.is_some())
}

/// What the table's columns mean.
fn legend(md: &mut String, r: &Results) {
    let _ = writeln!(
        md,
        "\nPer failover: requests sent from {} ms before the POST to {} ms after it (at least 100 ms \
         past the reply) form the window; *longest stall* is the largest reply−send time of any request \
         in it (∞ if one got no reply), p99.9 / p99 are nearest-rank over it. *report stall* is {}. \
         *timing* is the request's `promotion_timing` (on / off; where the controller runs the failover, the leasegates' `pause.promotion_timing`), \
         *outcome* the report's `timing.outcome` (held: the promotion came at the tick the pause was timed for; \
         missed: a later one; unused: not timed, see the note in the steps below), *promotion* the report's \
         `promotion_ms` (the command that made the target master, send to answer; inside the stall), \
         *wait* the report's `timing.wait_ms` (waited before the pause: part of *took*, not of the stall). {}*errors* are error replies, \
         broken connections or missing replies, *lost* acknowledged keys missing on the final master ({}), \
         both counted from this failover's window start to the next one's. *gen lag* is the load \
         generator's largest delay behind its schedule in the window (latency is measured from the actual send). \
         Diagnostics: *max at switch* is the longest latency of requests sent from 5 ms before the pause start \
         (POST time + the report's pause_write step) to 20 ms after the release; *control max* the longest \
         latency in the steady period after this window up to the next one (no failover in it): the noise \
         floor of this host.\n",
        r.args.window_before_ms,
        r.args.window_after_ms,
        match r.args.flow {
            Flow::Leasegate => "the failover report's `stall_ms` (pause→release on the old master)",
            Flow::Controller => "the controller's `CLIENT PAUSE` → `CLIENT UNPAUSE` time",
            Flow::Upgrade => "none (an upgrade reports no stall of its own)",
        },
        if promotions(r) {
            "*ctl promote* is how long the controller's push of the new topology to the new master \
             (`CLUSTERX SETNODES`, which makes the node master) took, as the controller timed it. "
        } else {
            ""
        },
        NAMES[r.master]
    );
}

/// One row per failover, then the **all** row.
fn table(md: &mut String, r: &Results) {
    let promote = promotions(r);
    let (head, align) = if promote {
        (" ctl promote ms |", "---:|")
    } else {
        ("", "")
    };
    let _ = writeln!(md, "| # | failover | timing | result | took ms | wait ms | report stall ms | longest stall ms | promotion ms | outcome |{head} p99.9 ms | p99 ms | max at switch ms | control max ms | reqs in window | errors | lost | gen lag ms |");
    let _ = writeln!(
        md,
        "|---:|---|---|---|---:|---:|---:|---:|---:|---|{align}---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (f, row) in r.failovers.iter().zip(r.rows) {
        let promote_cell = if promote {
            format!(
                " {} |",
                f.promote_ms.map_or("-".into(), |p| format!("{p:.2}"))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {}→{} | {} | {} | {:.2} | {} | {} | {} | {} | {} |{} {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            f.n,
            f.from,
            f.to,
            f.mode(),
            f.result,
            f.took_ms(),
            fmt_opt(f.wait_ms),
            fmt_opt(f.stall_ms),
            fmt_stall(row.max),
            fmt_opt(f.promotion_ms),
            f.outcome.map_or("-", TimingOutcome::as_str),
            promote_cell,
            fmt_ms(row.p999),
            fmt_ms(row.p99),
            fmt_ms(row.at_switch),
            fmt_ms(row.control),
            row.n,
            row.errors,
            row.lost,
            row.lag
        );
    }
    let max_of = |v: &dyn Fn(&Row) -> f64| r.rows.iter().map(v).fold(f64::NAN, f64::max);
    let max_report = r
        .failovers
        .iter()
        .filter_map(|f| f.stall_ms)
        .fold(f64::NAN, f64::max);
    let max_promote = r
        .failovers
        .iter()
        .filter_map(|f| f.promote_ms)
        .fold(f64::NAN, f64::max);
    let max_of_failovers = |v: &dyn Fn(&Failover) -> Option<f64>| {
        r.failovers.iter().filter_map(v).fold(f64::NAN, f64::max)
    };
    let promote_cell = if promote {
        format!(" **{}** (max) |", fmt_ms(max_promote))
    } else {
        String::new()
    };
    let _ = writeln!(
        md,
        "| **all** | {} ok / {} | | | | **{}** (max) | **{}** (max) | **{}** (max) | **{}** (max) | |{} **{}** (max) | | **{}** (max) | **{}** (max) | | **{}** | **{}** | |",
        r.failovers.len() - r.failed(),
        r.failovers.len(),
        fmt_ms(max_of_failovers(&|f| f.wait_ms)),
        fmt_ms(max_report),
        fmt_stall(r.max_stall()),
        fmt_ms(max_of_failovers(&|f| f.promotion_ms)),
        promote_cell,
        fmt_ms(max_of(&|row| row.p999)),
        fmt_ms(max_of(&|row| row.at_switch)),
        fmt_ms(max_of(&|row| row.control)),
        r.summary.errors,
        r.lost.keys.len()
    );
}

/// The failovers with and without promotion timing, side by side.
fn side_by_side(md: &mut String, r: &Results) {
    let modes = stats::by_mode(r.failovers, r.rows);
    if modes.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nBy promotion timing, over every failover of each mode, failed ones included (stall: the longest stall \
         of each failover; p90 nearest-rank; promotion: {}; wait: before the pause):\n",
        if r.args.flow == Flow::Controller {
            "the controller's push to the new master"
        } else {
            "the report's `promotion_ms`"
        }
    );
    md.push_str(&side_by_side_table(&modes));
}

/// The side-by-side table of [`ModeStats`], one column each.
fn side_by_side_table(modes: &[ModeStats]) -> String {
    let mut t = String::from("| |");
    for m in modes {
        let _ = write!(t, " {} |", m.label());
    }
    t.push_str("\n|---|");
    t.push_str(&"---:|".repeat(modes.len()));
    t.push('\n');
    let mut line = |name: &str, cell: &dyn Fn(&ModeStats) -> String| {
        let _ = write!(t, "| {name} |");
        for m in modes {
            let _ = write!(t, " {} |", cell(m));
        }
        t.push('\n');
    };
    line("failovers", &|m| m.failovers.to_string());
    line("succeeded", &|m| m.succeeded.to_string());
    line("client errors", &|m| m.errors.to_string());
    line("lost writes", &|m| m.lost.to_string());
    line("stall median ms", &|m| fmt_stall(m.stall_median));
    line("stall p90 ms", &|m| fmt_stall(m.stall_p90));
    line("stall max ms", &|m| fmt_stall(m.stall_max));
    line("stalls ≤ 5 ms", &|m| {
        format!("{} / {}", m.within_5ms, m.failovers)
    });
    line("stalls ≤ 10 ms", &|m| {
        format!("{} / {}", m.within_10ms, m.failovers)
    });
    line("at the switch: stall median / max ms", &|m| {
        format!(
            "{} / {}",
            fmt_stall(m.switch_median),
            fmt_stall(m.switch_max)
        )
    });
    line("at the switch: ≤ 5 ms / ≤ 10 ms", &|m| {
        format!(
            "{} / {} of {}",
            m.switch_within_5ms, m.switch_within_10ms, m.failovers
        )
    });
    line("report stall median ms", &|m| fmt_ms(m.report_stall_median));
    line("promotion median ms", &|m| fmt_ms(m.promotion_median));
    line("promotion max ms", &|m| fmt_ms(m.promotion_max));
    line("held / missed / unused", &|m| {
        let mut c = format!("{} / {} / {}", m.held, m.missed, m.unused);
        if m.no_timing > 0 {
            let _ = write!(c, " (+{} no report)", m.no_timing);
        }
        c
    });
    line("wait median ms", &|m| fmt_ms(m.wait_median));
    line("wait max ms", &|m| fmt_ms(m.wait_max));
    t
}

/// Medians over the failovers (the README's numbers), and the share of
/// the node's promotion in the stall.
fn medians(md: &mut String, r: &Results) {
    let stalls: Vec<f64> = r.rows.iter().map(|row| row.max).collect();
    let p999: Vec<f64> = r.rows.iter().map(|row| row.p999).collect();
    let reports: Vec<f64> = r.failovers.iter().filter_map(|f| f.stall_ms).collect();
    let _ = write!(
        md,
        "\nOver the {} failovers: longest stall median **{}** ms, max **{}** ms; p99.9 median {} ms, max {} ms; \
         report stall median {} ms, max {} ms.",
        r.failovers.len(),
        fmt_stall(median(&stalls)),
        fmt_stall(r.max_stall()),
        fmt_ms(median(&p999)),
        fmt_ms(p999.iter().copied().fold(f64::NAN, f64::max)),
        fmt_ms(median(&reports)),
        fmt_ms(reports.iter().copied().fold(f64::NAN, f64::max)),
    );
    let promotes: Vec<f64> = r.failovers.iter().filter_map(|f| f.promote_ms).collect();
    if !promotes.is_empty() {
        // Per failover: the promotion's share of the report stall, and what
        // remains of the stall besides it.
        let (shares, rest): (Vec<f64>, Vec<f64>) = r
            .failovers
            .iter()
            .filter_map(|f| Some((f.promote_ms?, f.stall_ms?)))
            .filter(|(_, stall)| *stall > 0.0)
            .map(|(p, stall)| (100.0 * p / stall, stall - p))
            .unzip();
        let _ = write!(
            md,
            " The node's promotion (the controller's `SETNODES` push to the new master) took median **{}** ms, \
             max {} ms: median {:.0} % of the report stall; the rest of the stall (report stall − promotion) \
             median **{}** ms, max {} ms.",
            fmt_ms(median(&promotes)),
            fmt_ms(promotes.iter().copied().fold(f64::NAN, f64::max)),
            median(&shares),
            fmt_ms(median(&rest)),
            fmt_ms(rest.iter().copied().fold(f64::NAN, f64::max)),
        );
    }
    if r.args.flow == Flow::Leasegate {
        // The leasegate-run failover's own part: its pause→release less the
        // controller's handling of the shard failover inside it.
        let own: Vec<f64> = r
            .failovers
            .iter()
            .filter_map(|f| Some(f.stall_ms? - f.controller_ms?))
            .collect();
        if !own.is_empty() {
            let _ = write!(
                md,
                " The controller's shard failover (promotion, the other node's push, the heartbeat) took all but \
                 median **{}** ms (max {} ms) of the report stall: leasegate's own pause, wait for the replica, \
                 requests and release.",
                fmt_ms(median(&own)),
                fmt_ms(own.iter().copied().fold(f64::NAN, f64::max)),
            );
        }
    }
    // What clients waited beyond the pause: the held writes released at
    // once, and their sessions moving.
    let beyond: Vec<f64> = r
        .failovers
        .iter()
        .zip(r.rows)
        .filter(|(f, _)| f.ok())
        .filter_map(|(f, row)| Some(row.max - f.stall_ms?))
        .filter(|d| d.is_finite())
        .collect();
    if !beyond.is_empty() {
        let _ = write!(
            md,
            " Clients waited beyond the report stall (longest stall − report stall) median {} ms, max {} ms: \
             the writes held during the pause, released at once to the new master, and their sessions moving.",
            fmt_ms(median(&beyond)),
            fmt_ms(beyond.iter().copied().fold(f64::NAN, f64::max)),
        );
    }
    md.push('\n');
}

/// Whole-run latencies, final roles and the goal.
fn totals(md: &mut String, r: &Results) {
    let (all, steady) = (&r.summary.all, &r.summary.steady);
    let _ = writeln!(
        md,
        "\nWhole run: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms. Outside the failover windows: p50 {} ms, p99.9 {} ms, max {} ms.",
        fmt_ms(all.quantile_ms(0.5)),
        fmt_ms(all.quantile_ms(0.99)),
        fmt_ms(all.quantile_ms(0.999)),
        fmt_ms(all.max_ms()),
        fmt_ms(steady.quantile_ms(0.5)),
        fmt_ms(steady.quantile_ms(0.999)),
        fmt_ms(steady.max_ms()),
    );
    let args = r.args;
    let role = |i: usize| r.lost.roles[i].as_deref().unwrap_or("?").to_string();
    let _ = writeln!(
        md,
        "Final roles: A ({}) {}, B ({}) {}; the master at the end: {}. Lost-write check: {} acknowledged keys read back (STRLEN) from {}{}.",
        args.redis_a,
        role(0),
        args.redis_b,
        role(1),
        NAMES[r.master],
        r.lost.acked,
        [&args.redis_a, &args.redis_b][r.master],
        r.lost
            .error
            .as_deref()
            .map(|e| format!(" — CHECK INCOMPLETE: {e}"))
            .unwrap_or_default()
    );
    let goal_met = r.correct() && r.max_stall() <= args.goal_ms;
    let _ = writeln!(
        md,
        "\n**Goal** (every failover succeeds, 0 client errors, 0 lost writes, longest stall ≤ {} ms): **{}**.",
        args.goal_ms,
        if goal_met { "met" } else { "NOT met" }
    );
}

/// Failed failovers, client errors and lost keys, if any.
fn problems(md: &mut String, r: &Results) {
    if r.failed() > 0 {
        md.push_str("\nFailed failovers:\n\n");
        for f in r.failovers.iter().filter(|f| !f.ok()) {
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
    let errors = &r.load.errors_sample;
    if !errors.is_empty() {
        let _ = writeln!(
            md,
            "\nClient errors (first {} of {} recorded; t = s since the start):\n",
            errors.len().min(20),
            errors.len()
        );
        for (t, e) in errors.iter().take(20) {
            let _ = writeln!(md, "- t={:.3}: `{}`", *t as f64 / 1e6, e);
        }
    }
    let lost = &r.lost.keys;
    if !lost.is_empty() {
        let _ = writeln!(md, "\nLost keys (first 10 of {}):\n", lost.len());
        for (t, k) in lost.iter().take(10) {
            let _ = writeln!(md, "- `{k}` sent at t={:.3}s", *t as f64 / 1e6);
        }
    }
}

/// The plots' description and every failover's server-side steps.
fn footer(md: &mut String, r: &Results) {
    let _ = writeln!(
        md,
        "\nPlots: `{0}.svg` (top: the largest latency per 0.5 ms of send time relative to the pause start, every failover overlaid, {1}; bottom: every request of the worst failover), `{0}-timeline.svg` (max and p99 latency per 10 ms over the whole run).",
        r.args.name,
        if r.failovers.iter().any(|f| f.timing.is_some()) {
            "blue with promotion timing, red without"
        } else {
            "blue A→B, red B→A"
        }
    );
    md.push_str("\nServer-side steps (ms since the failover started):\n\n");
    for f in r.failovers {
        let _ = writeln!(
            md,
            "- #{} {}→{} (after {} ms of load, timing {}): {}{}",
            f.n,
            f.from,
            f.to,
            f.gap_ms,
            f.mode(),
            f.steps.trim(),
            f.timing_note
                .as_deref()
                .map(|t| format!("; timing: {t}"))
                .unwrap_or_default()
        );
    }
}

/// Writes `NAME.md` in the output directory (created if missing); its path.
pub fn write_markdown(args: &Args, md: &str) -> String {
    if let Err(e) = std::fs::create_dir_all(&args.out_dir) {
        eprintln!("cannot create {}: {e}", args.out_dir);
    }
    let path = format!("{}/{}.md", args.out_dir, args.name);
    if let Err(e) = std::fs::write(&path, md) {
        eprintln!("cannot write {path}: {e}");
    }
    path
}

/// `--raw`: `NAME-requests.csv` (every request) and `NAME-events.csv` (the failovers).
pub fn write_raw(r: &Results) {
    let mut csv = String::from("conn,seq,scheduled_us,sent_us,done_us,ok\n");
    for q in &r.load.recs {
        let done = if q.answered() {
            q.done.to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            q.conn,
            q.seq,
            q.scheduled,
            q.sent,
            done,
            u8::from(q.ok)
        );
    }
    let (dir, name) = (&r.args.out_dir, &r.args.name);
    let _ = std::fs::write(format!("{dir}/{name}-requests.csv"), csv);
    let mut ev =
        String::from("n,from,to,timing,gap_ms,result,posted_us,replied_us,pause_at_ms,stall_ms,promote_ms,promotion_ms,outcome,wait_ms\n");
    for f in r.failovers {
        let _ = writeln!(
            ev,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            f.n,
            f.from,
            f.to,
            f.mode(),
            f.gap_ms,
            f.result,
            f.posted,
            f.replied,
            f.pause_at_ms.map_or(String::new(), |v| v.to_string()),
            f.stall_ms.map_or(String::new(), |v| v.to_string()),
            f.promote_ms.map_or(String::new(), |v| v.to_string()),
            f.promotion_ms.map_or(String::new(), |v| v.to_string()),
            f.outcome.map_or("", TimingOutcome::as_str),
            f.wait_ms.map_or(String::new(), |v| v.to_string())
        );
    }
    let _ = std::fs::write(format!("{dir}/{name}-events.csv"), ev);
}

/// A latency in ms with 2 decimals; "-" for NaN (nothing measured).
fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.2}")
    }
}

/// An optional time in ms with 2 decimals; "-" for none.
fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), fmt_ms)
}

/// Like [`fmt_ms`], with "∞" for a request that got no reply.
fn fmt_stall(v: f64) -> String {
    if v.is_infinite() {
        "∞".into()
    } else {
        fmt_ms(v)
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{by_mode, Row};

    #[test]
    fn side_by_side_table_has_a_column_per_mode() {
        let row = |max| Row {
            max,
            p999: max,
            p99: max,
            n: 10,
            errors: 0,
            lost: 0,
            lag: 0.0,
            at_switch: max,
            control: 1.0,
        };
        let mut with = Failover::new(1, 0, 1, Some(true));
        with.result = "success".into();
        with.promotion_ms = Some(3.0);
        with.outcome = Some(TimingOutcome::Held);
        with.wait_ms = Some(42.0);
        let mut without = Failover::new(2, 1, 0, Some(false));
        without.result = "success".into();
        without.promotion_ms = Some(80.0);
        let t = side_by_side_table(&by_mode(&[with, without], &[row(4.5), row(85.0)]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| | with promotion timing | without |");
        assert_eq!(lines[1], "|---|---:|---:|");
        assert!(lines.contains(&"| stall median ms | 4.50 | 85.00 |"), "{t}");
        assert!(lines.contains(&"| stalls ≤ 5 ms | 1 / 1 | 0 / 1 |"), "{t}");
        assert!(
            lines.contains(&"| promotion max ms | 3.00 | 80.00 |"),
            "{t}"
        );
        assert!(
            lines.contains(&"| held / missed / unused | 1 / 0 / 0 | 0 / 0 / 0 (+1 no report) |"),
            "{t}"
        );
        assert!(lines.contains(&"| wait median ms | 42.00 | - |"), "{t}");
    }
}
