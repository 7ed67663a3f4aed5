//! The real kvrocks-controller's automatic failover after a real network
//! partition, checked by the history checker.
//!
//! Deployed as operators deploy it (`docs/kvrocks-controller.md`): the real
//! kvrocks-controller 1.2.0 (`support::kvctl`, ping every 1 s, 3 failed
//! pings fail a master over) in the test's own namespace, the controller's
//! side; two hosts in network namespaces of their own (`support::netns`, as
//! `tests/partition.rs` places its hosts), each running Kvrocks in cluster
//! mode with `requirepass`/`masterauth` and its leasegate (`backend.password`
//! and `control.password` the node password, leases by polling the
//! controller every 100 ms, `ttl_ms` 1500, `failure_detection_ms` 3000). The
//! controller knows the nodes by their leasegates' addresses on the hosts'
//! links to its namespace; the hosts reach each other's such address over a
//! direct link of their own (B's Kvrocks replicates from A's leasegate over
//! it).
//!
//! Host A runs the master and two clients of its own (threads inside A's
//! namespace, on A's loopback). The fault: A's link to the controller goes
//! down, then (once A's lease has run out, before the controller can have
//! promoted B) A's link to B: A's host is cut off from the controller and
//! from the replica, while its own clients still reach it. The controller's
//! probes of A fail, it promotes B and pushes the topology to B; B's
//! clients (on the controller's side) write through B's leasegate. Every
//! write is recorded in the history; at the end every key is read from B,
//! the final master, and `History::check` looks for split-brain writes
//! (acknowledged through A after the controller promoted B) and lost writes
//! (acknowledged, but not on B).
//!
//! * `lease.mode: block-write`: A stops acknowledging when its lease runs
//!   out, `ttl_ms` after its last poll, seconds before the promotion: no
//!   split-brain write, none lost.
//! * `lease.mode: disabled`: A goes on acknowledging what B will never have:
//!   the checker finds split-brain and lost writes (the check can fail).
//!
//! A's link to B is cut after its link to the controller, not with it:
//! Kvrocks replicates asynchronously, so cutting both at once would lose
//! the writes A acknowledged in the last milliseconds before the cut, lease
//! or not (no proxy can keep those; `WAIT` can). The replica link goes
//! down 1.8 s after the controller link, once B has replicated everything
//! A's node had applied then: after A's lease has ended (1.5 s after its
//! last poll at the latest), before the controller's third failed ping
//! (2 s at the earliest; about 10 s here, each probe of the silent A
//! waiting 3 s for its answer).
//!
//! Needs root (network namespaces), the Kvrocks binary and the controller
//! binary; says SKIPPED without them. `LEASEGATE_TEST_LOG=info` prints both
//! leasegates' logs at the end.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::history::signed_ms;
use support::history::{read_back_auth, Clients, History, Op, Outcome, Verdict};
use support::kvctl::RealController;
use support::kvrocks::{link_up, sequence, takes_writes};
use support::netns::{client_auth_at, wait_accepting, wait_kvrocks, Host, Lab, Link};
use support::Client;

const PASSWORD: &str = "node-secret";
/// Kvrocks' port on each host.
const NODE_PORT: u16 = 6666;
/// leasegate's port on each host: what the controller, the clients and the
/// replica use.
const PROXY_PORT: u16 = 7000;
/// Bounds no slow machine reaches.
const PATIENCE: Duration = Duration::from_secs(30);
/// From the cut of A's link to the controller to the cut of its link to B
/// (module doc).
const REPLICA_CUT_AFTER: Duration = Duration::from_millis(1800);

/// The controller, the two hosts and what runs on them.
struct Shard {
    // Dropped first: the processes on the hosts, then the namespaces.
    _lab: Lab,
    controller: RealController,
    a: Host,
    b: Host,
    /// A's direct link to B (replication).
    a_b: Link,
    b_id: String,
    logs: Vec<(&'static str, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Drop for Shard {
    fn drop(&mut self) {
        let wanted = std::env::var_os("LEASEGATE_TEST_LOG").is_some();
        if !(wanted || std::thread::panicking()) {
            return;
        }
        if wanted {
            // (On a panic, the controller's own drop prints its tail.)
            eprintln!(
                "--- kvctl-server log (tail) ---\n{}",
                self.controller.log_tail()
            );
        }
        for (name, path) in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let shown = if wanted {
                0
            } else {
                lines.len().saturating_sub(40)
            };
            eprintln!("--- {name}'s leasegate log ---");
            for line in &lines[shown..] {
                eprintln!("{name}: {line}");
            }
        }
    }
}

