//! A real cluster client through the leasegates under the REAL
//! kvrocks-controller (1.2.0): redis-py's `RedisCluster` in front of a
//! Kvrocks shard in cluster mode with a node password, registered by its
//! leasegates' addresses, as operators deploy it (`docs/kvrocks-controller.md`).
//!
//! The client is seeded with A's leasegate and the node password (it sends
//! `AUTH <password>` on every connection it opens: the password is also
//! each leasegate's `control.password`, so the `AUTH` goes to the node and
//! is replayed when a session is handed over). It writes distinct keys
//! without a pause while `leasegate failover` moves the master to B and
//! back. Whatever `pause.on_demote` says, the client sees no error and every
//! write it was told succeeded is on the final master:
//!
//! * `forward` (the default): the held writes, and the sessions, move to
//!   the new master's leasegate; the client goes on over its connections.
//! * `moved`: the held writes are answered `-MOVED <slot> <new master's
//!   leasegate>`, which `RedisCluster` follows on its own.
//!
//! redis-py is a Python package (Debian: `python3-redis`); without it the
//! test says SKIPPED, unless `CI` is set, where it fails. Without the
//! controller or Kvrocks binary it says SKIPPED too (`support::kvctl`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use support::kvctl::{real_shard, RealShard, RealShardOptions};
use support::kvrocks::{handovers, info_field, Node};
use support::{Reply, PATIENCE};

const PASSWORD: &str = "node-secret";

/// The client: writes `k<i> = v<i>` for i = 0, 1, ... through a
/// `RedisCluster` seeded with one leasegate's address, authenticating with
/// the password given. It prints `ready` once it has had `READY` writes
/// acknowledged, counts as "after the failovers" the writes it starts after
/// a line (or the end) of its standard input, and stops once `AFTER` of
/// those were acknowledged (or after 100 errors, or at its own safety
/// deadline). It then writes its summary as JSON and prints `done`.
///
/// Errors are only those that surface from `RedisCluster` (it retries and
/// follows redirections internally, as configured by default); redirections
/// and internal retries are counted for the report.
const CLIENT: &str = r#"
import json, logging, sys, threading, time

import redis
import redis.exceptions
from redis.cluster import RedisCluster

port, out_path = int(sys.argv[1]), sys.argv[2]
READY, AFTER, DEADLINE = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
password = sys.argv[6]

# Every -MOVED the client receives (it follows them itself).
moved = []
_moved_init = redis.exceptions.MovedError.__init__
def _counting_moved_init(self, resp, *args, **kwargs):
    moved.append(str(resp))
    _moved_init(self, resp, *args, **kwargs)
redis.exceptions.MovedError.__init__ = _counting_moved_init

