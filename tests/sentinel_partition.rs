//! Redis Sentinel under a real network partition, checked by the history
//! checker.
//!
//! Two network namespaces (`support::netns`):
//! - host A runs the master (redis-server or the real Kvrocks, + leasegate);
//! - host B runs its replica (the same kind of node + leasegate),
//!   replicating from A's leasegate over a direct A–B link.
//!
//! Three real Sentinels (quorum 2, down-after 2 s) run in the test's own
//! namespace and monitor A's leasegate. Each leasegate takes its lease from
//! them. A's clients run inside A; B's run on the test's side.
//!
//! The fault cuts A off from the Sentinels (and from B), or kills A's node
//! (`SIGKILL`, its leasegate and every link staying up), while A's own
//! clients keep writing to it. The Sentinels find A down and promote B,
//! and B's clients write. The instant of B's promotion is taken as the last
//! moment B was still seen a replica (polled every 5 ms), which can only be
//! early. Afterwards every written key is read back from B, and
//! `History::check` looks for split-brain writes (acknowledged by A after B
//! was promoted) and lost writes.

mod support;

use std::time::{Duration, Instant};

use support::history::{read_back, Clients, History, Op, Outcome, Verdict};
use support::netns::{wait_accepting, Host, Lab};
use support::node::Kind;
use support::sentinel::{eventually, Monitor, Sentinel};
use support::{Client, Reply};

const NODE_PORT: u16 = 6379;
const PROXY_PORT: u16 = 7000;
const NAME: &str = "m";

/// The leasegate beside each node. `pause.on_demote: readonly`: the checker
/// attributes a write to the leasegate its client used, so a demoted A must
/// refuse writes rather than hand them to B (where they would be B's, and
/// look like A's split-brain writes).
fn leasegate_yaml(host: &Host, mode: &str, durable: bool, sentinels: &[String]) -> String {
    let durability = if durable {
        "durability:\n  min_replicas: 1\n  timeout_ms: 500\n"
    } else {
        ""
    };
    format!(
        "listen: 0.0.0.0:{PROXY_PORT}\nbackend:\n  addr: 127.0.0.1:{NODE_PORT}\nadmin:\n  listen: \"\"\n\
         pause:\n  on_demote: readonly\n\
         control:\n  password: ctl-secret\nlease:\n  mode: {mode}\n  probe_interval_ms: 100\n  safety_margin_ms: 100\n\
         sentinel:\n  addrs: [{}]\n  master_name: {NAME}\n  address: {}:{PROXY_PORT}\n  poll_interval_ms: 100\n  timeout_ms: 300\n\
         {durability}log:\n  level: warn\n",
        sentinels.join(", "),
        host.ip
    )
}

fn client(addr: &str) -> Client {
    Client::from_stream(std::net::TcpStream::connect(addr).expect("connect"))
}

/// Whether the node at `addr` answers `PING` (Kvrocks listens before its
/// RocksDB is open, and answers only then).
fn answers_ping(addr: &str) -> bool {
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let mut c = Client::from_stream(stream);
    let reply = c
        .try_send(&["PING"])
        .and_then(|()| c.read_within(Duration::from_secs(2)));
    matches!(reply, Ok(Some(Reply::Status(s))) if s == "PONG")
}

/// The fault: which links it takes down, or the crash of A's node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A's link to the Sentinels' side only: A still reaches B.
    Sentinels,
    /// A's links to the Sentinels and to B: A reaches only its own clients.
    SentinelsAndReplica,
    /// No link: A's node process is killed (`SIGKILL`). A's leasegate
    /// stays up, reachable by everyone, with no node behind it.
    Crash,
}

/// Kills the process `pid` with `SIGKILL`: a crash, nothing flushed or
/// closed in order.
fn crash(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) only sends a signal. `pid` is a child of this
    // process that has not been waited for (the lab waits for it when it
    // drops), so it cannot have been reused.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// Runs the partition on `kind` nodes with the leasegates' `lease.mode`
