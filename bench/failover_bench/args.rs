//! Command-line options of the failover benchmark.
//!
//! Kept apart from `main.rs` so every module can take `&Args` without
//! depending on the driver; the flags and their defaults are what
//! `bench/failover.sh` passes and what `--help` documents.

use clap::{Parser, ValueEnum};

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
    /// A random extra wait, uniform in 0..=this, added to each
    /// `--interval-ms` so the failovers start at random moments (against the
    /// clients' schedule and the leasegates' and controller's timers).
    #[arg(long, default_value_t = 0)]
    pub interval_jitter_ms: u64,
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