/// The leasegate of a host whose controller is at `controller_url`.
fn leasegate_yaml(mode: &str, controller: &RealController, controller_url: &str) -> String {
    format!(
        "listen: 0.0.0.0:{PROXY_PORT}\nbackend:\n  addr: 127.0.0.1:{NODE_PORT}\n  password: {PASSWORD}\ncontrol:\n  password: {PASSWORD}\nadmin:\n  listen: \"\"\nlease:\n  mode: {mode}\n  probe_interval_ms: 200\n  safety_margin_ms: 100\nlog:\n  level: '{}'\n{}",
        std::env::var("LEASEGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        controller.yaml_via(controller_url, 100, 1500)
    )
}

/// A client of `addr` (reachable from the calling thread's namespace),
/// authenticated with the node password.
fn client(addr: &str) -> Client {
    client_auth_at(addr, PASSWORD)
}

/// The controller, hosts A and B with Kvrocks and leasegate (in `mode`),
/// registered at the controller (A master); returns once a write through
/// A's leasegate succeeds and B's replication link is up. `None` where the
/// binaries or network namespaces are missing.
fn shard(mode: &str) -> Option<Shard> {
    let kvrocks = support::kvrocks::binary_or_skip()?;
    let controller = RealController::start_bound([0, 0, 0, 0])?;
    let mut lab = Lab::new()?;
    let a = lab.host("a");
    let b = lab.host("b");
    let a_b = lab.routed_link(&a, &b);
    // The cut host stays silent: nothing the controller sends A leaves the
    // machine by the default route.
    lab.unreachable_when_cut(&a);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut logs = Vec::new();
    for (name, host) in [("A", &a), ("B", &b)] {
        let data = dir.path().join(format!("kvrocks-{name}"));
        std::fs::create_dir(&data).expect("kvrocks dir");
        let data = data.display().to_string();
        let port = NODE_PORT.to_string();
        lab.spawn(
            host,
            &kvrocks.display().to_string(),
            &[
                "--bind",
                "0.0.0.0",
                "--port",
                &port,
                "--dir",
                &data,
                "--daemonize",
                "no",
                "--cluster-enabled",
                "yes",
                "--requirepass",
                PASSWORD,
                "--masterauth",
                PASSWORD,
            ],
        );
        let url = format!("http://{}:{}", host.peer_ip, controller.port);
        let config = dir.path().join(format!("leasegate-{name}.yaml"));
        std::fs::write(&config, leasegate_yaml(mode, &controller, &url)).expect("write config");
        let log = dir.path().join(format!("leasegate-{name}.log"));
        let config = config.display().to_string();
        lab.spawn_logged(
            host,
            env!("CARGO_BIN_EXE_leasegate"),
            &["run", "-c", &config],
            Some(&log),
        );
        logs.push((name, log));
    }
    for host in [&a, &b] {
        wait_kvrocks(&format!("{}:{NODE_PORT}", host.ip));
        wait_accepting(&proxy_addr(host));
    }
    let registered = Instant::now();
    controller.create_cluster(&[proxy_addr(&a), proxy_addr(&b)], Some(PASSWORD));
    let cluster = controller.cluster();
    let b_id = cluster["shards"][0]["nodes"][1]["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no id for B: {cluster}"));
    assert_eq!(cluster["shards"][0]["nodes"][1]["addr"], proxy_addr(&b));
    let shard = Shard {
        _lab: lab,
        controller,
        a,
        b,
        a_b,
        b_id,
        logs,
        _dir: dir,
    };
    assert_ne!(shard.controller.master_of(0).0, shard.b_id, "{cluster}");
    takes_writes(
        &mut client(&proxy_addr(&shard.a)),
        registered,
        PATIENCE,
        "A never got its lease from the real controller",
    );
    let writable = registered.elapsed();
    link_up(&mut client(&format!("{}:{NODE_PORT}", shard.b.ip)));
    eprintln!(
        "shard: A writable {writable:?}, B linked {:?} after registration",
        registered.elapsed()
    );
    Some(shard)
}

