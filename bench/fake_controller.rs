//! A controller for the benchmarks: the integration tests' controller
//! (`tests/support/controller.rs`, the kvrocks-controller HTTP API shape) run
//! as a standalone process, so tests and benchmarks share one fake.
//!
//! It serves, with HTTP/1.1 keep-alive and a thread per connection:
//!
//! - `GET /api/v1/namespaces/{namespace}/clusters/{cluster}`: a one-shard
//!   cluster (version `--version`), after sleeping `--delay-ms` (the
//!   artificial controller round trip). Its nodes: `--node ID=ADDR`, repeated
//!   (the first is the master, the others its replicas), or else the single
//!   master `--node-id` at `--node-addr`;
//! - `POST /api/v1/namespaces/{namespace}/clusters/{cluster}/shards/0/failover`
//!   with `{"preferred_node_id": ...}`: the shard failover (roles swapped,
//!   version + 1, the topology pushed to every node, the new master
//!   heartbeated with `--lease-heartbeat-ms`); with `"wait_for_sync": true`
//!   the failover of kvrocks-controller PR #389 around it (`CLIENT PAUSE`,
//!   offsets polled, `CLIENT UNPAUSE`). The answer's `data.timing` says when
//!   each step happened and how long the node's promotion took (`promote_ms`);
//! - `GET /last-failover`: the last failover's timing (not delayed);
//! - `GET /count`: the number of cluster (topology) answers served so far, as
//!   plain text (not delayed);
//! - anything else: 404 with the controller's error shape `{"error":{"message":...}}`.
//!
//! With `--push` it drives the nodes over RESP at their addresses (their
//! leasegates' addresses, as kvrocks-controller registers them) at start:
//! `CLUSTERX SETNODEID` and `CLUSTERX SETNODES` to each node, retried until
//! every node accepts (they may still be starting). With
//! `--lease-heartbeat-ms N` it then heartbeats (`CLUSTERX HEARTBEAT <master>
//! N <version>`) every node naming the shard's master, at once and every N/3
//! ms, and the new master after each failover. It prints `ready` on stderr
//! once the push and the first heartbeat were accepted.
//!
//! `bench/verify.sh` starts one with a single node:
//!
//! ```text
//! cargo build --release --example fake_controller
//! target/release/examples/fake_controller --port 7070 --node-id <40 hex> --delay-ms 1
//! ```
//!
//! `bench/failover.sh` (`BENCH_NODE=kvrocks`) a two-node shard:
//!
//! ```text
//! target/release/examples/fake_controller --port 7070 --delay-ms 0 \
//!   --node <A id>=127.0.0.1:7001 --node <B id>=127.0.0.1:7002 --push --lease-heartbeat-ms 3000
//! ```
//!
//! `--extra-shards N` adds N shards of a master and two replicas that nothing
//! runs (ids and addresses of no real node), so that the answer is as large
//! as a bigger cluster's.
//!
//! It runs until killed.

#[allow(dead_code)] // the tests use more of it than this process does
#[path = "../tests/support/controller.rs"]
mod controller;

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A node of the shard as `ID=ADDR` (repeat it; the first is the master,
    /// the others its replicas). Replaces `--node-id` / `--node-addr`.
    #[arg(long = "node", value_name = "ID=ADDR")]
    nodes: Vec<String>,
    /// Id of the cluster's only node (the master), without `--node`.
    #[arg(long)]
    node_id: Option<String>,
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
    /// Delay before each answer (topology, failover), ms (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    delay_ms: f64,
    /// At start, send every node `CLUSTERX SETNODEID` and the topology
    /// (`CLUSTERX SETNODES`), retrying for up to a minute.
    #[arg(long, default_value_t = false)]
    push: bool,
    /// Lease heartbeats of this TTL: every node, naming the master, at start
    /// and every N/3 ms; the new master after a failover. 0: none.
    #[arg(long, default_value_t = 0)]
    lease_heartbeat_ms: u64,
    /// Other shards after the first, of a master and two replicas each that
    /// nothing runs: a larger cluster's answer to read (`bench/verify.sh`).
    #[arg(long, default_value_t = 0)]
    extra_shards: usize,
}