# What RedisCluster logs as it retries internally (by exception type).
class Retried(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = {}
    def emit(self, record):
        what = record.getMessage().split(":")[0]
        self.seen[what] = self.seen.get(what, 0) + 1
retried = Retried()
redis_log = logging.getLogger("redis")
redis_log.addHandler(retried)
redis_log.propagate = False
redis_log.setLevel(logging.ERROR)

failed_over = threading.Event()
def watch_stdin():
    sys.stdin.readline()  # the failovers are done (or the test is gone)
    failed_over.set()
threading.Thread(target=watch_stdin, daemon=True).start()

# Kvrocks answers HELLO 3 with RESP2 unless `resp3-enabled yes`; redis-py 8
# speaks RESP3 by default and refuses that, so ask for RESP2 where redis-py
# has the option (5.0 on).
options = {"protocol": 2} if int(redis.__version__.split(".")[0]) >= 5 else {}
rc = RedisCluster(host="127.0.0.1", port=port, password=password, **options)
acked, after, errors = [], [], []
ready = False
start = time.monotonic()
i = 0
while len(after) < AFTER and time.monotonic() - start < DEADLINE:
    key, value = f"k{i}", f"v{i}"
    i += 1
    late = failed_over.is_set()
    try:
        reply = rc.set(key, value)
    except Exception as e:
        errors.append(f"{key}: {type(e).__name__}: {e}")
        if len(errors) >= 100:
            break
        continue
    if reply is not True:
        errors.append(f"{key}: unexpected reply {reply!r}")
        continue
    acked.append(key)
    if late:
        after.append(key)
    if not ready and len(acked) >= READY:
        print("ready", flush=True)
        ready = True

owner = rc.get_node_from_key(acked[-1]) if acked else None
summary = {
    "redis_py": redis.__version__,
    "known": [n.name for n in rc.get_nodes()],
    "acked": acked,
    "after": after,
    "errors": errors,
    "moved": moved,
    "retried": retried.seen,
    "owner_of_last": owner.name if owner else None,
}
rc.close()
with open(out_path, "w") as f:
    json.dump(summary, f)
print("done", flush=True)
"#;

/// Writes acknowledged before the first failover starts.
const READY: usize = 200;
/// Writes acknowledged after the failover back, before the client stops.
const AFTER: usize = 500;

/// A Python interpreter that has redis-py with `redis.cluster` (≥ 4.1):
/// `$LEASEGATE_PYTHON`, `python3` on the PATH, or Debian's own (as
/// `tests/cluster_client.rs` finds it).
fn python_with_redis_cluster() -> Option<String> {
    let candidates = [
        std::env::var("LEASEGATE_PYTHON").ok(),
        Some("python3".to_string()),
        Some("/usr/bin/python3".to_string()),
    ];
    let found = candidates.into_iter().flatten().find(|py| {
        Command::new(py)
            .args(["-c", "import redis.cluster"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-py with redis.cluster (>= 4.1) is required in CI but no python3 imports it \
             (apt-get install python3-redis, or set LEASEGATE_PYTHON)"
        );
        eprintln!(
            "SKIPPED: no python3 with redis-py's redis.cluster (apt-get install python3-redis)"
        );
    }
    found
}

/// The client process, killed on drop; its stdout lines come on a channel.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    out_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ClientProcess {
    fn start(python: &str, port: u16, password: &str) -> ClientProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("cluster_client.py");
        std::fs::write(&script, CLIENT).expect("write the client script");
        let out_path = dir.path().join("summary.json");
        // Two failovers with the settling between them: generous.
        let deadline = (PATIENCE * 6).as_secs().to_string();
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&out_path)
            .args([&READY.to_string(), &AFTER.to_string(), &deadline])
            .arg(password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python client");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProcess {
            stdin: child.stdin.take(),
            child,
            lines,
            out_path,
            _dir: dir,
        }
    }

    /// Waits for the line `want`; panics if the client ends or says nothing.
    fn expect_line(&self, want: &str, wait: Duration) {
        let start = Instant::now();
        loop {
            let left = wait.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == want => return,
                Ok(other) => eprintln!("client: {other}"),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the client did not print {want:?} within {wait:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the client ended before printing {want:?} (its stderr is above)")
                }
            }
        }
    }

    /// Tells the client that the failovers are done.
    fn say_failed_over(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "failed-over").expect("write to the client");
        stdin.flush().expect("flush to the client");
    }

    /// Waits for the client's summary.
    fn finish(mut self) -> serde_json::Value {
        self.expect_line("done", PATIENCE * 8);
        self.stdin.take();
        let status = self.child.wait().expect("wait for the client");
        assert!(status.success(), "the client exited with {status}");
        read_summary(&self.out_path)
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_summary(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read the client's summary");
    serde_json::from_str(&text).expect("the client's summary is JSON")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s.as_str().expect("a JSON string").to_string())
        .collect()
}

/// `leasegate failover --from <from> --to <to>`; the printed report.
fn leasegate_failover(shard: &RealShard, from: &Node, to: &Node) -> String {
    let out = support::failover_command(
        from.proxy.admin_port(),
        to.proxy.admin_port(),
        &RealShardOptions::default().token,
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failover failed: {printed} {}\ncontroller log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        shard.controller.log_tail()
    );
    assert!(printed.contains("success"), "{printed}");
    printed
}