fn proxy_addr(host: &Host) -> String {
    format!("{}:{PROXY_PORT}", host.ip)
}

/// Watches the controller's store (every 20 ms) until it names `b_id`
/// master; the instant it is first seen there is returned with the start
/// of the last look that still saw the old master (the promotion happened
/// between the two).
struct Watch {
    seen: Arc<Mutex<Option<(Instant, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(controller_port: u16, b_id: String) -> Watch {
        let seen = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let path = format!(
                "/api/v1/namespaces/{}/clusters/{}",
                support::controller::NAMESPACE,
                support::controller::CLUSTER
            );
            let mut last_old = Instant::now();
            while !st.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let (_, body) = support::http(controller_port, "GET", &path, None, None);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let master = v["data"]["cluster"]["shards"][0]["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|n| n["role"] == "master")
                    .and_then(|n| n["id"].as_str().map(str::to_string));
                match master {
                    Some(id) if id == b_id => {
                        *s.lock().expect("watch") = Some((last_old, asked));
                        return;
                    }
                    Some(_) => last_old = asked,
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `(last look at the old master, first look at B)`, waiting up to
    /// `within`.
    fn wait(mut self, within: Duration) -> Option<(Instant, Instant)> {
        let start = Instant::now();
        while self.seen.lock().expect("watch").is_none() && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = *self.seen.lock().expect("watch");
        seen
    }
}

/// What one run saw.
struct Run {
    verdict: Verdict,
    ops: Vec<Op>,
    cut: Instant,
    promoted: Instant,
}

impl Run {
    /// Acknowledged writes through `node`, and those of them acknowledged
    /// after the promotion.
    fn acked(&self, node: &str) -> (usize, usize) {
        let ok: Vec<&Op> = self
            .ops
            .iter()
            .filter(|o| o.node == node && o.outcome == Outcome::Ok)
            .collect();
        let after = ok.iter().filter(|o| o.completed > self.promoted).count();
        (ok.len(), after)
    }

    /// The last acknowledgement through `node`, in ms after the cut.
    fn last_ack_after_cut(&self, node: &str) -> Option<i128> {
        self.ops
            .iter()
            .filter(|o| o.node == node && o.outcome == Outcome::Ok)
            .map(|o| o.completed)
            .max()
            .map(|t| signed_ms(self.cut, t))
    }
}

/// Reads A's node's replication sequence (from inside A's host), then
/// waits (up to 5 s) until B's node has replicated that far; returns both.
fn catch_up(s: &Shard) -> (u64, u64) {
    let a = s.a.clone();
    let applied = std::thread::spawn(move || {
        a.enter();
        let mut c = client(&format!("127.0.0.1:{NODE_PORT}"));
        sequence(&mut c, "master_repl_offset")
    })
    .join()
    .expect("read A's sequence");
    let mut direct_b = client(&format!("{}:{NODE_PORT}", s.b.ip));
    let start = Instant::now();
    loop {
        let replicated = sequence(&mut direct_b, "slave_repl_offset");
        if replicated >= applied || start.elapsed() > Duration::from_secs(5) {
            return (applied, replicated);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn partition(mode: &str) -> Option<Run> {
    let started = Instant::now();
    let s = shard(mode)?;
    let history = History::new();
    let a_clients = Clients::start_authenticated(
        &history,
        "A",
        format!("127.0.0.1:{PROXY_PORT}"),
        Some(&s.a),
        2,
        Some(PASSWORD),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let version = s.controller.version();
    let watch = Watch::start(s.controller.port, s.b_id.clone());

    let cut = Instant::now();
    s.a.cut();
    std::thread::sleep(REPLICA_CUT_AFTER.saturating_sub(cut.elapsed()));
    // Everything A's node had applied by now reaches B before the cut.
    let (applied, replicated) = catch_up(&s);
    let replica_cut = Instant::now();
    s.a_b.cut();

    let (last_old, first_new) = watch.wait(PATIENCE).unwrap_or_else(|| {
        panic!(
            "the controller did not promote B within {PATIENCE:?} of the cut\n{}",
            s.controller.log_tail()
        )
    });
    // The promotion happened after the last look that still saw A master:
    // the strictest instant for the split-brain check.
    history.promoted("B", last_old);
    assert!(s.controller.version() > version);
    eprintln!(
        "{mode}: controller link cut at 0 ms, replica link at {} ms (B at sequence {replicated}, A's node at {applied} {} ms after the cut), promotion of B between {} and {} ms",
        signed_ms(cut, replica_cut),
        REPLICA_CUT_AFTER.as_millis(),
        signed_ms(cut, last_old),
        signed_ms(cut, first_new),
    );

    let b_clients =
        Clients::start_authenticated(&history, "B", proxy_addr(&s.b), None, 2, Some(PASSWORD));
    // Until B has taken writes for a second (its leasegate grants the lease
    // once its node is at the controller's new topology).
    let start = Instant::now();
    let mut b_writable = None;
    loop {
        let first_ok = history
            .ops()
            .iter()
            .filter(|o| o.node == "B" && o.outcome == Outcome::Ok)
            .map(|o| o.completed)
            .min();
        if let Some(t) = first_ok {
            b_writable.get_or_insert(t);
            if t.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "B's leasegate never acknowledged a write after the promotion\n{}",
            s.controller.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut keys = a_clients.finish();
    keys.extend(b_clients.finish());
    let final_data = read_back_auth(&format!("{}:{NODE_PORT}", s.b.ip), keys, Some(PASSWORD));
    let verdict = history.check(&final_data);
    let run = Run {
        verdict,
        ops: history.ops(),
        cut,
        promoted: last_old,
    };
    let ((a_ok, a_after), (b_ok, _)) = (run.acked("A"), run.acked("B"));
    let not_ok = |node: &str| {
        run.ops
            .iter()
            .filter(|o| o.node == node && o.outcome != Outcome::Ok)
            .count()
    };
    eprintln!(
        "{mode}: acknowledged through A {a_ok} ({a_after} after the promotion; the last {} ms after the cut), through B {b_ok} (the first {} ms after the cut); not acknowledged: A {}, B {}; split-brain {}, lost {}; {:.1} s in all",
        run.last_ack_after_cut("A").unwrap_or(i128::MIN),
        b_writable.map_or(i128::MIN, |t| signed_ms(cut, t)),
        not_ok("A"),
        not_ok("B"),
        run.verdict.split_brain.len(),
        run.verdict.lost.len(),
        started.elapsed().as_secs_f64()
    );
    for node in ["A", "B"] {
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        for op in run.ops.iter().filter(|o| o.node == node) {
            let text = match &op.outcome {
                Outcome::Ok => continue,
                Outcome::Error(e) => format!("error {e}"),
                Outcome::Unknown(e) => format!("unknown {e}"),
            };
            *seen.entry(text).or_default() += 1;
        }
        for (text, n) in seen {
            eprintln!("{mode}: {n} writes through {node} answered: {text}");
        }
    }
    eprintln!("{}", run.verdict.report);
    assert!(a_ok > 0, "A acknowledged writes before the cut");
    assert!(b_ok > 0, "B acknowledged writes after the promotion");
    assert_eq!(s.controller.master_of(0).0, s.b_id);
    drop(s);
    Some(run)
}

#[test]
fn cut_off_from_the_controller_the_master_acknowledges_nothing_the_new_master_lacks() {
    let Some(run) = partition("block-write") else {
        return;
    };
    run.verdict.assert_clean();
    let (_, after) = run.acked("A");
    assert_eq!(after, 0, "{}", run.verdict.report);
}

#[test]
fn without_the_lease_the_same_partition_loses_acknowledged_writes() {
    let Some(run) = partition("disabled") else {
        return;
    };
    assert!(
        !run.verdict.lost.is_empty(),
        "expected lost acknowledged writes with the lease disabled\n{}",
        run.verdict.report
    );
    assert!(
        !run.verdict.split_brain.is_empty(),
        "expected split-brain writes with the lease disabled\n{}",
        run.verdict.report
    );
}
