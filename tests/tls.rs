//! The TLS client listener (`tls.listen`) with the real binary and a real
//! redis-server, certificates made on the fly: clients over TLS (a rustls
//! client, `redis-cli --tls`, redis-py `ssl=True`) get what plaintext
//! clients get, the lease fences their writes too, client certificates are
//! required and checked when `tls.ca_file` is set, a plaintext client on
//! the TLS port and a failed handshake get a clear word and a closed
//! connection, and a reload re-reads the certificate files (a bad one
//! changes nothing).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::tls::{tls_backend_yaml, tls_node, tls_replica, wait_tls, Pki, TlsClient};
use support::{free_port, http, metric, Client, Proxy, RedisServer, Reply, PATIENCE};

/// A leasegate with a TLS listener (and an admin API) in front of `node`.
/// `extra` follows the `tls:` section (lines indented by two spaces go
/// into it).
fn tls_proxy(node: &RedisServer, pki: &Pki, client_ca: bool, extra: &str) -> (Proxy, u16, u16) {
    let (tls_port, admin) = (free_port(), free_port());
    let proxy = Proxy::start(
        &node.addr(),
        &format!(
            "{}{extra}admin:\n  listen: 127.0.0.1:{admin}\n  token: tk\n",
            pki.listener_yaml(tls_port, client_ca)
        ),
    );
    wait_tls(tls_port);
    (proxy, tls_port, admin)
}

fn client<'a>(pki: &'a Pki) -> TlsClient<'a> {
    TlsClient {
        ca: Box::leak(Box::new(pki.path("ca.crt"))),
        server_name: "localhost",
        identity: None,
    }
}

/// Waits until `series` on the admin API reaches at least `at_least`
/// (a counter is bumped just after the connection it counts is closed).
fn wait_metric(admin: u16, series: &str, at_least: u64) {
    let deadline = Instant::now() + PATIENCE;
    while metric(admin, series) < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tls_client_is_served_as_a_plaintext_one() {
    let node = RedisServer::start();
    let pki = Pki::new("serve");
    let (proxy, tls_port, _) = tls_proxy(&node, &pki, false, "lease:\n  mode: disabled\n");
    let mut c = client(&pki).connect(tls_port).expect("TLS handshake");
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    // Pipelined, a value larger than a TLS record, a transaction.
    let big = "x".repeat(100_000);
    c.send(&["SET", "big", &big]);
    c.send(&["STRLEN", "big"]);
    c.send(&["MULTI"]);
    c.send(&["INCR", "n"]);
    c.send(&["INCR", "n"]);
    c.send(&["EXEC"]);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::Int(100_000));
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::Status("QUEUED".into()));
    assert_eq!(c.read(), Reply::Status("QUEUED".into()));
    assert_eq!(c.read(), Reply::Array(vec![Reply::Int(1), Reply::Int(2)]));
    assert_eq!(c.cmd(&["GET", "big"]), Reply::bulk(&big));
    // Pub/sub: a TLS subscriber gets what a plaintext client publishes.
    let mut sub = client(&pki).connect(tls_port).expect("TLS handshake");
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "ch"]),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("ch"),
            Reply::Int(1)
        ])
    );
    assert_eq!(proxy.client().cmd(&["PUBLISH", "ch", "hi"]), Reply::Int(1));
    assert_eq!(
        sub.read(),
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("ch"),
            Reply::bulk("hi")
        ])
    );
    // A blocking command that times out, and one that is served.
    assert_eq!(c.cmd(&["BLPOP", "empty", "0.1"]), Reply::Nil);
    c.send(&["BLPOP", "list", "5"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proxy.client().cmd(&["RPUSH", "list", "a"]), Reply::Int(1));
    assert_eq!(
        c.read(),
        Reply::Array(vec![Reply::bulk("list"), Reply::bulk("a")])
    );
    // The plaintext port still serves.
    assert_eq!(proxy.client().cmd(&["GET", "k"]), Reply::bulk("v"));
}