/// Waits until `node`'s leasegate holds a valid lease (its `/v1/status`).
fn wait_master(node: &Node, what: &str) {
    let start = Instant::now();
    loop {
        let (code, body) = support::http(node.proxy.admin_port(), "GET", "/v1/status", None, None);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if code == 200 && status["lease"]["valid"] == true {
            return;
        }
        assert!(start.elapsed() < PATIENCE * 2, "{what}: no lease ({body})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole run with both leasegates configured by `extra_yaml`: the
/// client writes through A's leasegate, `leasegate failover` A→B and back.
/// Returns the client's summary, the leasegate addresses of A and B and
/// the sessions each handed over, after the common assertions.
fn cluster_client_through_real_failovers(
    extra_yaml: &str,
) -> Option<(serde_json::Value, String, String, [u64; 2])> {
    let shard = real_shard(&RealShardOptions {
        extra_yaml: extra_yaml.to_string(),
        ..RealShardOptions::with_password(PASSWORD)
    })?;
    let python = python_with_redis_cluster()?;
    let a_addr = format!("127.0.0.1:{}", shard.a.proxy.port);
    let b_addr = format!("127.0.0.1:{}", shard.b.proxy.port);

    // The client discovers the shard through A's leasegate and writes.
    let mut client = ClientProcess::start(&python, shard.a.proxy.port, PASSWORD);
    client.expect_line("ready", PATIENCE * 3);

    let there = leasegate_failover(&shard, &shard.a, &shard.b);
    eprintln!("A→B: {there}");
    assert_eq!(shard.controller.master_of(0).0, shard.b_id);
    wait_master(&shard.b, "B after the failover");
    // As tests/real_failover.rs: past the controller's own (late) push.
    std::thread::sleep(Duration::from_millis(1500));

    let back = leasegate_failover(&shard, &shard.b, &shard.a);
    eprintln!("B→A: {back}");
    assert_eq!(shard.controller.master_of(0).0, shard.a_id);
    wait_master(&shard.a, "A after the failover back");
    client.say_failed_over();
    let summary = client.finish();
    eprintln!(
        "redis-py {}: {} writes acknowledged ({} after the failovers), {} MOVED followed, internal retries {}, last key's owner {} (A {a_addr}, B {b_addr})",
        summary["redis_py"],
        summary["acked"].as_array().map_or(0, Vec::len),
        summary["after"].as_array().map_or(0, Vec::len),
        summary["moved"].as_array().map_or(0, Vec::len),
        summary["retried"],
        summary["owner_of_last"],
    );

    // Discovery named the leasegates, not the nodes behind them.
    let mut known = strings(&summary["known"]);
    known.sort();
    let mut leasegates = vec![a_addr.clone(), b_addr.clone()];
    leasegates.sort();
    assert_eq!(known, leasegates, "the nodes the client knows");

    let errors = strings(&summary["errors"]);
    assert!(
        errors.is_empty(),
        "{} errors surfaced to the client, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let acked = strings(&summary["acked"]);
    let after = strings(&summary["after"]);
    assert!(acked.len() >= READY, "only {} writes", acked.len());
    assert!(
        after.len() >= AFTER,
        "only {} writes acknowledged after the failovers",
        after.len()
    );

    // A is the master again, and has every acknowledged write.
    let mut direct_a = shard.direct(&shard.a);
    assert_eq!(info_field(&mut direct_a, "role").as_deref(), Some("master"));
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| {
            let value = format!("v{}", &k[1..]);
            direct_a.cmd(&["GET", k.as_str()]) != Reply::bulk(&value)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the final master, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let moved = [&shard.a, &shard.b].map(|n| handovers(&n.proxy, "success"));
    let failed = [&shard.a, &shard.b].map(|n| handovers(&n.proxy, "failed"));
    eprintln!("sessions handed over by A's and B's leasegates: {moved:?}, failed {failed:?}");
    assert_eq!(failed, [0, 0], "failed hand-overs");
    Some((summary, a_addr, b_addr, moved))
}

/// `pause.on_demote: forward` (the default): the client's sessions move to
/// the new master's leasegate under it, and back; no error, nothing lost.
#[test]
fn redis_py_cluster_client_rides_real_controller_failovers_with_forward() {
    let Some((summary, a_addr, b_addr, handed_over)) = cluster_client_through_real_failovers("")
    else {
        return;
    };
    assert!(
        handed_over.iter().sum::<u64>() > 0,
        "no session was handed over"
    );
    // Any redirection the client did get names one of the leasegates.
    for m in strings(&summary["moved"]) {
        assert!(
            m.ends_with(&format!(" {a_addr}")) || m.ends_with(&format!(" {b_addr}")),
            "MOVED {m}"
        );
    }
}

/// `pause.on_demote: moved`: the held writes are answered `-MOVED` to the
/// new master's leasegate, and `RedisCluster` follows it there and back.
#[test]
fn redis_py_cluster_client_follows_moved_through_real_controller_failovers() {
    let Some((summary, a_addr, b_addr, _)) =
        cluster_client_through_real_failovers("pause:\n  on_demote: moved\n")
    else {
        return;
    };
    let moved = strings(&summary["moved"]);
    let to = |addr: &str| {
        moved
            .iter()
            .filter(|m| m.ends_with(&format!(" {addr}")))
            .count()
    };
    eprintln!(
        "MOVED to B's leasegate: {}, to A's: {}",
        to(&b_addr),
        to(&a_addr)
    );
    assert!(
        !moved.is_empty(),
        "the client never got a MOVED, yet wrote after the failovers"
    );
    for m in &moved {
        assert!(
            m.ends_with(&format!(" {a_addr}")) || m.ends_with(&format!(" {b_addr}")),
            "MOVED {m}"
        );
    }
    assert_eq!(
        summary["owner_of_last"].as_str(),
        Some(a_addr.as_str()),
        "the client's map sends the keys back to A's leasegate"
    );
}
