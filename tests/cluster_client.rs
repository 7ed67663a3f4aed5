//! A real cluster client through the leasegates: redis-py's `RedisCluster`
//! in front of a Kvrocks shard (cluster mode, nodes registered by their
//! leasegates' addresses, as kvrocks-controller registers them).
//!
//! The client discovers the shard through A's leasegate (`INFO`, then
//! `CLUSTER SLOTS`, which the node answers with the leasegate addresses of
//! its topology) and writes distinct keys without a pause while the test
//! fails the shard over to B as kvrocks-controller (PR #389) does. Whatever
//! `pause.on_demote` says, the client sees no error and every write it was
//! told succeeded is on the new master:
//!
//! * `forward` (the default): the held writes, and the session, move to B's
//!   leasegate; the client goes on over the connection it has.
//! * `moved`: the held writes are answered `-MOVED <slot> <B's leasegate>`,
//!   which `RedisCluster` follows on its own.
//!
//! redis-py is a Python package (Debian: `python3-redis`); without it the
//! test says SKIPPED, unless `CI` is set, where it fails.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use support::kvrocks::{info_field, link_up, pr389_failover_by_hand, topology, Node, A_ID, B_ID};
use support::{heartbeat, Reply, PATIENCE};

/// The client: writes `k<i> = v<i>` for i = 0, 1, ... through a
/// `RedisCluster` seeded with one leasegate's address. It prints `ready` once
/// it has had `READY` writes acknowledged, counts as "after the failover"
/// the writes it starts after a line (or the end) of its standard input, and
/// stops once `AFTER` of those were acknowledged (or after 100 errors, or at
/// its own safety deadline). It then writes its summary as JSON and prints
/// `done`.
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
    sys.stdin.readline()  # the failover is done (or the test is gone)
    failed_over.set()
threading.Thread(target=watch_stdin, daemon=True).start()

# Kvrocks answers HELLO 3 with RESP2 unless `resp3-enabled yes`; redis-py 8
# speaks RESP3 by default and refuses that, so ask for RESP2 where redis-py
# has the option (5.0 on).
options = {"protocol": 2} if int(redis.__version__.split(".")[0]) >= 5 else {}
rc = RedisCluster(host="127.0.0.1", port=port, **options)
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

/// Writes acknowledged before the failover starts.
const READY: usize = 200;
/// Writes acknowledged after it, before the client stops.
const AFTER: usize = 500;

/// A Python interpreter that has redis-py with `redis.cluster` (≥ 4.1):
/// `$LEASEGATE_PYTHON`, `python3` on the PATH, or Debian's own (where
/// `python3-redis` installs, when `python3` is another build, e.g. pyenv's).
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
    fn start(python: &str, port: u16) -> ClientProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("cluster_client.py");
        std::fs::write(&script, CLIENT).expect("write the client script");
        let out_path = dir.path().join("summary.json");
        let deadline = (PATIENCE * 3).as_secs().to_string();
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&out_path)
            .args([&READY.to_string(), &AFTER.to_string(), &deadline])
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

    /// Tells the client that the failover is done.
    fn say_failed_over(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "failed-over").expect("write to the client");
        stdin.flush().expect("flush to the client");
    }

    /// Waits for the client's summary.
    fn finish(mut self) -> serde_json::Value {
        self.expect_line("done", PATIENCE * 4);
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

/// The whole run with A's leasegate configured by `a_extra`; returns the
/// client's summary and B's leasegate port, after the common assertions.
fn cluster_client_through_failover(a_extra: &str) -> Option<(serde_json::Value, u16)> {
    let (Some(a), Some(b)) = (
        Node::start_with(A_ID, "block-write", a_extra),
        Node::start(B_ID),
    ) else {
        return None;
    };
    let python = python_with_redis_cluster()?;
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    for node in [&a, &b] {
        assert!(!heartbeat(&mut node.proxy.client(), A_ID, 600_000, 1).is_error());
    }
    let mut direct_b = b.kvrocks.client();
    link_up(&mut direct_b);

    // The client discovers the shard through A's leasegate and writes.
    let mut client = ClientProcess::start(&python, a.proxy.port);
    client.expect_line("ready", PATIENCE * 3);
    pr389_failover_by_hand((A_ID, &a), (B_ID, &b), 2);
    client.say_failed_over();
    let summary = client.finish();
    eprintln!(
        "redis-py {}: {} writes acknowledged ({} after the failover), {} MOVED followed, internal retries {}, last key's owner {}",
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
    let mut leasegates = vec![
        format!("127.0.0.1:{}", a.proxy.port),
        format!("127.0.0.1:{}", b.proxy.port),
    ];
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
        "only {} writes acknowledged after the failover",
        after.len()
    );

    // B is the master now, and has every acknowledged write.
    assert_eq!(info_field(&mut direct_b, "role").as_deref(), Some("master"));
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| {
            let value = format!("v{}", &k[1..]);
            direct_b.cmd(&["GET", k.as_str()]) != Reply::bulk(&value)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new master, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    Some((summary, b.proxy.port))
}

/// `pause.on_demote: forward` (the default): the client's session moves to
/// B's leasegate under it; no error, nothing lost, writes go on after.
#[test]
fn redis_py_cluster_client_rides_a_controller_failover_with_forward() {
    let Some((summary, b_port)) = cluster_client_through_failover("") else {
        return;
    };
    // Any redirection the client did get names B's leasegate.
    let b_addr = format!("127.0.0.1:{b_port}");
    for m in strings(&summary["moved"]) {
        assert!(m.ends_with(&format!(" {b_addr}")), "MOVED {m}");
    }
}

/// `pause.on_demote: moved`: the held writes are answered `-MOVED` to B's
/// leasegate, and `RedisCluster` follows it there.
#[test]
fn redis_py_cluster_client_follows_moved_after_a_controller_failover() {
    let Some((summary, b_port)) = cluster_client_through_failover("pause:\n  on_demote: moved\n")
    else {
        return;
    };
    let b_addr = format!("127.0.0.1:{b_port}");
    let moved = strings(&summary["moved"]);
    assert!(
        !moved.is_empty(),
        "the client never got a MOVED, yet wrote after the failover"
    );
    for m in &moved {
        assert!(m.ends_with(&format!(" {b_addr}")), "MOVED {m}");
    }
    assert_eq!(
        summary["owner_of_last"].as_str(),
        Some(b_addr.as_str()),
        "the client's map sends the keys to B's leasegate"
    );
}
