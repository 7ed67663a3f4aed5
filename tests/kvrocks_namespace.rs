//! Kvrocks namespace tokens through a failover: `AUTH <token>` on Kvrocks
//! selects a namespace (the admin password, `requirepass`, selects the
//! default one). To leasegate such a token is an ordinary credential: it
//! goes to the node, the session remembers it, and a hand-over replays it
//! at the new master, so the session goes on writing into its namespace.
//!
//! Standalone Kvrocks (not cluster mode) with `requirepass` and
//! `masterauth`, and `repl-namespace-enabled yes`: Kvrocks refuses
//! `NAMESPACE ADD` ("modify namespace requires the server is running with a
//! configuration file or enabled namespace replication") when it runs
//! without a configuration file, as the tests start it, unless namespaces
//! are replicated; replicated, they are added on the master only (a replica
//! answers "namespace is read-only for slave") and reach the replica by
//! replication, so the token means the same namespace on both nodes.

mod support;

use std::time::{Duration, Instant};

use support::controller::TestController;
use support::kvrocks::{handovers, info_field, link_up, takes_writes, KvrocksServer, A_ID, B_ID};
use support::load::Writers;
use support::{controller_client, free_port, heartbeat, Client, Proxy, Reply, PATIENCE};

/// Kvrocks' `requirepass` (the admin's, default namespace) and
/// `masterauth`; each leasegate's `backend.password` and `control.password`.
const ADMIN: &str = "admin-secret";
const NAMESPACE: &str = "ns1";
const NS_TOKEN: &str = "token1";
const TOKEN: &str = "tk";

/// A standalone Kvrocks with the admin password and namespace replication,
/// and its leasegate (admin API on; `node_id` = `id`).
fn node(id: &str) -> Option<(KvrocksServer, Proxy)> {
    node_with(id, &["--repl-namespace-enabled", "yes"])
}

/// [`node`] with other Kvrocks options than namespace replication.
fn node_with(id: &str, options: &[&str]) -> Option<(KvrocksServer, Proxy)> {
    node_beside(id, options, "")
}

/// [`node_with`], its leasegate's config ending with `more`.
fn node_beside(id: &str, options: &[&str], more: &str) -> Option<(KvrocksServer, Proxy)> {
    let mut args = vec!["--requirepass", ADMIN, "--masterauth", ADMIN];
    args.extend_from_slice(options);
    let kvrocks = KvrocksServer::start_with(false, &args)?;
    let proxy = Proxy::start_with_backend_yaml(
        &format!(
            "backend:\n  addr: {}\n  password: {ADMIN}\n",
            kvrocks.addr()
        ),
        &format!(
            "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\ncontrol:\n  password: {ADMIN}\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n{more}",
            free_port()
        ),
    );
    Some((kvrocks, proxy))
}

/// `leasegate failover --from <from> --to <to>`; asserts success.
fn leasegate_failover(from: &Proxy, to: &Proxy) {
    let out = support::failover_command(from.admin_port(), to.admin_port(), TOKEN);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && printed.contains("success"),
        "failover failed: {printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
}

/// B made a replica of A, namespace `ns1` added at A (its admin), both
/// leasegates told A holds the lease, and a session in `ns1` through A's
/// leasegate that wrote `before`: A's and B's admin clients, the session.
fn set_up(
    ka: &KvrocksServer,
    kb: &KvrocksServer,
    pa: &Proxy,
    pb: &Proxy,
) -> (Client, Client, Client) {
    let mut admin_b = kb.client_auth(Some(ADMIN));
    assert_eq!(
        admin_b.cmd(&["SLAVEOF", "127.0.0.1", &ka.port.to_string()]),
        Reply::ok()
    );
    link_up(&mut admin_b);
    let mut admin_a = ka.client_auth(Some(ADMIN));
    assert_eq!(
        admin_a.cmd(&["NAMESPACE", "ADD", NAMESPACE, NS_TOKEN]),
        Reply::ok()
    );
    for p in [pa, pb] {
        let mut ctl = controller_client(p, ADMIN);
        assert!(!heartbeat(&mut ctl, A_ID, 600_000, 1).is_error());
    }
    let mut session = pa.client();
    assert_eq!(session.cmd(&["AUTH", NS_TOKEN]), Reply::ok());
    assert_eq!(session.cmd(&["SET", "before", "1"]), Reply::ok());
    (admin_a, admin_b, session)
}

