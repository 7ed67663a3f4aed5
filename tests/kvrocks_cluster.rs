//! Real Kvrocks in cluster mode, registered by its leasegate addresses as
//! kvrocks-controller registers it: the replica reaches its master through
//! the master's leasegate, so `_db_name` (a bare line, not RESP), `replconf`,
//! `PSYNC` and the WAL stream, and a full sync's `_fetch_meta`/`_fetch_file`
//! transfers must all pass through it unchanged — even while the master's
//! lease is not valid (replication is never fenced).

mod support;

use std::time::{Duration, Instant};

use support::kvrocks::KvrocksServer;
use support::{heartbeat, Client, Proxy, Reply, PATIENCE};

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A Kvrocks node with a block-write leasegate in front of it; loopback is
/// the controller (`control.allow_from`), as the test is.
struct Node {
    kvrocks: KvrocksServer,
    proxy: Proxy,
}

impl Node {
    fn start(id: &str) -> Option<Node> {
        let kvrocks = KvrocksServer::start(true)?;
        let proxy = Proxy::start(
            &kvrocks.addr(),
            &format!(
                "node_id: {id}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n"
            ),
        );
        let mut ctl = proxy.client();
        assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", id]), Reply::ok());
        Some(Node { kvrocks, proxy })
    }

    /// The controller pushes `topology` at `version` through the leasegate.
    fn set_nodes(&self, topology: &str, version: u64) {
        let reply =
            self.proxy
                .client()
                .cmd(&["CLUSTERX", "SETNODES", topology, &version.to_string()]);
        assert_eq!(reply, Reply::ok(), "SETNODES v{version}");
    }
}

/// The shard as the controller registers it: by leasegate addresses.
fn topology(master: (&str, &Node), replica: Option<(&str, &Node)>) -> String {
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

/// Reads `key` on the replica's node directly (READONLY: a cluster replica
/// serves reads only when asked to).
fn replica_value(replica: &mut Client, key: &str) -> Reply {
    replica.cmd(&["GET", key])
}

fn wait_for(replica: &mut Client, key: &str, want: &str) {
    let start = Instant::now();
    loop {
        let got = replica_value(replica, key);
        if got == Reply::bulk(want) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE * 3,
            "the replica never got {key}={want} (last: {got:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn info_field(c: &mut Client, field: &str) -> Option<String> {
    let text = c.cmd(&["INFO", "replication"]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

#[test]
fn a_replica_syncs_through_its_masters_leasegate_fully_and_incrementally() {
    let (Some(a), Some(b)) = (Node::start(A_ID), Node::start(B_ID)) else {
        return;
    };
    a.set_nodes(&topology((A_ID, &a), None), 1);
    let mut ctl = a.proxy.client();
    heartbeat(&mut ctl, A_ID, 600_000, 1);
    let mut app = a.proxy.client();
    // Written before the replica exists: it gets them by a full sync.
    for i in 0..100 {
        assert_eq!(app.cmd(&["SET", &format!("before-{i}"), "x"]), Reply::ok());
    }
    // The controller adds B as A's replica; B links to A's leasegate.
    let shard = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&shard, 2);
    b.set_nodes(&shard, 2);
    let mut replica = b.kvrocks.client();
    assert_eq!(replica.cmd(&["READONLY"]), Reply::ok());
    wait_for(&mut replica, "before-99", "x");
    assert_eq!(info_field(&mut replica, "role").as_deref(), Some("slave"));
    assert_eq!(
        info_field(&mut replica, "master_port"),
        Some(a.proxy.port.to_string()),
        "B replicates from A's leasegate address"
    );
    // Written after: the WAL stream carries them.
    assert_eq!(app.cmd(&["SET", "after", "y"]), Reply::ok());
    wait_for(&mut replica, "after", "y");

    // Fence A (a heartbeat naming B): writes stop, replication does not.
    heartbeat(&mut ctl, B_ID, 600_000, 2);
    let fenced = app.cmd(&["SET", "fenced", "z"]);
    assert!(
        fenced.error_text().contains("master lease expired"),
        "{fenced:?}"
    );
    let mut direct = a.kvrocks.client();
    assert_eq!(direct.cmd(&["SET", "behind-the-proxy", "w"]), Reply::ok());
    wait_for(&mut replica, "behind-the-proxy", "w");
    assert_eq!(replica_value(&mut replica, "fenced"), Reply::Nil);
}

/// Kvrocks' `_db_name` answer is a bare line; leasegate passes it as it is
/// and the connection goes on.
#[test]
fn db_name_is_a_bare_line_and_the_connection_goes_on() {
    let Some(a) = Node::start(A_ID) else {
        return;
    };
    let mut c = a.proxy.client();
    c.send_raw(b"*1\r\n$8\r\n_db_name\r\n");
    let mut line = Vec::new();
    let start = Instant::now();
    while !line.ends_with(b"\r\n") {
        assert!(start.elapsed() < PATIENCE, "no answer to _db_name");
        if let Some(b) = c.read_byte() {
            line.push(b);
        }
    }
    assert!(
        !line.starts_with(b"-") && line.len() > 2,
        "{}",
        String::from_utf8_lossy(&line)
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}
