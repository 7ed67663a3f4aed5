//! The split brain that a kvrocks-controller raft group's cut-off *leader*
//! opens, under a real network partition, and listing every controller in
//! `controller.url` closing it, checked by the history checker.
//!
//! kvrocks-controller 1.2.0's raft leader, cut off from its followers,
//! stays leader (no check-quorum) and goes on answering its last topology,
//! naming the old master and itself leader; the other two elect a leader
//! of their own, probe the old master, fail, and promote its replica. A
//! master polling that controller alone keeps its lease for ever
//! (`docs/kvrocks-controller.md`, "Several controllers").
//! `tests/real_controller.rs` shows the lease lapsing where the followers
//! are only frozen; here the group is really split and really fails over.
//!
//! Deployed as `tests/real_partition.rs` deploys a shard (two hosts in
//! network namespaces of their own, `support::netns`, each with Kvrocks in
//! cluster mode with `requirepass`/`masterauth` and its leasegate, leases
//! by polling every 100 ms, `ttl_ms` 1500; B's Kvrocks replicates from A's
//! leasegate over a direct link), with a raft group of three real
//! controllers (`RealController::start_group_placed`): C1 on host A, beside
//! the master, and the group's leader when the fault comes (arranged:
//! `make_leader`); C2 and C3 in the test's namespace, the controller side. The
//! members peer over routable addresses (C1 at A's address, C2 and C3 at
//! the controller side's address on A's link); each leasegate knows the
//! controllers by the addresses its host reaches them at (B reaches C1 over
//! its link to A).
//!
//! The fault: A's link to the controller side goes down (A's host, C1
//! with it, cut off from C2 and C3), then, 1.8 s later, A's link to B (see
//! `tests/real_partition.rs`: Kvrocks replicates asynchronously, so the
//! replica link goes once B has everything A's node applied, after A's
//! lease has ended, before any promotion). A's own two clients (threads in
//! A's namespace) keep writing through A's leasegate. C1 stays leader on
//! A's side, naming A master (checked from inside A all along, and
//! printed); C2 and C3 elect a leader, fail A over and promote B, whose
//! clients (on the controller side) then write through B's leasegate.
//! Every key is read back from B, and `History::check` looks for
//! split-brain writes (acknowledged through A after the promotion) and
//! lost ones (acknowledged, not on B):
//!
//! * A's leasegate lists every controller (`[C1, C2, C3]`): C1 is one voice
//!   of three, no majority names a leader, A's lease lapses within
//!   `ttl_ms` of the cut: no split-brain write, none lost.
//! * A's leasegate polls C1 alone (the documented weakness of one
//!   address): C1 names itself leader and A master, A keeps its lease, and
//!   the checker finds split-brain and lost writes (the check can fail).
//!
//! B's leasegate lists every controller in both.
//!
//! Needs root (network namespaces), the Kvrocks binary and the controller
//! binary; says SKIPPED without them. `LEASEGATE_TEST_LOG=info` prints the
//! leasegates' and controllers' logs at the end.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::history::signed_ms;
use support::history::{read_back_auth, Clients, History, Op, Outcome, Verdict};
use support::kvctl::{Placement, RealController};
use support::kvrocks::{link_up, sequence, takes_writes};
use support::netns::{client_auth_at, wait_accepting, wait_kvrocks, Host, Lab, Link};
use support::{http_at, Client};

const PASSWORD: &str = "node-secret";
/// Kvrocks' port on each host.
const NODE_PORT: u16 = 6666;
/// leasegate's port on each host: what the controllers, the clients and
/// the replica use.
const PROXY_PORT: u16 = 7000;
/// Bounds no slow machine reaches.
const PATIENCE: Duration = Duration::from_secs(30);
/// From the cut of A's link to the controller side to the cut of its link
/// to B (module doc).
const REPLICA_CUT_AFTER: Duration = Duration::from_millis(1800);
/// C1's raft id: the first placed.
const C1: u64 = 1;

/// The controllers, the two hosts and what runs on them.
struct Shard {
    // Dropped first: the processes on the hosts, then the namespaces.
    _lab: Lab,
    /// C1 (on A), C2, C3.
    controllers: Vec<RealController>,
    a: Host,
    b: Host,
    /// A's direct link to B (replication, and B's way to C1).
    a_b: Link,
    a_id: String,
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
            // (On a panic, each controller's own drop prints its tail.)
            for c in &self.controllers {
                eprintln!("--- kvctl-server C{} (tail) ---\n{}", c.id(), c.log_tail());
            }
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

/// Which controllers A's leasegate polls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AsksA {
    /// `[C1, C2, C3]`.
    Every,
    /// C1, its raft leader at the cut, alone.
    C1Alone,
}