/// `mode` (and, when `durable`, `durability.min_replicas: 1`); `None` where
/// namespaces cannot be made here, or Kvrocks is asked for and not here.
fn partition(kind: Kind, mode: &str, cut: Cut, durable: bool) -> Option<Verdict> {
    let kvrocks = match kind {
        Kind::Redis => None,
        Kind::Kvrocks => Some(support::kvrocks::binary_or_skip()?),
    };
    let mut lab = Lab::new()?;
    let a = lab.host("a");
    let b = lab.host("b");
    lab.unreachable_when_cut(&a);
    let ab = lab.routed_link(&a, &b);
    let dir = tempfile::tempdir().expect("temp dir");

    let mut monitor = Monitor::new(NAME, &format!("{}:{PROXY_PORT}", a.ip), 2);
    monitor.bind = "0.0.0.0".into();
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(&monitor)).collect();

    let port = NODE_PORT.to_string();
    let redis = [
        "--port",
        &port,
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    // Each node's process (`ip netns exec` execs the program: its pid).
    let mut node_pids = Vec::new();
    for host in [&a, &b] {
        let pid = match &kvrocks {
            None => lab.spawn(host, "redis-server", &redis),
            Some(bin) => {
                // Each Kvrocks has a data directory of its own.
                let data = dir.path().join(format!("{}-kvrocks", host.ns));
                std::fs::create_dir(&data).expect("Kvrocks' data directory");
                let data = data.display().to_string();
                let args = [
                    "--bind",
                    "0.0.0.0",
                    "--port",
                    &port,
                    "--dir",
                    &data,
                    "--daemonize",
                    "no",
                    "--cluster-enabled",
                    "no",
                ];
                lab.spawn(host, &bin.display().to_string(), &args)
            }
        };
        node_pids.push(pid);
        // Each host reaches the Sentinels at its link's test-side address.
        let addrs: Vec<String> = sentinels
            .iter()
            .map(|s| format!("{}:{}", host.peer_ip, s.port))
            .collect();
        let path = dir.path().join(format!("{}.yaml", host.ns));
        std::fs::write(&path, leasegate_yaml(host, mode, durable, &addrs)).expect("write config");
        let path = path.display().to_string();
        lab.spawn(host, env!("CARGO_BIN_EXE_leasegate"), &["run", "-c", &path]);
    }
    for host in [&a, &b] {
        let node = format!("{}:{NODE_PORT}", host.ip);
        wait_accepting(&node);
        eventually("the node answers", Duration::from_secs(30), || {
            answers_ping(&node)
        });
        wait_accepting(&format!("{}:{PROXY_PORT}", host.ip));
    }
    // B's node announces B's leasegate (its IP, then its port: both are
    // waited for) before it links to A's.
    let b_node = format!("{}:{NODE_PORT}", b.ip);
    let proxy_port = PROXY_PORT.to_string();
    eventually(
        "B's node announces B's leasegate",
        Duration::from_secs(5),
        || {
            [
                ("replica-announce-ip", b.ip.as_str()),
                ("replica-announce-port", &proxy_port),
            ]
            .iter()
            .all(|(name, value)| {
                client(&b_node).cmd(&["CONFIG", "GET", name])
                    == Reply::Array(vec![Reply::bulk(name), Reply::bulk(value)])
            })
        },
    );
    let a_port = PROXY_PORT.to_string();
    // Kvrocks takes `SLAVEOF` in every build (`REPLICAOF` only since 2025).
    let replicaof = match kind {
        Kind::Redis => "REPLICAOF",
        Kind::Kvrocks => "SLAVEOF",
    };
    assert_eq!(
        client(&b_node).cmd(&[replicaof, &a.ip, &a_port]),
        Reply::ok()
    );
    eventually("B links to A's leasegate", Duration::from_secs(30), || {
        client(&b_node)
            .cmd(&["INFO", "replication"])
            .text()
            .contains("master_link_status:up")
    });
    let b_proxy = format!("{}:{PROXY_PORT}", b.ip);
    eventually(
        "the Sentinels know each other and list B by its leasegate",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                s.other_sentinels(NAME) == 2
                    && s.replicas(NAME)
                        .iter()
                        .any(|(n, f)| *n == b_proxy && f == "slave")
            })
        },
    );

    // A's leasegate holds the Sentinels' lease (and, with replica
    // acknowledgements, B confirms its writes) before the clients start.
    let a_proxy = format!("{}:{PROXY_PORT}", a.ip);
    eventually("A acknowledges a write", Duration::from_secs(30), || {
        client(&a_proxy).cmd(&["SET", "probe", "1"]) == Reply::ok()
    });
    let history = History::new();
    let origin = Instant::now();
    let a_clients = Clients::start(
        &history,
        "A",
        format!("127.0.0.1:{PROXY_PORT}"),
        Some(&a),
        2,
    );
    // With replica acknowledgements writes are slower (and on Kvrocks a
    // `WAIT` sometimes takes its whole timeout): a longer start, so that
    // writes are acknowledged before the fault on a loaded host too.
    std::thread::sleep(Duration::from_millis(if durable { 2000 } else { 800 }));

    // A is cut off from the Sentinels (and from B), or its node crashes;
    // its own clients go on.
    let cut_at = Instant::now();
    match cut {
        Cut::Sentinels => a.cut(),
        Cut::SentinelsAndReplica => {
            a.cut();
            ab.cut();
        }
        Cut::Crash => {
            crash(node_pids[0]);
            // The node itself is gone (not only `ip netns exec`): its port
            // refuses connections.
            let a_node = format!("{}:{NODE_PORT}", a.ip);
            eventually("A's node is gone", Duration::from_secs(5), || {
                std::net::TcpStream::connect(&a_node).is_err()
            });
        }
    }
    let promoted = last_seen_replica(&b_node, Duration::from_secs(30));
    history.promoted("B", promoted);
    let b_clients = Clients::start(&history, "B", b_proxy, None, 1);
    std::thread::sleep(Duration::from_millis(1_500));
    let mut keys = a_clients.finish();
    keys.extend(b_clients.finish());
    let final_data = read_back(&b_node, keys);
    let verdict = history.check(&final_data);
    eprintln!("{}", verdict.report);
    eprintln!(
        "cut at {:.1} ms; B seen a replica last at {:.1} ms",
        since(origin, cut_at),
        since(origin, promoted)
    );
    for node in ["A", "B"] {
        eprintln!("{}", by_node(&history.ops(), node, origin, cut_at));
    }
    drop(sentinels);
    Some(verdict)
}

