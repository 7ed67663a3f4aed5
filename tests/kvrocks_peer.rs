//! Kvrocks wire differences, against a scripted RESP peer that answers the
//! way Kvrocks does (Kvrocks itself cannot be installed here): `INFO
//! replication` with RocksDB sequence numbers, Kvrocks' `ROLE` shapes, and
//! `CLUSTERX` commands that succeed on the node.

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::scripted::{bulk, serve_commands};
use support::{info_fields, Proxy, Reply, PATIENCE};

const ME: &str = "cccccccccccccccccccccccccccccccccccccccc";
const OTHER: &str = "dddddddddddddddddddddddddddddddddddddddd";

#[derive(Default)]
struct NodeState {
    slave: bool,
    sequence: u64,
    node_id: Option<String>,
    seen: Vec<String>,
}

/// A scripted node speaking Kvrocks' replies.
struct ScriptedKvrocks {
    port: u16,
    state: Arc<Mutex<NodeState>>,
}

impl ScriptedKvrocks {
    fn start(sequence: u64) -> ScriptedKvrocks {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(NodeState {
            sequence,
            ..NodeState::default()
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        ScriptedKvrocks { port, state }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve(conn: TcpStream, state: &Mutex<NodeState>) {
    serve_commands(conn, |args| answer(args, state));
}

fn answer(args: &[String], state: &Mutex<NodeState>) -> Vec<u8> {
    let mut s = state.lock().expect("state");
    s.seen.push(args.join(" "));
    let name = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    match (name.as_str(), sub.as_str()) {
        ("command", _) => b"-ERR unknown command `COMMAND`\r\n".to_vec(),
        ("ping", _) => b"+PONG\r\n".to_vec(),
        ("set", _) => {
            s.sequence += 1;
            b"+OK\r\n".to_vec()
        }
        ("info", _) if s.slave => bulk(&format!(
            "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.9\r\nmaster_port:6666\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:{}\r\n",
            s.sequence
        )),
        ("info", _) => bulk(&format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.2,port=6666,offset={0},lag=0\r\nmaster_repl_offset:{0}\r\n",
            s.sequence
        )),
        ("role", _) if s.slave => {
            let seq = s.sequence.to_string();
            let mut out = b"*5\r\n".to_vec();
            for part in ["slave", "127.0.0.9", "6666", "connected", &seq] {
                out.extend(bulk(part));
            }
            out
        }
        ("role", _) => format!("*3\r\n{}:{}\r\n*0\r\n", String::from_utf8_lossy(&bulk("master")), s.sequence).into_bytes(),
        ("clusterx", "setnodeid") => {
            s.node_id = args.get(2).cloned();
            b"+OK\r\n".to_vec()
        }
        ("clusterx", "setnodes") => {
            let me = s.node_id.clone().unwrap_or_default();
            if args.get(2).is_some_and(|nodes| nodes.lines().any(|l| l.starts_with(&me) && l.contains(" slave"))) {
                s.slave = true;
            }
            b"+OK\r\n".to_vec()
        }
        ("clusterx", "version") => bulk("-1"),
        _ => format!("-ERR unknown command `{name}`\r\n").into_bytes(),
    }
}

fn proxy(node: &ScriptedKvrocks) -> Proxy {
    Proxy::start(
        &node.addr(),
        "control:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 50\n",
    )
}

#[test]
fn heartbeat_reports_the_kvrocks_sequence_and_setnodes_revokes() {
    let node = ScriptedKvrocks::start(987_654);
    let proxy = proxy(&node);
    let mut ctl = proxy.client();
    // The controller's sequence on a Kvrocks node: SETNODEID, then SETNODES.
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", ME]), Reply::ok());
    let f = info_fields(&ctl.cmd(&["CLUSTERX", "HEARTBEAT", ME, "60000", "1"]));
    assert_eq!(f["role"], "master");
    assert_eq!(
        f["sequence"], "987654",
        "RocksDB sequence from INFO replication"
    );
    assert_eq!(ctl.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(
        info_fields(&ctl.cmd(&["CLUSTERX", "HEARTBEAT", ME, "60000", "1"]))["sequence"],
        "987655"
    );

    let nodes =
        format!("{OTHER} 127.0.0.9 6666 master - 0-16383\n{ME} 127.0.0.1 7000 slave {OTHER}");
    assert_eq!(
        ctl.cmd(&["CLUSTERX", "SETNODES", &nodes, "2"]),
        Reply::ok(),
        "the node accepts it"
    );
    // Demoted toward the master the topology names (unreachable here): the
    // write is refused, not applied on this node.
    let err = ctl.cmd(&["SET", "k", "v2"]);
    assert!(
        err.error_text()
            .contains("cannot reach the new master at 127.0.0.9:6666"),
        "{err:?}"
    );
    // Heartbeats are intercepted: the node never saw one.
    let seen = node.state.lock().expect("state").seen.clone();
    assert!(
        !seen
            .iter()
            .any(|c| c.to_ascii_lowercase().contains("heartbeat")),
        "{seen:?}"
    );
}

#[test]
fn the_probe_understands_kvrocks_role_replies() {
    let node = ScriptedKvrocks::start(42);
    let proxy = proxy(&node);
    let mut ctl = proxy.client();
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", ME]), Reply::ok());
    assert!(!ctl
        .cmd(&["CLUSTERX", "HEARTBEAT", ME, "60000", "1"])
        .is_error());
    assert_eq!(ctl.cmd(&["SET", "k", "v"]), Reply::ok());
    // The node turns replica behind the proxy's back (Kvrocks ROLE shape).
    node.state.lock().expect("state").slave = true;
    let start = Instant::now();
    loop {
        let reply = ctl.cmd(&["SET", "k", "v"]);
        // A SET in flight at the revocation has an unknown outcome.
        let unknown = matches!(&reply, Reply::Error(e) if e.starts_with("UNKNOWN"));
        if reply.is_error() && !unknown {
            assert!(
                reply.error_text().contains("master lease expired"),
                "{reply:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the probe never revoked the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        info_fields(&ctl.cmd(&["CLUSTERX", "HEARTBEAT", ME, "60000", "1"]))["role"],
        "slave"
    );
}
