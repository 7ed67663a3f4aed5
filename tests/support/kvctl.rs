//! The REAL Apache kvrocks-controller (`kvctl-server` 1.2.0, from
//! `../shared/kvrocks-controller/`, or `$LEASEGATE_KVCTL`) on free loopback
//! ports, and a shard it runs behind leasegates: what the test controller
//! (`controller.rs`) only imitates — its node ids, its `AUTH`, its
//! `CLUSTERX SETNODEID/SETNODES`, its probes and failovers — checked against
//! the real thing.
//!
//! It needs no external store: its embedded raft engine serves one node from
//! its own data directory, which survives [`RealController::restart`]. No
//! package ships the binary; when it is missing, [`real_shard`] returns
//! `None` and the test says so on stderr (as [`super::kvrocks`] does).
//!
//! Observed (2026-12-04): with `heartbeat_seconds: 1` the fastest election
//! is `election_seconds: 2` (it must exceed the heartbeat, or the server
//! panics); the HTTP API listens 2-3 s after start, sometimes before the
//! leader is elected, so readiness also asks `GET /api/v1/raft/peers` for a
//! leader. A restart keeps `cluster_state: new`: with a WAL in `data_dir`
//! the engine restarts from it (even after SIGKILL).
//!
//! A group can also be placed in a network lab's hosts
//! ([`RealController::start_group_placed`]): each member in a namespace of
//! its choice, the members peering over routable addresses, so that a real
//! partition (`netns`) splits the group.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::controller::{CLUSTER, NAMESPACE};
use super::kvrocks::{link_up, takes_writes, Node};
use super::{free_port, http, http_at, wait_listening_on, Client, Reply, PATIENCE};

/// Seconds between the controller's probes, and failed probes before it
/// fails a master over: its failure detection time is their product.
pub const PING_INTERVAL_S: u64 = 1;
pub const MAX_PING_COUNT: u64 = 3;

