//! A controller for the benchmarks: the integration tests' controller
//! (`tests/support/controller.rs`, the kvrocks-controller HTTP API shape) run
//! as a standalone process, so tests and benchmarks share one fake.
//!
//! It serves, with HTTP/1.1 keep-alive and a thread per connection:
//!
//! - `GET /api/v1/namespaces/{namespace}/clusters/{cluster}`: a one-shard
//!   cluster (version `--version`) whose only node is `--node-id` at
//!   `--node-addr`, role master, after sleeping `--delay-ms` (the artificial
//!   controller round trip);
//! - `GET /count`: the number of cluster (topology) answers served so far, as
//!   plain text (not delayed);
//! - anything else: 404 with the controller's error shape `{"error":{"message":...}}`.
//!
//! `bench/verify.sh` builds and starts it:
//!
//! ```text
//! cargo build --release --example fake_controller
//! target/release/examples/fake_controller --port 7070 --node-id <40 hex> --delay-ms 1
//! ```
//!
//! It runs until killed.

#[allow(dead_code)] // the tests use more of it than this process does
#[path = "../tests/support/controller.rs"]
mod controller;

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "fake kvrocks controller for the leasegate benchmarks")]
struct Args {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Id of the cluster's only node (the master).
    #[arg(long)]
    node_id: String,
    /// That node's address in the topology.
    #[arg(long, default_value = "127.0.0.1:1")]
    node_addr: String,
    /// The topology's version.
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// Namespace of the cluster path.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Cluster name in the path and the answer.
    #[arg(long, default_value = "bench")]
    cluster: String,
    /// Delay before each topology answer, ms (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    delay_ms: f64,
}

fn main() {
    let args = Args::parse();
    let addr = format!("{}:{}", args.host, args.port);
    let ctl = controller::TestController::start_on(&addr, &args.namespace, &args.cluster)
        .unwrap_or_else(|e| {
            eprintln!("fake controller: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
    ctl.set_keep_requests(false);
    ctl.set_topology(
        args.version,
        vec![vec![(
            args.node_id.as_str(),
            args.node_addr.as_str(),
            "master",
        )]],
    );
    ctl.set_delay(Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0));
    eprintln!(
        "fake controller on {}, node {}, delay {} ms",
        ctl.url(),
        args.node_id,
        args.delay_ms
    );
    loop {
        std::thread::park();
    }
}
