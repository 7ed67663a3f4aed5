//! The real Kvrocks server (`../shared/kvrocks/kvrocks`, or `$LEASEGATE_KVROCKS`)
//! on a free loopback port, for what only Kvrocks does: cluster mode,
//! `CLUSTERX SETNODEID/SETNODES`, its replication and INFO fields.
//!
//! No package ships Kvrocks, so the binary may be missing on a machine:
//! [`KvrocksServer::start`] then returns `None` and the test says so on
//! stderr, unless `LEASEGATE_REQUIRE_KVROCKS=1`, which makes it a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{free_port, wait_listening, Client, Proxy, Reply, PATIENCE};

/// Where the Kvrocks binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LEASEGATE_KVROCKS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kvrocks/kvrocks")),
        Some(PathBuf::from("/work/shared/kvrocks/kvrocks")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A Kvrocks server, stopped on drop.
/// The Kvrocks binary, or `None` (and a SKIPPED line) where it is not
/// here, unless `LEASEGATE_REQUIRE_KVROCKS=1`.
pub fn binary_or_skip() -> Option<PathBuf> {
    skipped_unless(binary())
}

fn skipped_unless(bin: Option<PathBuf>) -> Option<PathBuf> {
    if bin.is_none() {
        assert!(
            std::env::var("LEASEGATE_REQUIRE_KVROCKS").as_deref() != Ok("1"),
            "Kvrocks is required (LEASEGATE_REQUIRE_KVROCKS=1) but was not found; set LEASEGATE_KVROCKS"
        );
        eprintln!("SKIPPED: no Kvrocks binary (set LEASEGATE_KVROCKS to run this test)");
    }
    bin
}

pub struct KvrocksServer {
    pub port: u16,
    child: Child,
    /// The command line without the port (for [`KvrocksServer::restart`]).
    bin: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl KvrocksServer {
    /// Starts Kvrocks (`cluster`: with `cluster-enabled yes`, as
    /// kvrocks-controller runs it). `None` when the binary is not here.
    pub fn start(cluster: bool) -> Option<KvrocksServer> {
        KvrocksServer::start_with(cluster, &[])
    }

    /// Starts Kvrocks with extra `--<key> <value>` options (e.g.
    /// `["--requirepass", "pw"]`).
    pub fn start_with(cluster: bool, extra: &[&str]) -> Option<KvrocksServer> {
        KvrocksServer::start_binary(binary(), cluster, extra)
    }

    /// Starts the older (2024) Kvrocks build beside the default one
    /// (`kvrocks-5fccd57c`), for behaviour that differs between them.
    /// `None` when it is not here.
    pub fn start_2024(cluster: bool) -> Option<KvrocksServer> {
        let bin = binary()
            .and_then(|b| b.parent().map(|d| d.join("kvrocks-5fccd57c")))
            .filter(|b| b.is_file());
        KvrocksServer::start_binary(bin, cluster, &[])
    }

    fn start_binary(bin: Option<PathBuf>, cluster: bool, extra: &[&str]) -> Option<KvrocksServer> {
        let bin = skipped_unless(bin)?;
        let dir = tempfile::tempdir().expect("temp dir");
        // A port chosen free may be taken before Kvrocks binds it (tests run
        // in parallel): retry on a fresh one, and count as ready only a
        // listening socket that is Kvrocks' own.
        let args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.path().display().to_string(),
            "--daemonize",
            "no",
            "--cluster-enabled",
            if cluster { "yes" } else { "no" },
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        for _ in 0..5 {
            let port = free_port();
            let Some(child) = spawn_kvrocks(&bin, port, &args) else {
                continue;
            };
            let server = KvrocksServer {
                port,
                child,
                bin,
                args,
                _dir: dir,
            };
            server.wait_ready();
            return Some(server);
        }
        panic!("kvrocks could not bind a free port in 5 tries");
    }

    /// Starts the server again on its port with its data directory (after
    /// [`KvrocksServer::kill`]: a crashed node brought back by its
    /// supervisor, with what it had persisted, cluster topology included).
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        loop {
            if let Some(child) = spawn_kvrocks(&self.bin, self.port, &self.args) {
                self.child = child;
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "kvrocks could not listen on {} again",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.wait_ready();
    }

    /// Waits until Kvrocks answers (it listens before RocksDB is open; with
    /// a password it answers NOAUTH, which is an answer too).
    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let mut c = Client::connect(self.port);
            match c.cmd(&["PING"]) {
                super::Reply::Status(s) if s == "PONG" => return,
                super::Reply::Error(e) if e.starts_with("NOAUTH") => return,
                _ => {}
            }
            assert!(
                start.elapsed() < PATIENCE,
                "kvrocks did not answer on {} within {PATIENCE:?}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A direct client, bypassing the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Whether the process has exited (Kvrocks itself crashed: the 2025
    /// build was seen to segfault once while restoring a full sync's
    /// backup, "Waiting for closing DB...", on a loaded host).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|status| status.is_some())
    }

    /// The server's process id (to stop and resume it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (SIGKILL: a crash) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A direct client that sends `AUTH <password>` first when a password
    /// is given (a node started with `--requirepass`).
    pub fn client_auth(&self, password: Option<&str>) -> Client {
        let mut c = self.client();
        if let Some(pw) = password {
            assert_eq!(c.cmd(&["AUTH", pw]), Reply::ok(), "AUTH to kvrocks");
        }
        c
    }
}

/// Kvrocks on `port` once it listens; `None` if it could not.
fn spawn_kvrocks(bin: &std::path::Path, port: u16, args: &[String]) -> Option<Child> {
    let mut child = Command::new(bin)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kvrocks");
    wait_listening(port, &mut child, "kvrocks").ok()?;
    Some(child)
}

impl Drop for KvrocksServer {
    /// Stops Kvrocks; when the test failed, prints the end of its log
    /// (`kvrocks_<date>.log` in its dir: replication, role changes) to
    /// stderr.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = std::fs::read_dir(self._dir.path()).into_iter().flatten();
            for log in logs.flatten().map(|e| e.path()) {
                let name = log.file_name().unwrap_or_default().to_string_lossy();
                if name.starts_with("kvrocks") && name.ends_with(".log") {
                    super::print_log_tail(&format!("kvrocks {}", self.port), &log);
                }
            }
        }
    }
}

/// Sessions `proxy` moved to another leasegate (or back) with `result`
/// (`success`, `failed`), from its admin API's `/metrics`
/// (`leasegate_handovers_total`).
pub fn handovers(proxy: &Proxy, result: &str) -> u64 {
    let (_, metrics) = super::http(proxy.admin_port(), "GET", "/metrics", None, None);
    let series = format!("leasegate_handovers_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// A shard as kvrocks-controller runs it: Kvrocks in cluster mode, each node
// behind its own leasegate and registered by the leasegate's address.

/// Node ids the cluster tests use.
pub const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The `lease.safety_margin_ms` of every [`Node`]'s leasegate.
pub const SAFETY_MARGIN_MS: u64 = 100;

/// A cluster-mode Kvrocks node with a leasegate in front of it; loopback is
/// the controller (`control.allow_from`), as the test is.
pub struct Node {
    pub kvrocks: KvrocksServer,
    pub proxy: Proxy,
}

impl Node {
    /// With `lease.mode: block-write`; `None` when Kvrocks is not here.
    pub fn start(id: &str) -> Option<Node> {
        Node::start_with(id, "block-write", "")
    }

    /// With `lease.mode: <mode>` and extra top-level YAML; the node learns
    /// its id through the leasegate (`CLUSTERX SETNODEID`).
    pub fn start_with(id: &str, mode: &str, extra: &str) -> Option<Node> {
        let kvrocks = KvrocksServer::start(true)?;
        let proxy = Proxy::start(
            &kvrocks.addr(),
            &format!(
                "node_id: {id}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: {mode}\n  probe_interval_ms: 0\n  safety_margin_ms: {SAFETY_MARGIN_MS}\n{extra}"
            ),
        );
        let mut ctl = proxy.client();
        assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", id]), Reply::ok());
        Some(Node { kvrocks, proxy })
    }

    /// A password-protected node, as operators run it with one password:
    /// Kvrocks with `requirepass`/`masterauth` = `password`, its leasegate
    /// with `backend.password` and `control.password` both = `password`
    /// (the controller is recognised by its `AUTH`), `lease.mode: <mode>`
    /// and extra top-level YAML; the node learns its id through the
    /// leasegate on a connection that authenticates first.
    pub fn start_with_password(id: &str, password: &str, mode: &str, extra: &str) -> Option<Node> {
        let kvrocks = KvrocksServer::start_with(
            true,
            &["--requirepass", password, "--masterauth", password],
        )?;
        let proxy = Proxy::start_with_backend_yaml(
            &format!("backend:\n  addr: {}\n  password: {password}\n", kvrocks.addr()),
            &format!(
                "node_id: {id}\ncontrol:\n  password: {password}\nlease:\n  mode: {mode}\n  probe_interval_ms: 0\n  safety_margin_ms: {SAFETY_MARGIN_MS}\n{extra}"
            ),
        );
        let mut ctl = super::controller_client(&proxy, password);
        assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", id]), Reply::ok());
        Some(Node { kvrocks, proxy })
    }

    /// For the real kvrocks-controller, which assigns node ids itself and
    /// sends `CLUSTERX SETNODEID` through the leasegate: Kvrocks in cluster
    /// mode with extra `kvrocks` options (e.g. `--requirepass`), its
    /// leasegate with `backend.password` when given and `extra` top-level
    /// YAML; no `node_id`, and no SETNODEID sent here.
    pub fn start_for_controller(
        kvrocks: &[&str],
        backend_password: Option<&str>,
        extra: &str,
    ) -> Option<Node> {
        let kvrocks = KvrocksServer::start_with(true, kvrocks)?;
        let mut backend = format!("backend:\n  addr: {}\n", kvrocks.addr());
        if let Some(pw) = backend_password {
            backend.push_str(&format!("  password: {pw}\n"));
        }
        let proxy = Proxy::start_with_backend_yaml(&backend, extra);
        Some(Node { kvrocks, proxy })
    }

    /// The controller pushes `topology` at `version` through the leasegate.
    pub fn set_nodes(&self, topology: &str, version: u64) {
        let reply =
            self.proxy
                .client()
                .cmd(&["CLUSTERX", "SETNODES", topology, &version.to_string()]);
        assert_eq!(reply, Reply::ok(), "SETNODES v{version}");
    }
}

/// Topology version 1, A master and B its replica, at the controller and
/// on both nodes; returns once A's poll has given it the lease. The two
/// leasegates' addresses.
pub fn a_master_of_b(
    controller: &super::controller::TestController,
    a: &Node,
    b: &Node,
) -> (String, String) {
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", a.proxy.port),
        format!("127.0.0.1:{}", b.proxy.port),
    );
    controller.set_topology(
        1,
        vec![vec![(A_ID, &a_addr, "master"), (B_ID, &b_addr, "slave")]],
    );
    let v1 = topology((A_ID, a), Some((B_ID, b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    let mut client = a.proxy.client();
    let start = Instant::now();
    loop {
        let reply = client.cmd(&["SET", "k", "v"]);
        if reply == Reply::ok() {
            return (a_addr, b_addr);
        }
        assert!(
            start.elapsed() < PATIENCE,
            "A's lease from its poll: still {reply:?} after {PATIENCE:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A promotion held back: A master of B at version 1; at version 2 the
/// controller names B, whose node is not there yet (A polls seldom, so it
/// does not report itself fenced and B's poll does not bring B's node
/// there itself): B's poll holds its writes, and `app` has one held there.
pub struct HeldPromotion {
    pub controller: super::controller::TestController,
    pub a: Node,
    pub b: Node,
    pub a_addr: String,
    pub b_addr: String,
    pub app: Client,
}

impl HeldPromotion {
    /// `None` when Kvrocks is not here.
    pub fn start() -> Option<HeldPromotion> {
        let controller = super::controller::TestController::start();
        let a = Node::start_with(A_ID, "block-write", &controller.yaml(30_000, 60_000))?;
        let b = Node::start_with(B_ID, "block-write", &controller.yaml(100, 10_000))?;
        let (a_addr, b_addr) = a_master_of_b(&controller, &a, &b);
        controller.set_topology(
            2,
            vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
        );
        let mut ctl_b = b.proxy.client();
        let start = Instant::now();
        // B's poll saw version 2 and holds its writes (it asks A's
        // leasegate first whether A runs a failover: a write sent before
        // the hold goes to A, still master).
        loop {
            let fields = super::info_fields(&ctl_b.cmd(&["INFO", "leasegate"]));
            let field = |name: &str| fields.get(name).map(String::as_str);
            if field("controller_version") == Some("2") && field("paused") == Some("1") {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "B's poll never held its writes at version 2: {fields:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut app = b.proxy.client();
        app.send(&["SET", "k", "held at B"]);
        assert_eq!(
            app.try_read(std::time::Duration::from_millis(600)),
            None,
            "held for B's promotion"
        );
        Some(HeldPromotion {
            controller,
            a,
            b,
            a_addr,
            b_addr,
            app,
        })
    }

    /// The controller names A again (version 3): the held write must be
    /// taken by A within 5 s, not at the hold's 30 s bound.
    pub fn taken_back_by_a(&mut self) {
        self.controller.set_topology(
            3,
            vec![vec![
                (A_ID, &self.a_addr, "master"),
                (B_ID, &self.b_addr, "slave"),
            ]],
        );
        assert_eq!(
            self.app.try_read(std::time::Duration::from_secs(5)),
            Some(Reply::ok()),
            "taken by A once the controller names it again"
        );
        assert_eq!(
            self.a.kvrocks.client().cmd(&["GET", "k"]),
            Reply::bulk("held at B")
        );
    }
}

/// The shard as the controller registers it: by leasegate addresses, all
/// slots on the master.
pub fn topology(master: (&str, &Node), replica: Option<(&str, &Node)>) -> String {
    let mut t = format!(
        "{} 127.0.0.1 {} master - 0-16383",
        master.0, master.1.proxy.port
    );
    if let Some((id, node)) = replica {
        t.push_str(&format!(
            "\n{id} 127.0.0.1 {} slave {}",
            node.proxy.port, master.0
        ));
    }
    t
}

/// Waits until `key` reads `want` on `replica` (a direct client; a cluster
/// replica answers reads only after `READONLY`).
pub fn wait_for(replica: &mut Client, key: &str, want: &str) {
    let start = Instant::now();
    loop {
        let got = replica.cmd(&["GET", key]);
        if got == Reply::bulk(want) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE * 3,
            "the replica never got {key}={want} (last: {got:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One field of `INFO replication`.
pub fn info_field(c: &mut Client, field: &str) -> Option<String> {
    let text = c.cmd(&["INFO", "replication"]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Kvrocks' replication sequence as `INFO replication` reports it
/// (`master_repl_offset` on a master, `slave_repl_offset` on a replica).
pub fn sequence(c: &mut Client, field: &str) -> u64 {
    info_field(c, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `replica` (a direct client) reports its link to its master up.
pub fn link_up(replica: &mut Client) {
    let start = Instant::now();
    while info_field(replica, "master_link_status").as_deref() != Some("up") {
        assert!(
            start.elapsed() < PATIENCE * 3,
            "the replication link never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until a write through `app` (a master's leasegate) succeeds,
/// within `within` of `since` (a shard's registration); says `what` where
/// it never does.
pub fn takes_writes(app: &mut Client, since: Instant, within: std::time::Duration, what: &str) {
    loop {
        let reply = app.cmd(&["SET", "ready", "1"]);
        if reply == Reply::ok() {
            return;
        }
        assert!(since.elapsed() < within, "{what} (last: {reply:?})");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How a shard's masters get their lease from the test controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseBy {
    /// The controller sends `CLUSTERX HEARTBEAT` (the lease-aware
    /// controller), to the first master and to each new one.
    Heartbeat,
    /// Each leasegate polls the stock controller (every 200 ms, and at once
    /// when its node accepts a topology promoting it).
    Pull,
}

/// A cluster-mode shard run by the test controller, as kvrocks-controller
/// runs it: A master, B its replica, both registered by their leasegates'
/// addresses (plus `extra` nodes `(id, addr)` listed as replicas); each
/// leasegate has its admin API (bearer `token`) and knows the controller,
/// whose shard failover a cluster-mode `leasegate failover` goes through.
/// Returns once A accepts writes and B's replication link is up.
pub fn controlled_shard(
    by: LeaseBy,
    token: &str,
    extra: &[(&str, &str)],
) -> Option<(super::controller::TestController, Node, Node)> {
    controlled_shard_on(by, token, extra, None)
}

/// [`controlled_shard`] on password-protected nodes
/// ([`Node::start_with_password`]: Kvrocks' `requirepass`/`masterauth`,
/// leasegate's `backend.password` and `control.password`, all `password`);
/// the test controller authenticates every RESP connection with it
/// ([`super::controller::TestController::set_node_password`]).
pub fn controlled_shard_with_password(
    by: LeaseBy,
    token: &str,
    password: &str,
) -> Option<(super::controller::TestController, Node, Node)> {
    controlled_shard_on(by, token, &[], Some(password))
}

fn controlled_shard_on(
    by: LeaseBy,
    token: &str,
    extra: &[(&str, &str)],
    password: Option<&str>,
) -> Option<(super::controller::TestController, Node, Node)> {
    let controller = super::controller::TestController::start();
    controller.set_node_password(password);
    let yaml = || {
        format!(
            "admin:\n  listen: 127.0.0.1:{}\n  token: {token}\n{}",
            free_port(),
            // With heartbeats, polls every 30 s only (a leasegate still asks
            // at once when a topology promotes its node).
            controller.yaml(if by == LeaseBy::Pull { 200 } else { 30_000 }, 10_000)
        )
    };
    let start = |id: &str| match password {
        Some(pw) => Node::start_with_password(id, pw, "block-write", &yaml()),
        None => Node::start_with(id, "block-write", &yaml()),
    };
    let (Some(a), Some(b)) = (start(A_ID), start(B_ID)) else {
        return None;
    };
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", a.proxy.port),
        format!("127.0.0.1:{}", b.proxy.port),
    );
    let mut shard = vec![(A_ID, a_addr.as_str(), "master"), (B_ID, &b_addr, "slave")];
    shard.extend(extra.iter().map(|(id, addr)| (*id, *addr, "slave")));
    controller.set_topology(1, vec![shard]);
    controller
        .push()
        .expect("the controller pushes the topology");
    if by == LeaseBy::Heartbeat {
        controller.set_lease_heartbeat(Some(600_000));
        let reply = controller
            .heartbeat(&a_addr, A_ID, 600_000)
            .expect("heartbeat");
        assert!(reply.starts_with('$'), "heartbeat: {reply}");
    }
    let mut app = a.proxy.client();
    if let Some(pw) = password {
        assert_eq!(
            app.cmd(&["AUTH", pw]),
            Reply::ok(),
            "AUTH through leasegate"
        );
    }
    takes_writes(&mut app, Instant::now(), PATIENCE, "A never got its lease");
    link_up(&mut b.kvrocks.client_auth(password));
    Some((controller, a, b))
}

/// kvrocks-controller's failover (PR #389) of the shard from `a` to `b`,
/// driven step by step through the leasegates: `CLIENT PAUSE WRITE` on A,
/// wait for B's sequence to reach A's, the new topology (at `version`) to
/// both, B's lease by heartbeat, `CLIENT UNPAUSE` on A.
pub fn pr389_failover_by_hand(a: (&str, &Node), b: (&str, &Node), version: u64) {
    let (mut direct_a, mut direct_b) = (a.1.kvrocks.client(), b.1.kvrocks.client());
    let mut ctl_a = a.1.proxy.client();
    assert_eq!(
        ctl_a.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]),
        Reply::ok()
    );
    let start = Instant::now();
    loop {
        let master = sequence(&mut direct_a, "master_repl_offset");
        if master > 0 && sequence(&mut direct_b, "slave_repl_offset") >= master {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the replica never caught up");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let next = topology(b, Some(a));
    b.1.set_nodes(&next, version);
    a.1.set_nodes(&next, version);
    let beat = super::heartbeat(&mut b.1.proxy.client(), b.0, 600_000, version);
    assert!(!beat.is_error(), "{beat:?}");
    assert_eq!(ctl_a.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
}

/// The admin token of [`standalone`]'s leasegates.
pub const TOKEN: &str = "tk";

/// A standalone Kvrocks node and its leasegate as the failover tests run
/// it (admin API on, loopback is the controller, `block-write`), the node
/// probed every `probe_ms`; with `password`, Kvrocks' `requirepass` and
/// `masterauth` and leasegate's `backend.password`.
pub fn standalone(
    id: &str,
    password: Option<&str>,
    probe_ms: u64,
) -> Option<(KvrocksServer, Proxy)> {
    let kvrocks = match password {
        Some(pw) => KvrocksServer::start_with(false, &["--requirepass", pw, "--masterauth", pw])?,
        None => KvrocksServer::start(false)?,
    };
    let mut backend = format!("backend:\n  addr: {}\n", kvrocks.addr());
    if let Some(pw) = password {
        backend.push_str(&format!("  password: {pw}\n"));
    }
    let proxy = Proxy::start_with_backend_yaml(
        &backend,
        &format!(
            "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: {probe_ms}\n",
            free_port()
        ),
    );
    Some((kvrocks, proxy))
}

pub fn failover(from: &Proxy, to: &Proxy) -> String {
    let (status, report) = super::post_failover(
        from,
        to,
        TOKEN,
        r#""sync_timeout_ms":3000,"pause_timeout_ms":5000"#,
    );
    assert_eq!(status, 200, "{report}");
    report
}

/// Two standalone Kvrocks nodes, B replicating A, each with its leasegate;
/// A's holds the lease (and B's knows it).
pub fn standalone_pair() -> Option<((KvrocksServer, Proxy), (KvrocksServer, Proxy))> {
    standalone_pair_with(None, 100)
}

/// [`standalone_pair`] with [`standalone`]'s `password` and `probe_ms`.
pub fn standalone_pair_with(
    password: Option<&str>,
    probe_ms: u64,
) -> Option<((KvrocksServer, Proxy), (KvrocksServer, Proxy))> {
    let (Some((ka, pa)), Some((kb, pb))) = (
        standalone(A_ID, password, probe_ms),
        standalone(B_ID, password, probe_ms),
    ) else {
        return None;
    };
    let mut b_direct = kb.client_auth(password);
    assert_eq!(
        b_direct.cmd(&["SLAVEOF", "127.0.0.1", &ka.port.to_string()]),
        Reply::ok()
    );
    link_up(&mut b_direct);
    for p in [&pa, &pb] {
        assert!(!super::heartbeat(&mut p.client(), A_ID, 600_000, 1).is_error());
    }
    Some(((ka, pa), (kb, pb)))
}