fn main() {
    let args = Args::parse();
    let nodes = shard(&args).unwrap_or_else(|e| fail(&e));
    let addr = format!("{}:{}", args.host, args.port);
    let ctl = controller::TestController::start_on(&addr, &args.namespace, &args.cluster)
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    ctl.set_keep_requests(false);
    let shard: Vec<(&str, &str, &str)> = nodes
        .iter()
        .enumerate()
        .map(|(i, (id, addr))| {
            let role = if i == 0 { "master" } else { "slave" };
            (id.as_str(), addr.as_str(), role)
        })
        .collect();
    let others = other_shards(args.extra_shards);
    let mut shards = vec![shard];
    shards.extend(others.iter().map(|nodes| {
        nodes
            .iter()
            .map(|(id, addr, role)| (id.as_str(), addr.as_str(), *role))
            .collect()
    }));
    ctl.set_topology(args.version, shards);
    ctl.set_delay(Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0));
    let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
    eprintln!(
        "fake controller on {}, nodes {}, delay {} ms",
        ctl.url(),
        ids.join(" "),
        args.delay_ms
    );
    if args.push {
        retry("push the topology", || {
            ctl.push_node_ids()?;
            ctl.push()
        });
    }
    let ttl = args.lease_heartbeat_ms;
    if ttl > 0 {
        ctl.set_lease_heartbeat(Some(ttl));
        retry("heartbeat the master", || ctl.heartbeat_masters(ttl));
    }
    let ctl = Arc::new(ctl);
    if ttl > 0 {
        let ctl = Arc::clone(&ctl);
        std::thread::spawn(move || heartbeat_forever(&ctl, ttl));
    }
    eprintln!("fake controller: ready");
    loop {
        std::thread::park();
    }
}

/// `count` shards of a master and two replicas, `(id, addr, role)`, with
/// ids and addresses no real node has.
fn other_shards(count: usize) -> Vec<Vec<(String, String, &'static str)>> {
    (0..count)
        .map(|s| {
            (0..3)
                .map(|n| {
                    let role = if n == 0 { "master" } else { "slave" };
                    (
                        format!("{:020}{:020}", s + 1, n),
                        format!("192.0.2.{}:{}", n + 1, 7000 + s),
                        role,
                    )
                })
                .collect()
        })
        .collect()
}

/// The shard's nodes `(id, addr)`, the master first.
fn shard(args: &Args) -> Result<Vec<(String, String)>, String> {
    if args.nodes.is_empty() {
        let id = args
            .node_id
            .clone()
            .ok_or("give --node-id or --node ID=ADDR")?;
        return Ok(vec![(id, args.node_addr.clone())]);
    }
    args.nodes
        .iter()
        .map(|n| {
            n.split_once('=')
                .filter(|(id, addr)| !id.is_empty() && !addr.is_empty())
                .map(|(id, addr)| (id.to_string(), addr.to_string()))
                .ok_or_else(|| format!("--node {n}: expected ID=ADDR"))
        })
        .collect()
}

/// Runs `what` until it succeeds (a minute at most, then exits).
fn retry(what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                fail(&format!("cannot {what}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Heartbeats every `ttl / 3` ms; a failure is printed when it differs from
/// the last one (a heartbeat naming a master that a leasegate-run failover
/// has just fenced is refused until the controller's switch).
fn heartbeat_forever(ctl: &controller::TestController, ttl: u64) {
    let every = Duration::from_millis((ttl / 3).max(1));
    let mut last_error: Option<String> = None;
    loop {
        std::thread::sleep(every);
        let result = ctl.heartbeat_masters(ttl).err();
        if result != last_error {
            match &result {
                Some(e) => eprintln!("fake controller: heartbeat: {e}"),
                None => eprintln!("fake controller: heartbeats accepted again"),
            }
            last_error = result;
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("fake controller: {message}");
    std::process::exit(1);
}
