//! Command-line options of the failover benchmark.
//!
//! Kept apart from `main.rs` so every module can take `&Args` without
//! depending on the driver; the flags and their defaults are what
//! `bench/failover.sh` passes and what `--help` documents.

use clap::{Parser, ValueEnum};

/// When each failover starts after the previous one's reply.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Exactly `--interval-ms` after the previous reply (the first failover
    /// exactly `--warmup-ms` after the load's start): every failover lands
    /// at the same phase of a Kvrocks replica's 100 ms replication tick.
    Fixed,
    /// `--interval-ms` plus a uniform random 0..=`--phase-jitter-ms` (the
    /// first failover: `--warmup-ms` plus one), drawn from a PRNG seeded
    /// with `--seed`: failovers land at random phases, repeatably.
    Random,
}

/// Whether the failovers ask leasegate to time the pause to the target's
/// promotion (`promotion_timing` of `POST /v1/failover`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingMode {
    /// Every failover with promotion timing.
    On,
    /// Every failover without (pause at once: the behaviour before it).
    Off,
    /// Failovers 1–2 with, 3–4 without, 5–6 with, …: both modes under the
    /// same load, each in both directions.
    Alternate,
}

/// Who runs each failover.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// `POST /v1/failover` on the current master's leasegate (in cluster
    /// mode it goes through the controller's shard failover).
    Leasegate,
    /// The controller's shard failover with `wait_for_sync` (the
    /// kvrocks-controller PR #389 flow: `CLIENT PAUSE`, offsets, switch,
    /// `CLIENT UNPAUSE`), preferring B, then A, …
    Controller,
    /// No failover: A's leasegate is upgraded in place (`SIGUSR2` to the
    /// process its `/v1/status` names), each "failover" one upgrade; it
    /// ends when `/v1/status` answers from a new process.
    Upgrade,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "leasegate failover benchmark")]