/// Milliseconds from `origin` to `t`.
fn since(origin: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(origin).as_secs_f64() * 1000.0
}

/// One line on the writes through `node`: how many ended each way (`ok`
/// also after the cut, with the last one's answer and the median time to
/// an answer), and the first error and unknown outcome's text.
fn by_node(ops: &[Op], node: &str, origin: Instant, cut_at: Instant) -> String {
    let ops: Vec<&Op> = ops.iter().filter(|o| o.node == node).collect();
    let ok: Vec<&&Op> = ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    let after_cut = ok.iter().filter(|o| o.completed > cut_at).count();
    let mut answers: Vec<f64> = ok
        .iter()
        .map(|o| (o.completed - o.invoked).as_secs_f64() * 1000.0)
        .collect();
    answers.sort_by(f64::total_cmp);
    let median = answers
        .get(answers.len() / 2)
        .map_or("-".into(), |t| format!("{t:.2} ms"));
    let last_ok = ok
        .iter()
        .map(|o| since(origin, o.completed))
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let first = |error: bool| {
        ops.iter()
            .find_map(|o| match &o.outcome {
                Outcome::Error(e) if error => {
                    Some(format!("{e} at {:.1} ms", since(origin, o.completed)))
                }
                Outcome::Unknown(e) if !error => {
                    Some(format!("{e} at {:.1} ms", since(origin, o.completed)))
                }
                _ => None,
            })
            .unwrap_or_else(|| "-".into())
    };
    let count = |error: bool| {
        ops.iter()
            .filter(|o| match o.outcome {
                Outcome::Error(_) => error,
                Outcome::Unknown(_) => !error,
                Outcome::Ok => false,
            })
            .count()
    };
    format!(
        "{node}: {} ok ({after_cut} answered after the cut, the last at {}; median answer {median}), {} error (first: {}), {} unknown (first: {})",
        ok.len(),
        last_ok.map_or("-".into(), |t| format!("{t:.1} ms")),
        count(true),
        first(true),
        count(false),
        first(false)
    )
}