/// The controller side's three placements: C1 in A's namespace at A's
/// address, C2 and C3 in the test's at the address of its end of A's link
/// (where C1 reaches them; they reach each other there too, a local
/// address, whether the link is up or not).
fn placements(a: &Host) -> Vec<Placement> {
    let side = Placement {
        netns: None,
        bind: [0, 0, 0, 0],
        raft_ip: a.peer_ip.clone(),
        api_ip: "127.0.0.1".into(),
    };
    let c1 = Placement {
        netns: Some(a.ns.clone()),
        bind: [0, 0, 0, 0],
        raft_ip: a.ip.clone(),
        api_ip: a.ip.clone(),
    };
    vec![c1, side.clone(), side]
}

/// Until member `id` leads the group: stops every other member, then
/// starts them again, one by one: `id`, alone meanwhile, campaigns and
/// wins their votes as they come back (mostly). (C1, started first, has
/// led every time so far: this is for the other times.)
fn make_leader(group: &mut [RealController], id: u64) {
    let start = Instant::now();
    let target = group
        .iter()
        .position(|c| c.id() == id)
        .expect("a member of the group");
    loop {
        let leader = group[target].leader();
        if leader == id {
            eprintln!("C{id} leads the group after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < PATIENCE * 2,
            "C{id} never became the group's leader (last {leader})"
        );
        eprintln!("C{leader} leads: the others than C{id} restarted");
        for (i, c) in group.iter_mut().enumerate() {
            if i != target {
                c.stop();
            }
        }
        for (i, c) in group.iter_mut().enumerate() {
            if i != target {
                c.restart();
            }
        }
    }
}

/// The `controller.url` of a leasegate that reaches C1 at `c1_ip` and C2
/// and C3 at `side_ip`.
fn every_controller(group: &[RealController], c1_ip: &str, side_ip: &str) -> String {
    let urls: Vec<String> = group
        .iter()
        .map(|c| {
            let ip = if c.id() == C1 { c1_ip } else { side_ip };
            format!("http://{ip}:{}", c.port)
        })
        .collect();
    format!("[{}]", urls.join(", "))
}

/// A leasegate (`block-write`) whose `controller.url` is `urls`.
fn leasegate_yaml(group: &[RealController], urls: &str) -> String {
    format!(
        "listen: 0.0.0.0:{PROXY_PORT}\nbackend:\n  addr: 127.0.0.1:{NODE_PORT}\n  password: {PASSWORD}\ncontrol:\n  password: {PASSWORD}\nadmin:\n  listen: \"\"\nlease:\n  mode: block-write\n  probe_interval_ms: 200\n  safety_margin_ms: 100\nlog:\n  level: '{}'\n{}",
        std::env::var("LEASEGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        group[0].yaml_via(urls, 100, 1500)
    )
}

/// A client of `addr` (reachable from the calling thread's namespace),
/// authenticated with the node password.
fn client(addr: &str) -> Client {
    client_auth_at(addr, PASSWORD)
}

fn proxy_addr(host: &Host) -> String {
    format!("{}:{PROXY_PORT}", host.ip)
}

/// Starts Kvrocks and its leasegate (configured by `yaml`) on `host`.
fn start_node(
    lab: &mut Lab,
    kvrocks: &str,
    dir: &std::path::Path,
    (name, host): (&'static str, &Host),
    yaml: &str,
) -> PathBuf {
    let data = dir.join(format!("kvrocks-{name}"));
    std::fs::create_dir(&data).expect("kvrocks dir");
    let data = data.display().to_string();
    let port = NODE_PORT.to_string();
    lab.spawn(
        host,
        kvrocks,
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
    let config = dir.join(format!("leasegate-{name}.yaml"));
    std::fs::write(&config, yaml).expect("write config");
    let log = dir.join(format!("leasegate-{name}.log"));
    let config = config.display().to_string();
    lab.spawn_logged(
        host,
        env!("CARGO_BIN_EXE_leasegate"),
        &["run", "-c", &config],
        Some(&log),
    );
    log
}

/// The controllers (C1 leading), hosts A and B with Kvrocks and
/// leasegate, registered at C1 (A master); returns once a write through
/// A's leasegate succeeds and B's replication link is up. `None` where the
/// binaries or network namespaces are missing.
fn shard(asks_a: AsksA) -> Option<Shard> {
    let kvrocks = support::kvrocks::binary_or_skip()?;
    let mut lab = Lab::new()?;
    let a = lab.host("a");
    let b = lab.host("b");
    let a_b = lab.routed_link(&a, &b);
    // The cut host stays silent: nothing the controller side sends A
    // leaves the machine by the default route.
    lab.unreachable_when_cut(&a);
    let mut controllers = RealController::start_group_placed(&placements(&a))?;
    make_leader(&mut controllers, C1);
    let a_urls = match asks_a {
        AsksA::Every => every_controller(&controllers, "127.0.0.1", &a.peer_ip),
        AsksA::C1Alone => format!("http://127.0.0.1:{}", controllers[0].port),
    };
    // B reaches C1 at A's address, over its link to A.
    let b_urls = every_controller(&controllers, &a.ip, &b.peer_ip);
    eprintln!("controller.url: A {a_urls}, B {b_urls}");
    let dir = tempfile::tempdir().expect("temp dir");
    let kvrocks = kvrocks.display().to_string();
    let logs = vec![
        (
            "A",
            start_node(
                &mut lab,
                &kvrocks,
                dir.path(),
                ("A", &a),
                &leasegate_yaml(&controllers, &a_urls),
            ),
        ),
        (
            "B",
            start_node(
                &mut lab,
                &kvrocks,
                dir.path(),
                ("B", &b),
                &leasegate_yaml(&controllers, &b_urls),
            ),
        ),
    ];
    for host in [&a, &b] {
        wait_kvrocks(&format!("{}:{NODE_PORT}", host.ip));
        wait_accepting(&proxy_addr(host));
    }
    let registered = Instant::now();
    // At the leader: a follower would store it, unmanaged.
    let c1 = &controllers[0];
    c1.create_cluster(&[proxy_addr(&a), proxy_addr(&b)], Some(PASSWORD));
    let cluster = c1.cluster();
    let id = |i: usize| {
        cluster["shards"][0]["nodes"][i]["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no id for node {i}: {cluster}"))
    };
    let (a_id, b_id) = (id(0), id(1));
    assert_eq!(cluster["shards"][0]["nodes"][1]["addr"], proxy_addr(&b));
    assert_eq!(c1.master_of(0).0, a_id, "{cluster}");
    let shard = Shard {
        _lab: lab,
        controllers,
        a,
        b,
        a_b,
        a_id,
        b_id,
        logs,
        _dir: dir,
    };
    wait_writable(&shard, registered);
    Some(shard)
}

/// Waits until a write through A's leasegate succeeds and B's node is
/// linked to A's leasegate.
fn wait_writable(s: &Shard, registered: Instant) {
    takes_writes(
        &mut client(&proxy_addr(&s.a)),
        registered,
        PATIENCE,
        "A never got its lease from the real controllers",
    );
    let writable = registered.elapsed();
    link_up(&mut client(&format!("{}:{NODE_PORT}", s.b.ip)));
    eprintln!(
        "shard: A writable {writable:?}, B linked {:?} after registration",
        registered.elapsed()
    );
}

/// A controller's view: the raft leader it names (0: none) and the master
/// of shard 0 its topology names, through `GET`s to `ip:port` from the
/// calling thread's namespace.
fn view(ip: &str, port: u16) -> (u64, Option<String>) {
    let (_, peers) = http_at(ip, port, "GET", "/api/v1/raft/peers", None, None);
    let leader = serde_json::from_str::<serde_json::Value>(&peers)
        .ok()
        .and_then(|v| v["data"]["leader"].as_u64())
        .unwrap_or(0);
    let path = format!(
        "/api/v1/namespaces/{}/clusters/{}",
        support::controller::NAMESPACE,
        support::controller::CLUSTER
    );
    let (_, body) = http_at(ip, port, "GET", &path, None, None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let master = v["data"]["cluster"]["shards"][0]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["role"] == "master")
        .and_then(|n| n["id"].as_str().map(str::to_string));
    (leader, master)
}

/// One look at a controller ([`view`]): when, the raft leader it named,
/// the master its topology named.
#[derive(Clone)]
struct Look {
    at: Instant,
    leader: u64,
    master: Option<String>,
}

/// Watches one controller (every 20 ms, from the calling thread's
/// namespace or `inside` a host) until stopped, or until `until` says a
/// view is the last wanted; keeps every view with the instant it was
/// asked.
struct Watch {
    seen: Arc<Mutex<Vec<Look>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(
        ip: String,
        port: u16,
        inside: Option<&Host>,
        until: impl Fn(u64, Option<&str>) -> bool + Send + 'static,
    ) -> Watch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, inside) = (Arc::clone(&seen), Arc::clone(&stop), inside.cloned());
        let thread = std::thread::spawn(move || {
            if let Some(host) = inside {
                host.enter();
            }
            while !st.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let (leader, master) = view(&ip, port);
                let last = until(leader, master.as_deref());
                s.lock().expect("watch").push(Look {
                    at: asked,
                    leader,
                    master,
                });
                if last {
                    return;
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

    /// Waits until the watch ends by itself, up to `within`.
    fn wait(&self, within: Duration) {
        let start = Instant::now();
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it; every view seen.
    fn finish(mut self) -> Vec<Look> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().expect("watch").clone();
        seen
    }
}

/// What one run saw.
struct Run {
    verdict: Verdict,
    ops: Vec<Op>,
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

/// Checks that C1, watched from inside A since before the cut, named
/// itself leader and A master in every look, and says for how long.
fn c1_stayed_leader(s: &Shard, views: &[Look], cut: Instant) {
    let after: Vec<&Look> = views.iter().filter(|l| l.at > cut).collect();
    let odd = after
        .iter()
        .find(|l| l.leader != C1 || l.master.as_deref() != Some(&s.a_id));
    let last = after.last().map_or(i128::MIN, |l| signed_ms(cut, l.at));
    match odd {
        None => eprintln!(
            "C1 (on A), asked from inside A {} times from the cut to {last} ms after it: leader C{C1}, master A, every time",
            after.len()
        ),
        Some(Look { at, leader, master }) => panic!(
            "C1 stopped naming itself leader and A master {} ms after the cut (leader {leader}, master {master:?}): the fault this test sets up did not happen",
            signed_ms(cut, *at)
        ),
    }
    assert!(
        last > 5000,
        "C1 was watched for {last} ms after the cut only"
    );
}

/// How long after the cut C1 is watched at least.
const WATCHED: Duration = Duration::from_millis(6000);

/// Waits until B, promoted, has acknowledged writes for a second; the
/// first acknowledgement.
fn b_takes_writes(s: &Shard, history: &History) -> Instant {
    let start = Instant::now();
    loop {
        let first_ok = history
            .ops()
            .iter()
            .filter(|o| o.node == "B" && o.outcome == Outcome::Ok)
            .map(|o| o.completed)
            .min();
        if let Some(t) = first_ok {
            if t.elapsed() > Duration::from_secs(1) {
                return t;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "B's leasegate never acknowledged a write after the promotion\n{}",
            s.controllers[1].log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `PATIENCE`) for the controller side's watch to see B
/// master; `((the last look that still saw A master, the first that saw
/// B), the raft leader that first look named)`. The promotion came after
/// the former: the strictest instant for the split-brain check.
fn promotion(s: &Shard, side_watch: Watch, cut: Instant) -> ((Instant, Instant), u64) {
    side_watch.wait(PATIENCE);
    let side = side_watch.finish();
    match side.last() {
        Some(Look {
            at: first_new,
            leader,
            master: Some(m),
        }) if *m == s.b_id => {
            let last_old = side
                .iter()
                .rev()
                .find(|l| l.master.as_deref() == Some(&s.a_id))
                .map_or(cut, |l| l.at);
            ((last_old, *first_new), *leader)
        }
        _ => panic!(
            "C2 and C3 did not promote B within {PATIENCE:?} of the cut\n{}",
            s.controllers[1].log_tail()
        ),
    }
}

fn partition(asks_a: AsksA) -> Option<Run> {
    let started = Instant::now();
    let s = shard(asks_a)?;
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
    let c1_port = s.controllers[0].port;
    let c1_watch = Watch::start("127.0.0.1".into(), c1_port, Some(&s.a), |_, _| false);
    assert_eq!(s.controllers[0].leader(), C1, "C1 leads at the cut");
    let version = s.controllers[1].version();
    let b_id = s.b_id.clone();
    let side_watch = Watch::start(
        "127.0.0.1".into(),
        s.controllers[1].port,
        None,
        move |_, master| master == Some(b_id.as_str()),
    );

    let cut = Instant::now();
    s.a.cut();
    std::thread::sleep(REPLICA_CUT_AFTER.saturating_sub(cut.elapsed()));
    // Everything A's node had applied by now reaches B before the cut.
    let (applied, replicated) = catch_up(&s);
    let replica_cut = Instant::now();
    s.a_b.cut();

    let (promoted, new_leader) = promotion(&s, side_watch, cut);
    history.promoted("B", promoted.0);
    assert!(s.controllers[1].version() > version);
    eprintln!(
        "{asks_a:?}: controller link cut at 0 ms, replica link at {} ms (B at sequence {replicated}, A's node at {applied}), promotion of B (C{new_leader} leading C2 and C3) between {} and {} ms",
        signed_ms(cut, replica_cut),
        signed_ms(cut, promoted.0),
        signed_ms(cut, promoted.1),
    );

    let b_clients =
        Clients::start_authenticated(&history, "B", proxy_addr(&s.b), None, 2, Some(PASSWORD));
    let b_writable = b_takes_writes(&s, &history);
    let mut keys = a_clients.finish();
    keys.extend(b_clients.finish());
    // C1 is watched for at least WATCHED after the cut, however soon the
    // other two promoted B.
    std::thread::sleep(WATCHED.saturating_sub(cut.elapsed()));
    c1_stayed_leader(&s, &c1_watch.finish(), cut);
    let final_data = read_back_auth(&format!("{}:{NODE_PORT}", s.b.ip), keys, Some(PASSWORD));
    let run = Run {
        verdict: history.check(&final_data),
        ops: history.ops(),
        promoted: promoted.0,
    };
    report(&run, asks_a, cut, b_writable, started);
    assert!(run.acked("A").0 > 0, "A acknowledged writes before the cut");
    assert!(
        run.acked("B").0 > 0,
        "B acknowledged writes after the promotion"
    );
    assert_eq!(s.controllers[1].master_of(0).0, s.b_id);
    drop(s);
    Some(run)
}

/// Prints what the clients saw and the checker's verdict.
fn report(run: &Run, asks_a: AsksA, cut: Instant, b_writable: Instant, started: Instant) {
    let ((a_ok, a_after), (b_ok, _)) = (run.acked("A"), run.acked("B"));
    let last_a = run
        .ops
        .iter()
        .filter(|o| o.node == "A" && o.outcome == Outcome::Ok)
        .map(|o| signed_ms(cut, o.completed))
        .max()
        .unwrap_or(i128::MIN);
    let not_ok = |node: &str| {
        run.ops
            .iter()
            .filter(|o| o.node == node && o.outcome != Outcome::Ok)
            .count()
    };
    eprintln!(
        "{asks_a:?}: acknowledged through A {a_ok} ({a_after} after the promotion; the last {last_a} ms after the cut), through B {b_ok} (the first {} ms after the cut); not acknowledged: A {}, B {}; split-brain {}, lost {}; {:.1} s in all",
        signed_ms(cut, b_writable),
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
            eprintln!("{asks_a:?}: {n} writes through {node} answered: {text}");
        }
    }
    eprintln!("{}", run.verdict.report);
}

#[test]
fn a_master_cut_off_with_its_controller_leader_acknowledges_nothing_the_new_master_lacks() {
    let Some(run) = partition(AsksA::Every) else {
        return;
    };
    run.verdict.assert_clean();
    let (_, after) = run.acked("A");
    assert_eq!(after, 0, "{}", run.verdict.report);
}

#[test]
fn polling_the_cut_off_leader_alone_the_master_acknowledges_split_brain_writes() {
    let Some(run) = partition(AsksA::C1Alone) else {
        return;
    };
    assert!(
        !run.verdict.split_brain.is_empty(),
        "expected split-brain writes with A polling C1 alone\n{}",
        run.verdict.report
    );
    assert!(
        !run.verdict.lost.is_empty(),
        "expected lost acknowledged writes with A polling C1 alone\n{}",
        run.verdict.report
    );
}