#[test]
fn redis_cli_and_redis_py_connect_with_tls() {
    // redis-py under `python3` or Debian's own (required in CI).
    let Some(python) = support::cluster_py::python_with_redis_cluster() else {
        return;
    };
    let node = RedisServer::start();
    let pki = Pki::new("tools");
    let (_proxy, tls_port, _) = tls_proxy(&node, &pki, false, "lease:\n  mode: disabled\n");
    let ca = pki.path("ca.crt");
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca)
        .args([
            "-h",
            "localhost",
            "-p",
            &tls_port.to_string(),
            "SET",
            "cli",
            "1",
        ])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let script = format!(
        "import redis\n\
         r = redis.Redis(host='localhost', port={tls_port}, ssl=True, ssl_ca_certs='{}')\n\
         p = r.pipeline(transaction=True)\n\
         p.incr('py'); p.incr('py'); p.get('cli')\n\
         print(p.execute())\n",
        ca.display()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[1, 2, b'1']",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_lease_fences_tls_writes_too() {
    let node = RedisServer::start();
    let pki = Pki::new("fence");
    let (_proxy, tls_port, _) = tls_proxy(&node, &pki, false, "lease:\n  mode: block-write\n");
    let mut c = client(&pki).connect(tls_port).expect("TLS handshake");
    let fenced = c.cmd(&["SET", "k", "v"]);
    assert!(fenced.is_error(), "{fenced:?}");
    assert_eq!(c.cmd(&["GET", "k"]), Reply::Nil, "reads pass");
    assert_eq!(node.client().cmd(&["EXISTS", "k"]), Reply::Int(0));
}

#[test]
fn client_certificates_are_required_and_checked_with_a_ca_file() {
    let node = RedisServer::start();
    let pki = Pki::new("mtls");
    let (_proxy, tls_port, admin) = tls_proxy(&node, &pki, true, "lease:\n  mode: disabled\n");
    let (crt, key) = pki.issue("client", &["client"], false);
    let with = |crt: &Path, key: &Path| TlsClient {
        identity: Some((
            Box::leak(Box::new(crt.to_path_buf())),
            Box::leak(Box::new(key.to_path_buf())),
        )),
        ..client(&pki)
    };
    let mut c = with(&crt, &key)
        .connect(tls_port)
        .expect("a client with a certificate");
    assert_eq!(c.cmd(&["SET", "m", "1"]), Reply::ok());
    // None, one from another CA, an expired one: refused, and counted.
    let none = client(&pki).connect(tls_port);
    assert!(none.is_err(), "no client certificate: {:?}", none.is_ok());
    let other = Pki::new("other");
    let (ocrt, okey) = other.issue("client", &["client"], false);
    assert!(with(&ocrt, &okey).connect(tls_port).is_err(), "untrusted");
    let (ecrt, ekey) = pki.issue("old", &["client"], true);
    let expired = with(&ecrt, &ekey).connect(tls_port);
    assert!(expired.is_err(), "expired");
    wait_metric(
        admin,
        "leasegate_tls_handshakes_total{result=\"failed\"} ",
        3,
    );
    assert!(metric(admin, "leasegate_tls_handshakes_total{result=\"ok\"} ") >= 1);
    // The server's name: a client that expects another one refuses it.
    let wrong = TlsClient {
        server_name: "elsewhere.example",
        ..with(&crt, &key)
    }
    .connect(tls_port);
    assert!(
        wrong.is_err(),
        "a certificate for another name is refused by the client"
    );
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_told_and_closed() {
    let node = RedisServer::start();
    let pki = Pki::new("plain");
    let (_proxy, tls_port, admin) = tls_proxy(&node, &pki, false, "lease:\n  mode: disabled\n");
    let mut c = Client::connect(tls_port);
    let told = c.cmd(&["PING"]);
    assert!(
        told.error_text().contains("this port speaks TLS"),
        "{told:?}"
    );
    assert!(c.is_closed());
    wait_metric(
        admin,
        "leasegate_tls_handshakes_total{result=\"plaintext\"} ",
        1,
    );
    // A client that says nothing is closed at the handshake timeout.
    let pki = Pki::new("silent");
    let (_p2, tls2, admin2) = tls_proxy(
        &node,
        &pki,
        false,
        "  handshake_timeout_ms: 300\nlease:\n  mode: disabled\n",
    );
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", tls2)).expect("connect");
    silent.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    assert!(start.elapsed() < PATIENCE);
    wait_metric(
        admin2,
        "leasegate_tls_handshakes_total{result=\"timeout\"} ",
        1,
    );
}

#[test]
fn a_reload_reads_the_certificate_files_again_and_a_bad_one_changes_nothing() {
    let node = RedisServer::start();
    let first = Pki::new("first");
    let (_proxy, tls_port, admin) = tls_proxy(&node, &first, false, "lease:\n  mode: disabled\n");
    let mut before = client(&first)
        .connect(tls_port)
        .expect("the first certificate");
    // Renewed in place: the same paths, a certificate from another CA.
    let second = Pki::new("second");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(second.path(file), first.path(file)).expect("replace the file");
    }
    let (status, body) = http(admin, "POST", "/v1/reload", Some("tk"), Some("{}"));
    assert_eq!(status, 200, "{body}");
    // No key changed, and the answer says the certificates were read again.
    assert!(
        body.contains(r#""unchanged":true"#) && body.contains(r#""certificates":["tls"]"#),
        "{body}"
    );
    assert!(
        client(&first).connect(tls_port).is_err(),
        "the old certificate is gone"
    );
    let mut after = client(&second)
        .connect(tls_port)
        .expect("the new certificate");
    assert_eq!(after.cmd(&["SET", "a", "1"]), Reply::ok());
    assert_eq!(
        before.cmd(&["GET", "a"]),
        Reply::bulk("1"),
        "an established connection goes on"
    );
    // A bad file: the reload fails, says which key, and the certificate stays.
    std::fs::write(first.path("server.crt"), "not a certificate").expect("write");
    let (status, body) = http(admin, "POST", "/v1/reload", Some("tk"), Some("{}"));
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("tls.cert_file"), "{body}");
    client(&second)
        .connect(tls_port)
        .expect("still the second certificate");
}