/// `leasegate failover --from <from> --to <to>`, which must fail; what it
/// printed.
fn refused_failover(from: &Proxy, to: &Proxy) -> String {
    let out = support::failover_command(from.admin_port(), to.admin_port(), TOKEN);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "refused: {printed}");
    printed
}

/// Waits until `node` (a direct admin client) has namespace `ns` with `token`.
fn wait_namespace(node: &mut Client, ns: &str, token: &str) {
    let start = Instant::now();
    loop {
        let got = node.cmd(&["NAMESPACE", "GET", ns]);
        if got == Reply::bulk(token) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE * 3,
            "namespace {ns} never reached the replica (last: {got:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On `kvrocks` directly: `key` reads `want` in the namespace of
/// `NS_TOKEN`, and not at all in the default namespace (the admin's).
fn assert_in_namespace(kvrocks: &KvrocksServer, keys: &[(&str, &str)]) {
    let mut in_ns = kvrocks.client_auth(Some(NS_TOKEN));
    let mut admin = kvrocks.client_auth(Some(ADMIN));
    for (key, want) in keys {
        assert_eq!(
            in_ns.cmd(&["GET", key]),
            Reply::bulk(want),
            "{key} in namespace {NAMESPACE} on port {}",
            kvrocks.port
        );
        assert_eq!(
            admin.cmd(&["GET", key]),
            Reply::Nil,
            "{key} is not in the default namespace on port {}",
            kvrocks.port
        );
    }
}

#[test]
fn a_namespace_tokens_session_keeps_writing_into_its_namespace_after_a_failover() {
    let (Some((ka, pa)), Some((kb, pb))) = (node(A_ID), node(B_ID)) else {
        return;
    };
    let (mut admin_a, mut admin_b, mut session) = set_up(&ka, &kb, &pa, &pb);
    // The namespace, added by the admin on the master, replicated to B.
    wait_namespace(&mut admin_b, NAMESPACE, NS_TOKEN);
    assert_eq!(admin_a.cmd(&["GET", "before"]), Reply::Nil, "not default");
    // And writers that authenticate with the token, writing throughout.
    let writers = Writers::start_authenticated(pa.port, 2, "ns", Duration::ZERO, Some(NS_TOKEN));
    std::thread::sleep(Duration::from_millis(300));

    leasegate_failover(&pa, &pb);
    assert_eq!(info_field(&mut admin_b, "role").as_deref(), Some("master"));
    // The same connection, handed over to B's leasegate and B: still in ns1
    // (it reads what it wrote before, and writes there).
    assert_eq!(session.cmd(&["GET", "before"]), Reply::bulk("1"));
    assert_eq!(session.cmd(&["SET", "after", "2"]), Reply::ok());
    assert_in_namespace(&kb, &[("before", "1"), ("after", "2")]);

    // And back: A replicates B, then takes over again.
    link_up(&mut ka.client_auth(Some(ADMIN)));
    std::thread::sleep(Duration::from_millis(300));
    leasegate_failover(&pb, &pa);
    assert_eq!(info_field(&mut admin_a, "role").as_deref(), Some("master"));
    assert_eq!(session.cmd(&["GET", "after"]), Reply::bulk("2"));
    assert_eq!(session.cmd(&["SET", "back", "3"]), Reply::ok());
    std::thread::sleep(Duration::from_millis(300));

    let outcome = writers.finish();
    let moved = [&pa, &pb].map(|p| handovers(p, "success"));
    let failed = [&pa, &pb].map(|p| handovers(p, "failed"));
    eprintln!(
        "{} writes acknowledged in {NAMESPACE}, {} errors; sessions handed over by A's and B's leasegates: {moved:?}, failed {failed:?}",
        outcome.acked.len(),
        outcome.errors.len()
    );
    assert!(moved[0] > 0 && moved[1] > 0, "handed over: {moved:?}");
    assert_eq!(failed, [0, 0], "failed hand-overs");
    // Every acknowledged write is on A, in the namespace...
    outcome.assert_none_failed_or_lost(&mut ka.client_auth(Some(NS_TOKEN)), 100);
    assert_in_namespace(&ka, &[("before", "1"), ("after", "2"), ("back", "3")]);
    // ... and none in the default namespace.
    let in_default = outcome
        .acked_keys()
        .filter(|k| admin_a.cmd(&["EXISTS", k.as_str()]) != Reply::Int(0))
        .count();
    assert_eq!(in_default, 0, "acknowledged keys in the default namespace");
}

/// Without namespace replication (`repl-namespace-enabled no`, Kvrocks'
/// default; each node then keeps its namespaces in its own configuration
/// file) a replica lacks the master's namespaces: a session logged in with
/// a namespace token, moved there, could not log in again (and every
/// reconnect of its client would fail the same at its next write). The
/// failover is refused before anything is paused, naming the namespace
/// (never its token); the master keeps its writes.
#[test]
fn a_failover_to_a_node_without_the_masters_namespaces_is_refused() {
    let files = tempfile::tempdir().expect("a directory for the config files");
    let node_with_file = |id: &str, name: &str| {
        let file = files.path().join(name);
        std::fs::write(&file, "").expect("an empty config file");
        let file = file.to_string_lossy().into_owned();
        node_with(id, &["-c", &file, "--repl-namespace-enabled", "no"])
    };
    let (Some((ka, pa)), Some((kb, pb))) = (
        node_with_file(A_ID, "a.conf"),
        node_with_file(B_ID, "b.conf"),
    ) else {
        return;
    };
    let (mut admin_a, mut admin_b, mut session) = set_up(&ka, &kb, &pa, &pb);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        admin_b.cmd(&["NAMESPACE", "GET", NAMESPACE]),
        Reply::Nil,
        "B has no {NAMESPACE}"
    );

    let printed = refused_failover(&pa, &pb);
    assert!(
        printed.contains("namespaces") && printed.contains("ns1: missing there"),
        "{printed}"
    );
    assert!(
        !printed.contains(NS_TOKEN),
        "no token in the report: {printed}"
    );
    assert_eq!(info_field(&mut admin_a, "role").as_deref(), Some("master"));
    assert_eq!(session.cmd(&["SET", "after", "2"]), Reply::ok(), "A writes");
    assert_in_namespace(&ka, &[("before", "1"), ("after", "2")]);
}

/// A namespace deleted while a session logged into it is connected, its
/// token then given to another namespace: Kvrocks keeps the session in
/// the deleted namespace, but moved at a failover it would log in again
/// with the token and write into the other namespace, every write
/// acknowledged (walkthrough 39: ~10,000 such writes). The failover is
/// refused while such connections remain, and goes on once they are gone.
#[test]
fn a_failover_is_refused_while_sessions_are_in_a_deleted_namespace() {
    let (Some((ka, pa)), Some((kb, pb))) = (node(A_ID), node(B_ID)) else {
        return;
    };
    let (mut admin_a, mut admin_b, session) = set_up(&ka, &kb, &pa, &pb);
    // The namespace goes; its token now leads to another.
    assert_eq!(admin_a.cmd(&["NAMESPACE", "DEL", NAMESPACE]), Reply::ok());
    assert_eq!(
        admin_a.cmd(&["NAMESPACE", "ADD", "ns2", NS_TOKEN]),
        Reply::ok()
    );
    wait_namespace(&mut admin_b, "ns2", NS_TOKEN);

    let printed = refused_failover(&pa, &pb);
    assert!(
        printed.contains("no longer has") && printed.contains("ns1: 1 connection"),
        "{printed}"
    );
    assert_eq!(info_field(&mut admin_a, "role").as_deref(), Some("master"));
    // The session goes (its client hangs up): the failover goes on.
    drop(session);
    let start = Instant::now();
    loop {
        let out = support::failover_command(pa.admin_port(), pb.admin_port(), TOKEN);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "never went on: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(info_field(&mut admin_b, "role").as_deref(), Some("master"));
}

/// A namespace's token changed while a session logged in with the old
/// one is connected, and the old token then given to another namespace:
/// Kvrocks keeps the session in its namespace, but a login with that
/// token now leads to the other. Moved at a failover (the check before it
/// sees both namespaces on both nodes, and no session in a deleted one),
/// such a session logged in again and wrote into the other tenant's
/// namespace, every write acknowledged. It ends instead, saying why, and
/// nothing reaches the other namespace; a session that logged in with the
/// new token moves on in its namespace.
#[test]
fn a_session_whose_token_now_leads_to_another_namespace_ends_at_a_failover() {
    let (Some((ka, pa)), Some((kb, pb))) = (node(A_ID), node(B_ID)) else {
        return;
    };
    let (mut admin_a, mut admin_b, mut session) = set_up(&ka, &kb, &pa, &pb);
    let mut resp3 = pa.client();
    resp3.resp3 = true;
    let hello = resp3.cmd(&["HELLO", "3", "AUTH", "default", NS_TOKEN]);
    assert!(!hello.is_error(), "{hello:?}");
    // ns1 gets a new token; its old one goes to ns2.
    const NEW_TOKEN: &str = "token1-new";
    assert_eq!(
        admin_a.cmd(&["NAMESPACE", "SET", NAMESPACE, NEW_TOKEN]),
        Reply::ok()
    );
    assert_eq!(
        admin_a.cmd(&["NAMESPACE", "ADD", "ns2", NS_TOKEN]),
        Reply::ok()
    );
    wait_namespace(&mut admin_b, NAMESPACE, NEW_TOKEN);
    wait_namespace(&mut admin_b, "ns2", NS_TOKEN);
    let mut renewed = pa.client();
    assert_eq!(renewed.cmd(&["AUTH", NEW_TOKEN]), Reply::ok());
    // Before the failover, all three write into ns1 at A.
    for (client, key) in [
        (&mut session, "old-resp2"),
        (&mut resp3, "old-resp3"),
        (&mut renewed, "new"),
    ] {
        assert_eq!(client.cmd(&["SET", key, "1"]), Reply::ok(), "{key}");
    }

    leasegate_failover(&pa, &pb);
    assert_eq!(info_field(&mut admin_b, "role").as_deref(), Some("master"));

    for (client, key) in [(&mut session, "old-resp2"), (&mut resp3, "old-resp3")] {
        let reply = client.cmd(&["SET", key, "2"]);
        assert!(
            reply.is_error()
                && reply
                    .error_text()
                    .contains("namespace `ns2` there, not to `ns1`"),
            "{key}: {reply:?}"
        );
    }
    assert_eq!(renewed.cmd(&["SET", "new", "2"]), Reply::ok());
    // Nothing in ns2 (the old token's namespace now) on either node; ns1
    // at B has every write acknowledged.
    for kvrocks in [&ka, &kb] {
        let mut ns2 = kvrocks.client_auth(Some(NS_TOKEN));
        for key in ["old-resp2", "old-resp3", "new"] {
            assert_eq!(ns2.cmd(&["EXISTS", key]), Reply::Int(0), "{key} in ns2");
        }
    }
    let mut ns1_b = kb.client_auth(Some(NEW_TOKEN));
    for (key, want) in [
        ("before", "1"),
        ("old-resp2", "1"),
        ("old-resp3", "1"),
        ("new", "2"),
    ] {
        assert_eq!(
            ns1_b.cmd(&["GET", key]),
            Reply::bulk(want),
            "{key} in ns1 at B"
        );
    }
    assert!(
        handovers(&pa, "failed") >= 2,
        "{}",
        handovers(&pa, "failed")
    );
}

/// The same, where the session does not move but its node comes back
/// after a crash (the session waits for it and logs in again there): the
/// namespace was asked of the node after the login, not at a move, so it
/// is known where there is no node left to ask.
#[test]
fn a_session_whose_token_now_leads_to_another_namespace_ends_when_its_node_comes_back() {
    // Sessions wait for their node where a controller is polled.
    let controller = TestController::start();
    let Some((mut ka, pa)) = node_beside(
        A_ID,
        &["--repl-namespace-enabled", "yes"],
        &controller.yaml(100, 5_000),
    ) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", pa.port);
    controller.set_topology(1, vec![vec![(A_ID, &addr, "master")]]);
    let mut admin = ka.client_auth(Some(ADMIN));
    assert_eq!(
        admin.cmd(&["NAMESPACE", "ADD", NAMESPACE, NS_TOKEN]),
        Reply::ok()
    );
    let mut session = pa.client();
    assert_eq!(session.cmd(&["AUTH", NS_TOKEN]), Reply::ok());
    takes_writes(&mut session, Instant::now(), PATIENCE, "A's lease");
    assert_eq!(
        admin.cmd(&["NAMESPACE", "SET", NAMESPACE, "token1-new"]),
        Reply::ok()
    );
    assert_eq!(
        admin.cmd(&["NAMESPACE", "ADD", "ns2", NS_TOKEN]),
        Reply::ok()
    );
    assert_eq!(session.cmd(&["SET", "still", "1"]), Reply::ok());

    ka.restart();
    let mut admin = ka.client_auth(Some(ADMIN));
    // Namespaces replicated are kept in the node's data: back as they were.
    assert_eq!(
        admin.cmd(&["NAMESPACE", "GET", "ns2"]),
        Reply::bulk(NS_TOKEN)
    );
    let reply = session.cmd(&["SET", "after", "2"]);
    assert!(
        reply.is_error()
            && reply
                .error_text()
                .contains("namespace `ns2` there, not to `ns1`"),
        "{reply:?}"
    );
    let mut ns2 = ka.client_auth(Some(NS_TOKEN));
    assert_eq!(
        ns2.cmd(&["EXISTS", "after"]),
        Reply::Int(0),
        "written into ns2"
    );
    let mut ns1 = ka.client_auth(Some("token1-new"));
    assert_eq!(ns1.cmd(&["GET", "still"]), Reply::bulk("1"));
}

/// A login by `HELLO ... AUTH`, then another by `AUTH`: the connection is
/// in the second one's namespace. The replay (`AUTH`, then the HELLO as
/// the client sent it) logged it back into the first one's, which the
/// namespace check took for a token moved, ending the session (before the
/// check, it wrote into the other namespace). The HELLO is replayed as its
/// protocol version alone (a review).
#[test]
fn a_login_by_hello_then_by_auth_moves_with_the_last_one() {
    let (Some((ka, pa)), Some((kb, pb))) = (node(A_ID), node(B_ID)) else {
        return;
    };
    let (mut admin_a, mut admin_b, _session) = set_up(&ka, &kb, &pa, &pb);
    assert_eq!(
        admin_a.cmd(&["NAMESPACE", "ADD", "ns2", "token2"]),
        Reply::ok()
    );
    wait_namespace(&mut admin_b, NAMESPACE, NS_TOKEN);
    wait_namespace(&mut admin_b, "ns2", "token2");
    let mut c = pa.client();
    assert!(!c
        .cmd(&["HELLO", "2", "AUTH", "default", "token2"])
        .is_error());
    assert_eq!(c.cmd(&["AUTH", NS_TOKEN]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "hk", "1"]), Reply::ok());
    leasegate_failover(&pa, &pb);
    assert_eq!(c.cmd(&["SET", "hk", "2"]), Reply::ok());
    assert_eq!(
        kb.client_auth(Some(NS_TOKEN)).cmd(&["GET", "hk"]),
        Reply::bulk("2")
    );
    assert_eq!(
        kb.client_auth(Some("token2")).cmd(&["EXISTS", "hk"]),
        Reply::Int(0)
    );
}

/// `AUTH` and `MONITOR` pipelined: leasegate's question after the login
/// goes before the MONITOR, or not at all, never behind it, where its
/// answer would be taken for a monitor line and passed to the client (a
/// review). The client gets its two `+OK`s, then monitor lines only; RESET
/// ends the stream.
#[test]
fn a_login_pipelined_with_monitor_leaks_nothing_into_the_stream() {
    let Some((_ka, pa)) = node(A_ID) else {
        return;
    };
    let mut c = pa.client();
    let mut pipeline = support::encode(&[b"AUTH", ADMIN.as_bytes()]);
    pipeline.extend(support::encode(&[b"MONITOR"]));
    c.send_raw(&pipeline);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::ok());
    // Whatever comes now is a monitor line (the probe's, another client's).
    let mut other = pa.client();
    assert_eq!(other.cmd(&["AUTH", ADMIN]), Reply::ok());
    assert_eq!(other.cmd(&["PING", "seen"]), Reply::bulk("seen"));
    loop {
        let line = c.read();
        assert!(
            matches!(&line, Reply::Status(l) if l.starts_with(|c: char| c.is_ascii_digit())),
            "not a monitor line: {line:?}"
        );
        if line.text().contains("\"seen\"") {
            break;
        }
    }
    c.send(&["RESET"]);
    loop {
        match c.read() {
            Reply::Status(l) if l == "RESET" => break,
            Reply::Status(l) if l.starts_with(|c: char| c.is_ascii_digit()) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}

/// `CLIENT` denied at the new master's leasegate (`commands.deny`, to keep
/// clients from `CLIENT KILL`): the question after a moved session's login
/// is refused there, and the session goes on unchecked, as where the node
/// it leaves refuses it, rather than ending at every hand-over (a review).
#[test]
fn a_session_moves_where_client_is_denied() {
    let (Some((ka, pa)), Some((kb, pb))) = (
        node(A_ID),
        node_beside(
            B_ID,
            &["--repl-namespace-enabled", "yes"],
            "commands:\n  deny: [client]\n",
        ),
    ) else {
        return;
    };
    let (_admin_a, mut admin_b, mut session) = set_up(&ka, &kb, &pa, &pb);
    wait_namespace(&mut admin_b, NAMESPACE, NS_TOKEN);
    leasegate_failover(&pa, &pb);
    assert_eq!(session.cmd(&["SET", "after", "2"]), Reply::ok());
    assert_in_namespace(&kb, &[("before", "1"), ("after", "2")]);
}