pub struct Args {
    /// Client address of proxy A (the leasegate of the initial master).
    #[arg(long)]
    pub proxy_a: String,
    /// Client address of proxy B (the leasegate of the initial replica).
    #[arg(long)]
    pub proxy_b: String,
    /// Admin API address of proxy A.
    #[arg(long)]
    pub admin_a: String,
    /// Admin API address of proxy B.
    #[arg(long)]
    pub admin_b: String,
    /// Node (redis-server) behind proxy A, read directly for the lost-write check.
    #[arg(long)]
    pub redis_a: String,
    /// Node (redis-server) behind proxy B.
    #[arg(long)]
    pub redis_b: String,
    /// Sent as `AUTH <password>` first on every connection: the clients'
    /// to the proxies and the lost-write check's to the nodes (nodes with
    /// `requirepass`). Empty: no AUTH.
    #[arg(long, default_value = "")]
    pub password: String,
    /// Admin bearer token (same for both proxies).
    #[arg(long, default_value = "")]
    pub token: String,
    /// Node ids (printed in the report; with `--flow controller`, the
    /// `preferred_node_id` of each failover).
    #[arg(long, default_value = "")]
    pub node_a: String,
    #[arg(long, default_value = "")]
    pub node_b: String,
    /// Who runs the failovers.
    #[arg(long, value_enum, default_value_t = Flow::Leasegate)]
    pub flow: Flow,
    /// The controller, `http://host:port`: `--flow controller` calls its
    /// shard failover; with either flow its `GET /last-failover` (the fake
    /// controller's) gives each failover's node promotion time.
    #[arg(long)]
    pub controller_url: Option<String>,
    /// Namespace, cluster and shard index of the controller's shard failover.
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    #[arg(long, default_value = "bench")]
    pub cluster: String,
    #[arg(long, default_value_t = 0)]
    pub shard: usize,
    /// `poll_interval_ms` of the controller's wait for sync (PR #389 polls every 10 ms).
    #[arg(long, default_value_t = 1)]
    pub controller_poll_ms: u64,
    /// What the nodes are, for the report's text.
    #[arg(long, default_value = "redis-server")]
    pub node_kind: String,
    /// Failovers to run (A→B, B→A, …).
    #[arg(long, default_value_t = 20)]
    pub failovers: usize,
    /// Total SET rate, requests/s.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Client connections (all to proxy A).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 2048)]
    pub value_size: usize,
    /// Steady load before the first failover, ms.
    #[arg(long, default_value_t = 2000)]
    pub warmup_ms: u64,
    /// Steady load between failovers (after one's reply, before the next), ms.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// How the waits before the failovers are chosen.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Random)]
    pub schedule: ScheduleKind,
    /// `--schedule random`: the random extra wait, uniform in 0..=this ms,
    /// added to each `--interval-ms` (and to `--warmup-ms` before the first
    /// failover) so the failovers start at random moments against the
    /// clients' schedule, the leasegates' and controller's timers and the
    /// replica's replication tick. `--interval-jitter-ms` is its old name;
    /// 0 makes the random schedule the fixed one.
    #[arg(long, visible_alias = "interval-jitter-ms", default_value_t = 1000)]
    pub phase_jitter_ms: u64,
    /// Seed of the random schedule's PRNG (splitmix64). Default: from the
    /// clock; the seed used is printed at the start and in the report, so a
    /// run can be repeated with it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// `promotion_timing` of each `POST /v1/failover` (`--flow leasegate`);
    /// with `--flow controller`, the leasegates' `pause.promotion_timing`,
    /// set before each failover in `--config-a`/`--config-b` and reloaded
    /// (without those files: n/a).
    #[arg(long, value_enum, default_value_t = TimingMode::Alternate)]
    pub timing: TimingMode,
    /// Config files of proxy A and B (`--flow controller`: their
    /// `pause.promotion_timing` is set per failover, see `--timing`).
    #[arg(long)]
    pub config_a: Option<std::path::PathBuf>,
    #[arg(long)]
    pub config_b: Option<std::path::PathBuf>,
    /// Steady load after the last failover, ms.
    #[arg(long, default_value_t = 1000)]
    pub tail_ms: u64,
    /// The window around a failover whose requests count for its stall:
    /// sent from `window_before_ms` before the POST to `window_after_ms` after.
    #[arg(long, default_value_t = 50)]
    pub window_before_ms: u64,
    #[arg(long, default_value_t = 500)]
    pub window_after_ms: u64,
    /// `sync_timeout_ms` and `pause_timeout_ms` of the failover request.
    #[arg(long, default_value_t = 100)]
    pub sync_timeout_ms: u64,
    #[arg(long, default_value_t = 500)]
    pub pause_timeout_ms: u64,
    /// Lease TTL granted to each new master (long: no controller renews it here).
    #[arg(long, default_value_t = 600_000)]
    pub lease_ttl_ms: u64,
    /// After each successful failover (once its measuring window is over), every client
    /// drains its connection and reconnects to the new master's proxy, as a client that
    /// follows topology changes would. Default: clients stay on proxy A for the whole run
    /// and rely on leasegate's session hand-over alone.
    #[arg(long, default_value_t = false)]
    pub follow_master: bool,
    /// Stop failing over after the first failed failover (else go on with the same roles).
    #[arg(long, default_value_t = false)]
    pub stop_on_failure: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The leasegates' `threads:` setting, for the report's header (the
    /// script's; "default": not set, one session thread per CPU).
    #[arg(long, default_value = "default")]
    pub leasegate_threads: String,
    /// Goal for the longest stall, ms (reported as met / not met).
    #[arg(long, default_value_t = 5.0)]
    pub goal_ms: f64,
    /// Output files' name stem: NAME.md, NAME.svg, NAME-timeline.svg (and with --raw
    /// NAME-requests.csv, NAME-events.csv).
    #[arg(long, default_value = "failover")]
    pub name: String,
    /// Output directory.
    #[arg(long, default_value = "bench/out")]
    pub out_dir: String,
    /// Also write every request (conn, seq, scheduled, sent, done µs since the start, ok) to
    /// `failover-requests.csv` and the failovers to `failover-events.csv` in the output directory.
    #[arg(long, default_value_t = false)]
    pub raw: bool,
    /// Extra text (host description) put under the report's title.
    #[arg(long, default_value = "")]
    pub note: String,
}

impl Args {
    /// The PRNG seed of this run (`--seed`, or the one `main` drew from
    /// the clock before the run).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIRED: [&str; 13] = [
        "failover_bench",
        "--proxy-a",
        "a:1",
        "--proxy-b",
        "b:1",
        "--admin-a",
        "a:2",
        "--admin-b",
        "b:2",
        "--redis-a",
        "a:3",
        "--redis-b",
        "b:3",
    ];

    #[test]
    fn defaults_are_a_random_schedule_and_alternate_timing() {
        let a = Args::try_parse_from(REQUIRED).expect("parses");
        assert_eq!(a.schedule, ScheduleKind::Random);
        assert_eq!(a.phase_jitter_ms, 1000);
        assert_eq!(a.timing, TimingMode::Alternate);
        assert_eq!((a.seed, a.leasegate_threads.as_str()), (None, "default"));
    }

    #[test]
    fn the_old_jitter_flag_sets_the_phase_jitter() {
        let more = [
            "--interval-jitter-ms",
            "0",
            "--seed",
            "18446744073709551615",
        ];
        let a = Args::try_parse_from(REQUIRED.iter().chain(&more)).expect("parses");
        assert_eq!(a.phase_jitter_ms, 0);
        assert_eq!(a.seed(), u64::MAX);
        let more = ["--schedule", "fixed", "--timing", "off"];
        let a = Args::try_parse_from(REQUIRED.iter().chain(&more)).expect("parses");
        assert_eq!(
            (a.schedule, a.timing),
            (ScheduleKind::Fixed, TimingMode::Off)
        );
    }
}