/// Polls the node at `addr` every 5 ms until it reports itself master;
/// the last instant it was still seen a replica (its promotion came after).
fn last_seen_replica(addr: &str, within: Duration) -> Instant {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        let seen = Instant::now();
        // The promotion's CLIENT KILL TYPE normal may cut a question short:
        // that answer is just missing, and the next one comes 5 ms later.
        let mut c = client(addr);
        let info = c
            .try_send(&["INFO", "replication"])
            .and_then(|()| c.read_within(support::PATIENCE));
        match info {
            Ok(Some(reply)) if reply.text().contains("role:master") => return last,
            Ok(Some(_)) => last = seen,
            _ => {}
        }
        assert!(
            start.elapsed() < within,
            "the Sentinels did not promote B within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A cut off from the Sentinels, still linked to B: B's leasegate fences A
/// through that link before B is promoted, and A's held writes go to B.
#[test]
fn a_master_cut_off_from_the_sentinels_acknowledges_nothing_after_the_promotion() {
    let Some(v) = partition(Kind::Redis, "block-write", Cut::Sentinels, false) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    v.assert_clean();
}

/// A cut off from the Sentinels and from B: its lease ends before B can be
/// promoted, so nothing it acknowledges comes after the promotion. What it
/// acknowledged between the cut and the end of its lease never reached B:
/// asynchronous replication loses it, with or without leasegate (the
/// lease bounds the window, it cannot close it).
#[test]
fn a_master_cut_off_from_everyone_takes_no_split_brain_write() {
    cut_off_from_everyone_takes_no_split_brain_write(Kind::Redis);
}

/// [`a_master_cut_off_from_everyone_takes_no_split_brain_write`] on Kvrocks.
#[test]
fn kvrocks_master_cut_off_from_everyone_takes_no_split_brain_write() {
    cut_off_from_everyone_takes_no_split_brain_write(Kind::Kvrocks);
}

fn cut_off_from_everyone_takes_no_split_brain_write(kind: Kind) {
    let Some(v) = partition(kind, "block-write", Cut::SentinelsAndReplica, false) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    assert!(v.split_brain.is_empty(), "{}", v.report);
    assert!(
        v.late.is_empty() && v.applied_refused.is_empty(),
        "{}",
        v.report
    );
    eprintln!(
        "acknowledged by A after the cut, lost with asynchronous replication: {}",
        v.lost.len()
    );
}

/// The same partition with `durability.min_replicas: 1`: A acknowledges a
/// write only once B has it (`WAIT`), so what A's clients saw acknowledged
/// after the cut is nothing, and nothing acknowledged is lost; the writes
/// A applied alone are answered as of unknown outcome.
#[test]
fn with_replica_acknowledgements_a_master_cut_off_from_everyone_loses_nothing() {
    let Some(v) = partition(Kind::Redis, "block-write", Cut::SentinelsAndReplica, true) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    assert!(
        v.unknown > 0,
        "A's writes after the cut were not confirmed:\n{}",
        v.report
    );
    v.assert_clean();
}

/// [`with_replica_acknowledgements_a_master_cut_off_from_everyone_loses_nothing`]
/// on Kvrocks (the 2025 build has `WAIT`). Kvrocks' `WAIT 1 500` now and
/// then answers 0 after its whole timeout although its replica is linked
/// and has the write (seen on Kvrocks alone, without leasegate): such
/// writes, before the cut too, are answered as of unknown outcome, and
/// A's clients stall for 500 ms each time, so fewer writes are made.
#[test]
fn kvrocks_with_replica_acknowledgements_cut_off_master_loses_nothing() {
    let Some(v) = partition(Kind::Kvrocks, "block-write", Cut::SentinelsAndReplica, true) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    v.assert_clean();
}

/// The second partition without the lease (`lease.mode: disabled`; B's
/// leasegate cannot reach A to fence it either): A's own clients keep
/// writing to it after B's promotion, and those writes are split-brain (the
/// check can fail).
#[test]
fn without_the_lease_the_cut_off_master_takes_split_brain_writes() {
    without_the_lease_takes_split_brain_writes(Kind::Redis);
}

/// [`without_the_lease_the_cut_off_master_takes_split_brain_writes`] on
/// Kvrocks (the check can fail).
#[test]
fn kvrocks_without_the_lease_the_cut_off_master_takes_split_brain_writes() {
    without_the_lease_takes_split_brain_writes(Kind::Kvrocks);
}

fn without_the_lease_takes_split_brain_writes(kind: Kind) {
    let Some(v) = partition(kind, "disabled", Cut::SentinelsAndReplica, false) else {
        return;
    };
    assert!(
        !v.split_brain.is_empty(),
        "expected split-brain writes without the lease:\n{}",
        v.report
    );
}

/// A's node killed (`SIGKILL`) with `durability.min_replicas: 1`: A's
/// leasegate acknowledged a write only once B had it, so B, promoted,
/// holds every acknowledged write; the writes in flight at the crash end
/// as of unknown outcome (the connection closes) and the later ones are
/// refused (no node behind A's leasegate): neither is an acknowledgement.
#[test]
fn a_crashed_master_with_replica_acknowledgements_loses_nothing() {
    crashed_master_with_replica_acknowledgements_loses_nothing(Kind::Redis);
}

/// [`a_crashed_master_with_replica_acknowledgements_loses_nothing`] on
/// Kvrocks. Kvrocks' `WAIT` misses (see
/// [`kvrocks_with_replica_acknowledgements_cut_off_master_loses_nothing`])
/// leave few writes acknowledged before the crash. B's Kvrocks, asking A's
/// leasegate for `_db_name` after the crash, gets `-ERR backend ...
/// unavailable` and retries only 10 s later, sleeping in its replication
/// thread: the Sentinels' `SLAVEOF NO ONE` waits for that thread, so B is
/// promoted up to 10 s late (the watcher's `INFO` waits too; the instant
/// it takes, B's last answer as a replica, stays early).
#[test]
fn a_crashed_kvrocks_master_with_replica_acknowledgements_loses_nothing() {
    crashed_master_with_replica_acknowledgements_loses_nothing(Kind::Kvrocks);
}

fn crashed_master_with_replica_acknowledgements_loses_nothing(kind: Kind) {
    let Some(v) = partition(kind, "block-write", Cut::Crash, true) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    v.assert_clean();
}

/// A's node killed without replica acknowledgements: nothing A
/// acknowledged comes after B's promotion (A has no node then), but what A
/// acknowledged in the last moments before the crash may not have reached
/// B: asynchronous replication loses it (counted, not asserted).
#[test]
fn a_crashed_master_without_replica_acknowledgements_takes_no_split_brain_write() {
    let Some(v) = partition(Kind::Redis, "block-write", Cut::Crash, false) else {
        return;
    };
    assert!(v.ok > 0, "writes were acknowledged");
    assert!(v.split_brain.is_empty(), "{}", v.report);
    assert!(
        v.late.is_empty() && v.applied_refused.is_empty(),
        "{}",
        v.report
    );
    eprintln!(
        "acknowledged by A before the crash, lost with asynchronous replication: {}",
        v.lost.len()
    );
}