/// Where the kvrocks-controller server binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LEASEGATE_KVCTL").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/kvrocks-controller/kvctl-server"),
        ),
        Some(PathBuf::from(
            "/work/shared/kvrocks-controller/kvctl-server",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A running `kvctl-server`, killed (and its directory removed) on drop.
pub struct RealController {
    /// The HTTP API's port.
    pub port: u16,
    /// The raft peer port.
    pub raft_port: u16,
    /// Its raft id, and every member's raft peer URL (its own alone unless
    /// it is one of a [`Self::start_group`]).
    id: u64,
    peers: Vec<String>,
    /// The address its HTTP API binds (127.0.0.1 unless
    /// [`Self::start_bound`] said otherwise).
    bind: [u8; 4],
    /// The network namespace it runs in (`None`: the test's), and the
    /// address the test reaches its HTTP API at ([`Placement`]).
    netns: Option<String>,
    api_ip: String,
    bin: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RealController {
    /// Starts it and waits until it has elected itself leader; `None` when
    /// the binary is not here.
    pub fn start() -> Option<RealController> {
        RealController::start_bound([127, 0, 0, 1])
    }

    /// [`Self::start`] with its HTTP API bound to `bind` (`[0, 0, 0, 0]`:
    /// every address of the test's namespace, for leasegates in network
    /// namespaces that reach it over their links; the test still calls it
    /// on 127.0.0.1).
    pub fn start_bound(bind: [u8; 4]) -> Option<RealController> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var("LEASEGATE_REQUIRE_KVCTL").as_deref() != Ok("1"),
                "kvrocks-controller is required (LEASEGATE_REQUIRE_KVCTL=1) but was not found; set LEASEGATE_KVCTL"
            );
            eprintln!(
                "SKIPPED: no kvrocks-controller binary (set LEASEGATE_KVCTL to run this test)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = RealController {
            port: 0,
            raft_port: 0,
            id: 1,
            peers: Vec::new(),
            bind,
            netns: None,
            api_ip: "127.0.0.1".into(),
            bin,
            child: None,
            dir,
        };
        for _ in 0..5 {
            (c.port, c.raft_port) = (free_port(), free_port());
            c.peers = vec![loopback_peer(c.raft_port)];
            match c.launch() {
                Ok(()) => return Some(c),
                Err(e) => eprintln!("kvctl-server could not start ({e}); trying other ports"),
            }
        }
        panic!(
            "kvctl-server could not start on 5 pairs of free ports\n{}",
            c.log_tail()
        );
    }

    /// `n` controllers forming one raft group (as operators run it for
    /// availability), each waited for until it knows the group's leader;
    /// `None` when the binary is not here.
    pub fn start_group(n: u64) -> Option<Vec<RealController>> {
        let here = Placement {
            netns: None,
            bind: [127, 0, 0, 1],
            raft_ip: "127.0.0.1".into(),
            api_ip: "127.0.0.1".into(),
        };
        let n = usize::try_from(n).expect("a small group");
        RealController::start_group_placed(&vec![here; n])
    }

    /// A raft group of one controller per [`Placement`] (raft ids 1, 2,
    /// ... in that order), each in its namespace, the members reaching each
    /// other at their placements' `raft_ip`s: a group split by a real
    /// network partition (`netns::Lab`). Started in that order, each once
    /// the one before listens (2-3 s apart: the first, campaigning alone
    /// meanwhile, has led the group every time so far), then each waited
    /// for until it knows the group's leader; `None` when the binary is
    /// not here.
    pub fn start_group_placed(placements: &[Placement]) -> Option<Vec<RealController>> {
        let Some(bin) = binary() else {
            // Says SKIPPED (or fails where the binary is required).
            return RealController::start().map(|_| Vec::new());
        };
        let raft_ports: Vec<u16> = placements.iter().map(|_| free_port()).collect();
        let peers: Vec<String> = placements
            .iter()
            .zip(&raft_ports)
            .map(|(p, port)| format!("http://{}:{port}", p.raft_ip))
            .collect();
        let mut group: Vec<RealController> = placements
            .iter()
            .zip(1..)
            .map(|(p, id)| RealController {
                port: free_port(),
                raft_port: raft_ports[(id - 1) as usize],
                id,
                peers: peers.clone(),
                bind: p.bind,
                netns: p.netns.clone(),
                api_ip: p.api_ip.clone(),
                bin: bin.clone(),
                child: None,
                dir: tempfile::tempdir().expect("temp dir"),
            })
            .collect();
        for c in &mut group {
            c.spawn()
                .unwrap_or_else(|e| panic!("kvctl-server {}: {e}", c.id));
        }
        for c in &group {
            c.wait_leader();
        }
        Some(group)
    }

    /// The raft id of the leader this controller knows (0: none).
    pub fn leader(&self) -> u64 {
        let (_, peers) = http_at(
            &self.api_ip,
            self.port,
            "GET",
            "/api/v1/raft/peers",
            None,
            None,
        );
        serde_json::from_str::<serde_json::Value>(&peers)
            .ok()
            .and_then(|v| v["data"]["leader"].as_u64())
            .unwrap_or(0)
    }

    /// Its raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) its process: to the rest of
    /// its group, a controller cut off.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().map(|c| c.id()).expect("running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ctl.log")
    }

    /// The last lines of its log (JSON lines, both runs after a restart).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Writes the config and starts the server on `self.port`.
    fn launch(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_leader();
        Ok(())
    }

    /// Writes the config and starts the server on `self.port`, without
    /// waiting for a leader.
    fn spawn(&mut self) -> Result<(), String> {
        let config = self.dir.path().join("ctl.yaml");
        let peers: String = self
            .peers
            .iter()
            .map(|url| format!("    - \"{url}\"\n"))
            .collect();
        let yaml = format!(
            "addr: \"{}:{}\"\nstorage_type: raft\nraft:\n  id: {}\n  data_dir: \"{}\"\n  cluster_state: \"new\"\n  peers:\n{peers}  heartbeat_seconds: 1\n  election_seconds: 2\ncontroller:\n  failover:\n    ping_interval_seconds: {PING_INTERVAL_S}\n    max_ping_count: {MAX_PING_COUNT}\n",
            std::net::Ipv4Addr::from(self.bind),
            self.port,
            self.id,
            self.dir.path().join("raft").display(),
        );
        std::fs::write(&config, yaml).expect("write kvctl-server config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open kvctl-server log");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        // (`ip netns exec` execs the server: the child is the server.)
        let mut child = command
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kvctl-server");
        wait_listening_on(self.bind, self.port, &mut child, "kvctl-server")
            .map_err(|s| s.to_string())?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the API answers and raft has a leader (it may answer
    /// `GET /api/v1/namespaces` before that, and refuse writes).
    fn wait_leader(&self) {
        let start = Instant::now();
        loop {
            let (_, ns) = self.call("GET", "/api/v1/namespaces", None);
            let (_, peers) = self.call("GET", "/api/v1/raft/peers", None);
            let leader = serde_json::from_str::<serde_json::Value>(&peers)
                .ok()
                .and_then(|v| v["data"]["leader"].as_u64());
            if ns.starts_with("{\"data\":") && leader.is_some_and(|l| l != 0) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "kvctl-server elected no leader within {PATIENCE:?} (last: {ns} / {peers})\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.api_ip, self.port)
    }

    /// leasegate's `controller:` block for this controller (as
    /// `TestController::yaml`), with its failure detection time.
    pub fn yaml(&self, poll_interval_ms: u64, ttl_ms: u64) -> String {
        self.yaml_via(&self.url(), poll_interval_ms, ttl_ms)
    }

    /// [`Self::yaml`] for a leasegate that reaches this controller at
    /// `url` (another address of a [`Self::start_bound`] controller).
    pub fn yaml_via(&self, url: &str, poll_interval_ms: u64, ttl_ms: u64) -> String {
        format!(
            "controller:\n  url: {url}\n  namespace: {NAMESPACE}\n  cluster: {CLUSTER}\n  poll_interval_ms: {poll_interval_ms}\n  ttl_ms: {ttl_ms}\n  timeout_ms: 500\n  failure_detection_ms: {}\n",
            PING_INTERVAL_S * MAX_PING_COUNT * 1000
        )
    }

    /// Kills it (SIGKILL); the raft directory stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it and starts it again on the same ports from the same raft
    /// directory (the stored namespaces and clusters survive); waits for
    /// its leader again. The port is not held meanwhile: wait for it.
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        while let Err(e) = self.launch() {
            assert!(
                start.elapsed() < PATIENCE,
                "kvctl-server could not start again on {} ({e})\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
        let body = body.map(|b| b.to_string());
        http_at(&self.api_ip, self.port, method, path, None, body.as_deref())
    }

    fn cluster_path(&self) -> String {
        format!("/api/v1/namespaces/{NAMESPACE}/clusters/{CLUSTER}")
    }

    /// Creates the namespace and the cluster (one shard of all `nodes`, the
    /// first its master); the controller then assigns node ids and sends
    /// them `[AUTH <password>,] CLUSTERX SETNODEID, CLUSTERX SETNODES`.
    pub fn create_cluster(&self, nodes: &[String], password: Option<&str>) {
        let ns = serde_json::json!({ "namespace": NAMESPACE });
        let (code, body) = self.call("POST", "/api/v1/namespaces", Some(&ns));
        assert!(code < 300, "create namespace: {code} {body}");
        let mut cluster = serde_json::json!({
            "name": CLUSTER, "nodes": nodes, "replicas": nodes.len(),
        });
        if let Some(pw) = password {
            cluster["password"] = pw.into();
        }
        let path = format!("/api/v1/namespaces/{NAMESPACE}/clusters");
        // Raft applies a write after answering it: the namespace (then the
        // cluster) may be "not found" for a moment.
        self.until_found(
            || self.call("POST", &path, Some(&cluster)),
            "create cluster",
        );
        self.until_found(
            || self.call("GET", &self.cluster_path(), None),
            "read cluster",
        );
    }

    /// Calls `call` until it answers anything but "... not found"; asserts
    /// success.
    fn until_found(&self, call: impl Fn() -> (u16, String), what: &str) {
        let start = Instant::now();
        loop {
            let (code, body) = call();
            if code < 300 {
                return;
            }
            assert!(
                body.contains("not found") && start.elapsed() < PATIENCE,
                "{what}: {code} {body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `data.cluster` object: `version`, `shards[i].nodes[j]` with
    /// `id`, `addr`, `role`, `password`.
    pub fn cluster(&self) -> serde_json::Value {
        let (code, body) = self.call("GET", &self.cluster_path(), None);
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("cluster answer is not JSON ({e}): {code} {body}"));
        assert!(
            v["data"]["cluster"].is_object(),
            "no cluster: {code} {body}"
        );
        v["data"]["cluster"].clone()
    }

    /// The controller's topology as the `CLUSTERX SETNODES` it pushes:
    /// `(nodes text, version)`.
    pub fn setnodes(&self) -> (String, u64) {
        let (code, body) = self.call("GET", &self.cluster_path(), None);
        let cluster = leasegate::kvrocks::controller::parse_cluster(body.as_bytes())
            .unwrap_or_else(|e| panic!("cluster answer ({code}): {e}: {body}"));
        let text = cluster
            .setnodes_text()
            .unwrap_or_else(|e| panic!("SETNODES text of {body}: {e}"));
        (text, cluster.version)
    }

    pub fn version(&self) -> u64 {
        let cluster = self.cluster();
        cluster["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {cluster}"))
    }

    /// The master of shard `shard`: `(id, addr)`.
    pub fn master_of(&self, shard: usize) -> (String, String) {
        let cluster = self.cluster();
        let nodes = cluster["shards"][shard]["nodes"].as_array();
        nodes
            .into_iter()
            .flatten()
            .find(|n| n["role"] == "master")
            .and_then(|n| Some((n["id"].as_str()?.into(), n["addr"].as_str()?.into())))
            .unwrap_or_else(|| panic!("no master in shard {shard}: {cluster}"))
    }

    /// `POST …/shards/{shard}/failover` to `preferred_node_id`: the status
    /// and the body (it answers at once; the topology follows).
    pub fn failover(&self, shard: usize, preferred_node_id: &str) -> (u16, String) {
        let path = format!("{}/shards/{shard}/failover", self.cluster_path());
        let body = serde_json::json!({ "preferred_node_id": preferred_node_id });
        self.call("POST", &path, Some(&body))
    }

    /// Waits until the cluster's version is at least `at_least`; returns it.
    pub fn wait_version(&self, at_least: u64, within: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.version();
            if v >= at_least {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "the cluster stayed at version {v} (< {at_least}) for {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The raft peer URL of a member on the test's loopback.
fn loopback_peer(raft_port: u16) -> String {
    format!("http://127.0.0.1:{raft_port}")
}

/// Where a member of a [`RealController::start_group_placed`] group runs.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The network namespace it runs in (`ip netns exec`; `None`: the
    /// test's).
    pub netns: Option<String>,
    /// The address its HTTP API binds there (`[0, 0, 0, 0]`: every address
    /// of its namespace).
    pub bind: [u8; 4],
    /// Its raft peer URL's address: where it listens for its peers and
    /// where every other member reaches it, whichever namespace it is in.
    pub raft_ip: String,
    /// The address the test's namespace reaches its HTTP API at.
    pub api_ip: String,
}

impl Drop for RealController {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- kvctl-server log (tail) ---\n{}", self.log_tail());
        }
        self.stop();
    }
}

/// How [`real_shard`] sets its nodes and leasegates up.
#[derive(Debug, Clone)]
pub struct RealShardOptions {
    /// Kvrocks' `requirepass`/`masterauth`, leasegate's `backend.password`
    /// and the password the controller registers (and sends as `AUTH`).
    pub password: Option<String>,
    /// leasegate's `control.password`: the same as `password` where the
    /// controller is to be recognised by its `AUTH` (the usual deployment).
    /// Without one, loopback is trusted (`control.allow_from`).
    pub control_password: Option<String>,
    pub lease_mode: &'static str,
    pub poll_interval_ms: u64,
    /// Below the controller's failure detection (3 s), margin included.
    pub ttl_ms: u64,
    /// More top-level YAML for both leasegates.
    pub extra_yaml: String,
    /// The admin API's bearer token.
    pub token: String,
    /// Controllers in the raft group (1: one alone). With more, the
    /// leasegates and the test ask one that is a follower at the start.
    pub controllers: u64,
    /// The leasegates list every controller of the group in
    /// `controller.url` (that follower first), rather than that one alone.
    pub every_controller: bool,
}

impl Default for RealShardOptions {
    fn default() -> Self {
        RealShardOptions {
            password: None,
            control_password: None,
            lease_mode: "block-write",
            poll_interval_ms: 100,
            ttl_ms: 1500,
            extra_yaml: String::new(),
            token: "tk".into(),
            controllers: 1,
            every_controller: false,
        }
    }
}

impl RealShardOptions {
    /// With `password` for the nodes and as the control password.
    pub fn with_password(password: &str) -> Self {
        RealShardOptions {
            password: Some(password.into()),
            control_password: Some(password.into()),
            ..Default::default()
        }
    }
}

/// A shard registered at the real controller: A master, B its replica,
/// each Kvrocks behind its own leasegate and known by the leasegate's
/// address; ids as the controller assigned them.
pub struct RealShard {
    /// The controller the leasegates and the test ask.
    pub controller: RealController,
    /// The rest of its raft group, if any.
    pub others: Vec<RealController>,
    pub a: Node,
    pub b: Node,
    pub a_id: String,
    pub b_id: String,
    pub password: Option<String>,
}

impl RealShard {
    /// `leasegate failover --from <from> --to <to>`, which must succeed;
    /// the printed report.
    pub fn failover_by_leasegate(&self, from: &Node, to: &Node) -> String {
        self.failover_by_leasegate_with(from, to, &[])
    }

    /// [`RealShard::failover_by_leasegate`] with more options (e.g.
    /// `--cluster-timing`).
    pub fn failover_by_leasegate_with(&self, from: &Node, to: &Node, extra: &[&str]) -> String {
        let out = super::failover_command_with(
            from.proxy.admin_port(),
            to.proxy.admin_port(),
            &RealShardOptions::default().token,
            extra,
        );
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "failover failed: {printed} {}\ncontroller log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.controller.log_tail()
        );
        assert!(printed.contains("success"), "{printed}");
        printed
    }

    /// A client of `node`'s leasegate, authenticated when passworded.
    pub fn client(&self, node: &Node) -> Client {
        let mut c = node.proxy.client();
        if let Some(pw) = &self.password {
            assert_eq!(c.cmd(&["AUTH", pw]), Reply::ok(), "AUTH through leasegate");
        }
        c
    }

    /// A direct client of `node`'s Kvrocks, authenticated when passworded.
    pub fn direct(&self, node: &Node) -> Client {
        node.kvrocks.client_auth(self.password.as_deref())
    }
}

/// Starts the controller and two nodes, registers them, and returns once a
/// write through A's leasegate succeeds and B's replication link is up.
/// `None` when the controller or Kvrocks binary is missing.
pub fn real_shard(opts: &RealShardOptions) -> Option<RealShard> {
    let (controller, others) = if opts.controllers > 1 {
        let mut group = RealController::start_group(opts.controllers)?;
        let leader = group[0].leader();
        let follower = group
            .iter()
            .position(|c| c.id() != leader)
            .expect("a group of several has a follower");
        (group.remove(follower), group)
    } else {
        (RealController::start()?, Vec::new())
    };
    let pw = opts.password.as_deref();
    let kvrocks_args: Vec<&str> = match pw {
        Some(pw) => vec!["--requirepass", pw, "--masterauth", pw],
        None => vec![],
    };
    let control = match &opts.control_password {
        Some(cp) => format!("control:\n  password: {cp}\n"),
        None => "control:\n  allow_from: [127.0.0.1]\n".into(),
    };
    let controller_yaml = if opts.every_controller {
        let urls: Vec<String> = std::iter::once(&controller)
            .chain(&others)
            .map(RealController::url)
            .collect();
        controller.yaml_via(
            &format!("[{}]", urls.join(", ")),
            opts.poll_interval_ms,
            opts.ttl_ms,
        )
    } else {
        controller.yaml(opts.poll_interval_ms, opts.ttl_ms)
    };
    let yaml = || {
        format!(
            "{control}lease:\n  mode: {}\n  probe_interval_ms: 200\n  safety_margin_ms: 100\nadmin:\n  listen: 127.0.0.1:{}\n  token: {}\n{controller_yaml}{}",
            opts.lease_mode,
            free_port(),
            opts.token,
            opts.extra_yaml
        )
    };
    let a = Node::start_for_controller(&kvrocks_args, pw, &yaml())?;
    let b = Node::start_for_controller(&kvrocks_args, pw, &yaml())?;
    let addrs = [&a, &b].map(|n| format!("127.0.0.1:{}", n.proxy.port));
    let registered = Instant::now();
    // Registered at the group's leader: a follower stores a cluster sent
    // to it, but the leader's controller does not take it up (no node
    // gets its id or topology) until it next becomes leader.
    let leader = controller.leader();
    let registrar = others
        .iter()
        .find(|c| c.id() == leader)
        .unwrap_or(&controller);
    registrar.create_cluster(&addrs, pw);
    let cluster = registrar.cluster();
    let id = |i: usize| {
        let node = &cluster["shards"][0]["nodes"][i];
        assert_eq!(node["addr"], addrs[i].as_str(), "{cluster}");
        node["id"].as_str().map(str::to_string).expect("a node id")
    };
    let shard = RealShard {
        a_id: id(0),
        b_id: id(1),
        controller,
        others,
        a,
        b,
        password: opts.password.clone(),
    };
    assert_eq!(shard.controller.master_of(0).0, shard.a_id, "{cluster}");
    takes_writes(
        &mut shard.client(&shard.a),
        registered,
        PATIENCE,
        "A never got its lease from the real controller",
    );
    let writable = registered.elapsed();
    link_up(&mut shard.direct(&shard.b));
    // Settled: B's poller has twice seen the cluster name it slave. (A
    // poller counts a revocation against the version of its next answer: a
    // failover before that would find B fenced at the promoting version.)
    while polls(&shard.b, "revoked") < 2 {
        assert!(
            registered.elapsed() < PATIENCE,
            "B's leasegate never polled the cluster"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "real shard: A writable {writable:?}, B linked {:?} after registration",
        registered.elapsed()
    );
    Some(shard)
}

/// `node`'s leasegate's controller polls with `outcome` (`renewed`,
/// `revoked`, `fenced`, ...), from its `/metrics`.
pub fn polls(node: &Node, outcome: &str) -> u64 {
    let (_, metrics) = http(node.proxy.admin_port(), "GET", "/metrics", None, None);
    let series = format!("leasegate_controller_polls_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What the controller at `controller` (its URL) answered `node`'s
/// leasegate's polls with `answer` (`led`, `no_leader`, `error`, `late`),
/// from its `/metrics`.
pub fn answers(node: &Node, controller: &str, answer: &str) -> u64 {
    let (_, metrics) = http(node.proxy.admin_port(), "GET", "/metrics", None, None);
    let series = format!(
        "leasegate_controller_answers_total{{controller=\"{controller}\",answer=\"{answer}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `node`'s leasegate holds a valid lease (its `/v1/status`).
pub fn wait_master(node: &Node, what: &str) {
    let start = Instant::now();
    loop {
        let (code, body) = super::http(node.proxy.admin_port(), "GET", "/v1/status", None, None);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if code == 200 && status["lease"]["valid"] == true {
            return;
        }
        assert!(start.elapsed() < PATIENCE * 2, "{what}: no lease ({body})");
        std::thread::sleep(Duration::from_millis(20));
    }
}
