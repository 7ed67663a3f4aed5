//! Failover benchmark (driven by bench/failover.sh).
//!
//! An open-loop load generator writes `--rate` SETs/s of `--value-size`-byte
//! values over `--connections` connections to proxy A (the first master's
//! leasegate) while the master role is moved A→B, B→A, … `--failovers` times
//! with `POST /v1/failover` on the current master's admin API, at the
//! moments `--schedule` draws (a fixed wait, or a seeded random one) and
//! with or without leasegate's promotion timing (`--timing`, by default
//! alternating so both modes run under the same load). Every request
//! records its send time, reply time and outcome. Per failover it reports the
//! longest write latency (the stall a client saw) and p99.9 of the requests
//! sent around the switch, client errors and lost writes (every acknowledged
//! key is read back from the final master's node), and writes a
//! latency-over-time plot around the switches.
//!
//! The parts: [`load`] (the clients), [`failovers`] (the admin API calls),
//! [`schedule`] (when the failovers start, with or without promotion
//! timing), [`check`] (the lost-write check on the nodes), [`stats`] (latency
//! quantiles with `hdrhistogram`), [`report`] (markdown, CSV, verdict) and
//! [`plot`] (SVG); [`resp`] wraps `redis-protocol` for the wire.
//!
//! Run it through `bench/failover.sh`; by hand:
//!
//! ```text
//! cargo run --release --example failover_bench -- \
//!   --proxy-a 127.0.0.1:7001 --proxy-b 127.0.0.1:7002 \
//!   --admin-a 127.0.0.1:8001 --admin-b 127.0.0.1:8002 \
//!   --redis-a 127.0.0.1:6379 --redis-b 127.0.0.1:6380 --token tk
//! ```

mod args;
mod check;
mod failovers;
mod load;
mod plot;
mod report;
mod resp;
mod schedule;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use args::Args;

fn main() {
    let mut args = Args::parse();
    let seed = *args.seed.get_or_insert_with(schedule::clock_seed);
    eprintln!(
        "[failover_bench] seed {seed} (repeat with --seed {seed}); schedule {}, promotion timing {}",
        format!("{:?}", args.schedule).to_lowercase(),
        schedule::describe_timing(&args)
    );
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

/// Load, warm-up, failovers, drain; then the lost-write check, the report
/// and the plots. Returns the exit code (2 if anything was incorrect).
async fn run(args: Args) -> i32 {
    let args = Arc::new(args);
    let load = load::Load::start(&args);
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let (failovers, master) = failovers::run(&args, load.shared()).await;
    let outcome = load.finish().await;
    // Read back from the node that is master now: a failed failover may
    // have left it elsewhere than the run expected (a cluster replica
    // answers every read with -MOVED, which read as all writes lost).
    let master = check::actual_master(&args, master, Duration::from_secs(3)).await;
    let lost = check::lost_writes(&args, &outcome.recs, master).await;
    let rows = stats::rows(
        &args,
        &outcome.recs,
        &failovers,
        &lost.keys,
        outcome.stop_us,
    );
    let summary = stats::summary(&args, &outcome.recs, &failovers);
    let results = report::Results {
        args: &args,
        load: &outcome,
        failovers: &failovers,
        master,
        lost: &lost,
        rows: &rows,
        summary: &summary,
    };
    write_outputs(&results);
    results.exit_code()
}

/// Prints the report and writes it, the plots and (`--raw`) the CSV files.
fn write_outputs(r: &report::Results) {
    let (args, recs) = (r.args, &r.load.recs);
    let md = report::markdown(r);
    print!("{md}");
    let md_path = report::write_markdown(args, &md);
    if let Err(e) = plot::switches(args, recs, r.failovers, worst(r.rows)) {
        eprintln!("plot failed: {e}");
    }
    if args.raw {
        report::write_raw(r);
    }
    if let Err(e) = plot::timeline(args, recs, r.failovers) {
        eprintln!("timeline plot failed: {e}");
    }
    eprintln!(
        "[failover_bench] written {md_path}, {1}/{0}.svg, {1}/{0}-timeline.svg",
        args.name, args.out_dir
    );
}

/// The failover with the longest stall (its index), if any measured one.
fn worst(rows: &[stats::Row]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.max.is_nan())
        .max_by(|a, b| a.1.max.total_cmp(&b.1.max))
        .map(|(i, _)| i)
}