/// A replica that replicates over TLS (`tls-replication yes`) through
/// leasegate's TLS port gets the full sync and the stream after it.
#[test]
fn a_replica_replicates_through_the_tls_port() {
    let node = RedisServer::start();
    let pki = Pki::new("replica");
    let (proxy, tls_port, _) = tls_proxy(&node, &pki, false, "lease:\n  mode: disabled\n");
    assert_eq!(proxy.client().cmd(&["SET", "before", "1"]), Reply::ok());
    let replica = tls_replica(&pki, tls_port, &[]);
    let mut r = replica.client();
    support::kvrocks::link_up(&mut r);
    assert_eq!(r.cmd(&["GET", "before"]), Reply::bulk("1"), "the full sync");
    assert_eq!(proxy.client().cmd(&["SET", "after", "2"]), Reply::ok());
    let deadline = Instant::now() + PATIENCE;
    while r.cmd(&["GET", "after"]) != Reply::bulk("2") {
        assert!(Instant::now() < deadline, "the stream after the sync");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A leasegate (lease off, an admin API) in front of a node's TLS port;
/// its admin port.
fn proxy_for_tls_node(pki: &Pki, tls_port: u16, identity: bool) -> (Proxy, u16) {
    let admin = free_port();
    let proxy = Proxy::start_with_backend_yaml(
        &tls_backend_yaml(pki, tls_port, identity),
        &format!("lease:\n  mode: disabled\nadmin:\n  listen: 127.0.0.1:{admin}\n  token: tk\n"),
    );
    (proxy, admin)
}

/// Waits until the leasegate's `/v1/status` satisfies `ok`.
fn wait_status(admin: u16, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, status) = http(admin, "GET", "/v1/status", None, None);
        if ok(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leasegate_reaches_its_node_over_tls() {
    let pki = Pki::new("node");
    let (node, tls_port) = tls_node(&pki, &[]);
    let (proxy, admin) = proxy_for_tls_node(&pki, tls_port, true);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    let big = "y".repeat(200_000);
    c.send(&["SET", "big", &big]);
    c.send(&["MULTI"]);
    c.send(&["INCR", "n"]);
    c.send(&["EXEC"]);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::Status("QUEUED".into()));
    assert_eq!(c.read(), Reply::Array(vec![Reply::Int(1)]));
    assert_eq!(c.cmd(&["GET", "big"]), Reply::bulk(&big));
    let mut direct = node.client();
    assert_eq!(direct.cmd(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(direct.cmd(&["STRLEN", "big"]), Reply::Int(200_000));
    // leasegate's own connections go over TLS too: the probe sees the
    // node, and learned its commands.
    wait_status(admin, "the probe never saw the node", |s| {
        s.contains("\"role\":\"master\"")
    });
    let stats = direct.cmd(&["INFO", "commandstats"]).text();
    assert!(
        stats.contains("cmdstat_command:"),
        "COMMAND was learned over TLS: {stats}"
    );
}

/// The node asks for a certificate leasegate does not have: its
/// connections are refused after the handshake (TLS 1.3), clients'
/// connections close, and the probe reports why (`/v1/status`, `/readyz`).
#[test]
fn a_node_that_refuses_leasegate_s_certificate_is_reported() {
    let pki = Pki::new("refusing");
    let (node, tls_port) = tls_node(&pki, &[]);
    let (proxy, admin) = proxy_for_tls_node(&pki, tls_port, false);
    let mut c = proxy.client();
    c.send(&["SET", "k", "v"]);
    assert!(c.is_closed(), "the session ends with its node connection");
    wait_status(admin, "the probe names the certificate", |s| {
        s.to_lowercase().contains("certificate")
    });
    let (code, _) = http(admin, "GET", "/readyz", None, None);
    assert_eq!(code, 503);
    let mut direct = node.client();
    assert_eq!(direct.cmd(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(direct.cmd(&["EXISTS", "k"]), Reply::Int(0));
}

/// A failover between two nodes reached over TLS (`backend.tls` on both
/// leasegates; B replicates from A's TLS port): leasegate's connections to
/// its node and to the target's node (promotion, catch-up) go over TLS,
/// clients' sessions are handed over, and nothing acknowledged is lost.
#[test]
fn a_failover_between_tls_nodes_loses_nothing() {
    use support::load::Writers;
    const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let pki = Pki::new("failover-nodes");
    let (a_node, a_tls) = tls_node(&pki, &[]);
    let (rcrt, rkey) = pki.issue("replica", &["replica"], false);
    let (rcrt, rkey) = (rcrt.display().to_string(), rkey.display().to_string());
    let a_port = a_tls.to_string();
    let (b_node, b_tls) = tls_node(
        &pki,
        &[
            "--tls-replication",
            "yes",
            "--tls-client-cert-file",
            &rcrt,
            "--tls-client-key-file",
            &rkey,
            "--masterauth",
            "pw",
            "--replicaof",
            "127.0.0.1",
            &a_port,
        ],
    );
    let mut b_direct = b_node.client();
    assert_eq!(b_direct.cmd(&["AUTH", "pw"]), Reply::ok());
    support::kvrocks::link_up(&mut b_direct);
    let proxy = |tls_port: u16, id: &str| {
        Proxy::start_with_backend_yaml(
            &tls_backend_yaml(&pki, tls_port, true),
            &format!(
                "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: tk\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n",
                free_port()
            ),
        )
    };
    let (a, b) = (proxy(a_tls, A_ID), proxy(b_tls, B_ID));
    for p in [&a, &b] {
        let reply = support::heartbeat(&mut p.client(), A_ID, 600_000, 1);
        assert!(!reply.is_error(), "{reply:?}");
    }
    let writers =
        Writers::start_authenticated(a.port, 4, "w", Duration::from_millis(1), Some("pw"));
    std::thread::sleep(Duration::from_millis(300));
    let out = support::failover_command(a.admin_port(), b.admin_port(), "tk");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let outcome = writers.finish();
    match b_direct.cmd(&["ROLE"]) {
        Reply::Array(role) => assert_eq!(role.first(), Some(&Reply::bulk("master"))),
        other => panic!("ROLE answered {other:?}"),
    }
    outcome.assert_none_failed_or_lost(&mut b_direct, 50);
    drop(a_node);
}

/// The admin API over HTTPS (`admin.tls`): curl with the CA reads it, a
/// plain HTTP request gets nothing, and `leasegate failover` between two
/// leasegates whose admin APIs speak HTTPS succeeds (the CLI trusts
/// `LEASEGATE_ADMIN_CA`, the source leasegate `admin.tls.ca_file`).
#[test]
fn the_admin_api_speaks_https_and_a_failover_goes_through_it() {
    const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let pki = Pki::new("admin");
    let a_node = RedisServer::start();
    let b_node = RedisServer::start_with(&["--replicaof", "127.0.0.1", &a_node.port.to_string()]);
    support::kvrocks::link_up(&mut b_node.client());
    let (crt, key, ca) = (
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt"),
    );
    let leasegate = |node: &RedisServer, id: &str, admin: u16| {
        Proxy::start(
            &node.addr(),
            &format!(
                "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{admin}\n  token: tk\n  tls:\n    cert_file: {}\n    key_file: {}\n    ca_file: {}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n",
                crt.display(),
                key.display(),
                ca.display()
            ),
        )
    };
    let (a_admin, b_admin) = (free_port(), free_port());
    let (a, b) = (
        leasegate(&a_node, A_ID, a_admin),
        leasegate(&b_node, B_ID, b_admin),
    );
    for p in [&a, &b] {
        let reply = support::heartbeat(&mut p.client(), A_ID, 600_000, 1);
        assert!(!reply.is_error(), "{reply:?}");
    }
    let curl = |url: String, ca: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5"]);
        if ca {
            cmd.arg("--cacert").arg(pki.path("ca.crt"));
        }
        cmd.arg(url).output().expect("curl runs")
    };
    let out = curl(format!("https://localhost:{a_admin}/v1/status"), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"lease\""));
    let plain = curl(format!("http://127.0.0.1:{a_admin}/v1/status"), false);
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("\"lease\""),
        "plain HTTP is not served on an HTTPS admin API"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["failover", "--from"])
        .arg(format!("https://localhost:{a_admin}"))
        .arg("--to")
        .arg(format!("https://localhost:{b_admin}"))
        .args(["--token", "tk"])
        .env("LEASEGATE_ADMIN_CA", pki.path("ca.crt"))
        .output()
        .expect("leasegate failover runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("success"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        b.client().cmd(&["SET", "after", "1"]),
        Reply::ok(),
        "B holds the lease"
    );
    drop(a);
}

/// A replica replicating through leasegate from a node leasegate reaches
/// over TLS: the full sync and the stream after it pass over the TLS node
/// connection.
#[test]
fn a_replication_stream_passes_over_a_tls_node_connection() {
    let pki = Pki::new("stream");
    let (node, tls_port) = tls_node(&pki, &[]);
    let (proxy, _) = proxy_for_tls_node(&pki, tls_port, true);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    let replica = RedisServer::start_with(&["--masterauth", "pw"]);
    let mut r = replica.client();
    assert_eq!(
        r.cmd(&["REPLICAOF", "127.0.0.1", &proxy.port.to_string()]),
        Reply::ok()
    );
    support::kvrocks::link_up(&mut r);
    assert_eq!(r.cmd(&["GET", "before"]), Reply::bulk("1"), "the full sync");
    assert_eq!(c.cmd(&["SET", "after", "2"]), Reply::ok());
    let deadline = Instant::now() + PATIENCE;
    while r.cmd(&["GET", "after"]) != Reply::bulk("2") {
        assert!(Instant::now() < deadline, "the stream after the sync");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(node);
}

/// Under Redis Sentinel (the lease from the Sentinels) with the node on its
/// TLS port: the leasegate's own reads of its node, which the Sentinel
/// lease checks, go over TLS too, and the lease comes. (They opened a
/// plaintext connection to the TLS port: the node never answered, and
/// every write was fenced.)
#[test]
fn under_sentinel_a_tls_node_gets_its_lease() {
    use support::sentinel::{eventually, Monitor, Sentinel};
    let pki = Pki::new("sentinel");
    let (_node, tls_port) = tls_node(&pki, &[]);
    let port = free_port();
    let mut monitor = Monitor::new("m", &format!("127.0.0.1:{port}"), 2);
    monitor.auth_pass = Some("pw".into());
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(&monitor)).collect();
    let addrs: Vec<String> = sentinels.iter().map(Sentinel::addr).collect();
    let yaml = format!(
        "lease:\n  mode: block-write\n  probe_interval_ms: 100\ncontrol:\n  password: ctl\nsentinel:\n  addrs: [{}]\n  master_name: m\n  poll_interval_ms: 100\n  timeout_ms: 300\n",
        addrs.join(", ")
    );
    let proxy =
        Proxy::start_at_with_backend_yaml(port, &tls_backend_yaml(&pki, tls_port, true), &yaml);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    eventually("the Sentinels' lease", Duration::from_secs(20), || {
        c.cmd(&["SET", "k", "v"]) == Reply::ok()
    });
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
}
