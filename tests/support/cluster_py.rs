//! A real cluster client for the tests: redis-py's `RedisCluster` as a
//! Python child process (an embedded script), seeded with one leasegate's
//! address and, optionally, a node password, writing distinct keys while a
//! test fails the shard over. Shared by `tests/cluster_client.rs` (the
//! failover by hand) and `tests/real_cluster_client.rs` (the real
//! kvrocks-controller, with a password).
//!
//! redis-py is a Python package (Debian: `python3-redis`); without it
//! [`python_with_redis_cluster`] says SKIPPED, unless `CI` is set, where it
//! fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::kvrocks::info_field;
use super::{Client, Reply};

/// The client: writes `k<i> = v<i>` for i = 0, 1, ... through a
/// `RedisCluster` seeded with one leasegate's address, authenticating with
/// the password if one is given. It prints `ready` once it has had `READY`
/// writes acknowledged, counts as "after the failover" the writes it starts
/// after a line (or the end) of its standard input, and stops once `AFTER`
/// of those were acknowledged (or after 100 errors, or at its own safety
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
password = sys.argv[6] if len(sys.argv) > 6 else None

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
if password is not None:
    options["password"] = password
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

/// A Python interpreter that has redis-py with `redis.cluster` (≥ 4.1):
/// `$LEASEGATE_PYTHON`, `python3` on the PATH, or Debian's own (where
/// `python3-redis` installs, when `python3` is another build, e.g. pyenv's).
pub fn python_with_redis_cluster() -> Option<String> {
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

/// How a [`ClientProcess`] runs.
pub struct ClientOptions<'a> {
    /// The leasegate port the client is seeded with.
    pub port: u16,
    /// The password `RedisCluster` authenticates with (`None`: no `AUTH`).
    pub password: Option<&'a str>,
    /// Writes acknowledged before the client prints `ready`.
    pub ready: usize,
    /// Writes acknowledged after the failover before the client stops.
    pub after: usize,
    /// The client's own safety deadline for the whole run.
    pub deadline: Duration,
}

/// The client process, killed on drop; its stdout lines come on a channel.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    out_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClientProcess {
    pub fn start(python: &str, options: &ClientOptions) -> ClientProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("cluster_client.py");
        std::fs::write(&script, CLIENT).expect("write the client script");
        let out_path = dir.path().join("summary.json");
        let deadline = options.deadline.as_secs().to_string();
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(options.port.to_string())
            .arg(&out_path)
            .args([
                &options.ready.to_string(),
                &options.after.to_string(),
                &deadline,
            ]);
        if let Some(password) = options.password {
            command.arg(password);
        }
        let mut child = command
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
    pub fn expect_line(&self, want: &str, wait: Duration) {
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
    pub fn say_failed_over(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "failed-over").expect("write to the client");
        stdin.flush().expect("flush to the client");
    }

    /// Waits up to `wait` for the client's `done`, then returns its summary.
    pub fn finish(mut self, wait: Duration) -> serde_json::Value {
        self.expect_line("done", wait);
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

/// The strings of a JSON array in the summary.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| s.as_str().expect("a JSON string").to_string())
        .collect()
}

/// Reports the client's `summary` and checks what every run demands:
/// discovery named exactly the `leasegates` (not the nodes behind them), no
/// error surfaced, at least `ready` writes acknowledged and `after` of them
/// after `failover` (e.g. "the failover"). `note` ends the report line.
/// Returns the acknowledged keys.
pub fn check_summary(
    summary: &serde_json::Value,
    leasegates: &[String],
    ready: usize,
    after: usize,
    failover: &str,
    note: &str,
) -> Vec<String> {
    eprintln!(
        "redis-py {}: {} writes acknowledged ({} after {failover}), {} MOVED followed, internal retries {}, last key's owner {}{note}",
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
    let mut leasegates = leasegates.to_vec();
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
    let late = strings(&summary["after"]);
    assert!(acked.len() >= ready, "only {} writes", acked.len());
    assert!(
        late.len() >= after,
        "only {} writes acknowledged after {failover}",
        late.len()
    );
    acked
}

/// Checks that `master` (a direct client of a node) is a master and has
/// every `acked` write (`k<i> = v<i>`); `which` names it in the message
/// (e.g. "new master").
pub fn assert_all_on_master(master: &mut Client, acked: &[String], which: &str) {
    assert_eq!(info_field(master, "role").as_deref(), Some("master"));
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| {
            let value = format!("v{}", &k[1..]);
            master.cmd(&["GET", k.as_str()]) != Reply::bulk(&value)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the {which}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
