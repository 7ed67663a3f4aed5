//! A TLS client's session at a failover (`tls.handover`): it moves to the
//! new master's leasegate over TLS, to that leasegate's TLS listener, whose
//! certificate is checked; never in plaintext unless the config says so.
//! Real redis-server nodes with a password (the client's `AUTH`, replayed
//! at the hand-over, is what plaintext would give away), two leasegates,
//! the real `leasegate failover`.

mod support;

use std::time::{Duration, Instant};

use support::tls::{Pki, TlsClient};
use support::{free_port, http, metric, Client, Proxy, RedisServer, Reply, PATIENCE};

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN: &str = "tk";
const PASSWORD: &str = "node-secret";

struct Pair {
    _master: RedisServer,
    replica: RedisServer,
    a: Proxy,
    b: Proxy,
}

fn leasegate(node: &str, id: &str, extra: &str) -> Proxy {
    Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {node}\n  password: {PASSWORD}\n"),
        &format!(
            "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n{extra}",
            free_port()
        ),
    )
}

/// A master and its replica, both with a password, each behind its
/// leasegate (`a_extra`, `b_extra`); A holds the lease.
fn pair(a_extra: &str, b_extra: &str) -> Pair {
    let master = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let port = master.addr().rsplit_once(':').map(|(_, p)| p.to_string());
    let port = port.expect("a port");
    let replica = RedisServer::start_with(&[
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    support::wait_link_up(&mut authed(replica.client()));
    let a = leasegate(&master.addr(), A_ID, a_extra);
    let b = leasegate(&replica.addr(), B_ID, b_extra);
    for proxy in [&a, &b] {
        let reply = proxy
            .client()
            .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "1"]);
        assert!(!reply.is_error(), "{reply:?}");
    }
    Pair {
        _master: master,
        replica,
        a,
        b,
    }
}

fn authed(mut c: Client) -> Client {
    assert_eq!(c.cmd(&["AUTH", PASSWORD]), Reply::ok());
    c
}

const HANDSHAKES_OK: &str = "leasegate_tls_handshakes_total{result=\"ok\"} ";
const HANDSHAKES_FAILED: &str = "leasegate_tls_handshakes_total{result=\"failed\"} ";

/// A TLS client of `port`, trusting `pki`, authenticated with the node's
/// password; retried while the listener starts.
fn tls_client(pki: &Pki, port: u16) -> Client {
    let ca = pki.path("ca.crt");
    let tls = TlsClient {
        ca: &ca,
        server_name: "localhost",
        identity: None,
    };
    let start = Instant::now();
    loop {
        match tls.connect(port) {
            Ok(c) => return authed(c),
            Err(e) => assert!(start.elapsed() < PATIENCE, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failover(p: &Pair) {
    let out = support::failover_command(p.a.admin_port(), p.b.admin_port(), TOKEN);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `tls:` section of a leasegate listening with TLS on `port`, its
/// certificate from `pki`, moving TLS sessions to `peer_port` and trusting
/// `pki`'s CA there.
fn tls_yaml(pki: &Pki, port: u16, client_ca: bool, peer_port: u16) -> String {
    format!(
        "{}  peer_port: {peer_port}\n",
        pki.listener_yaml(port, client_ca)
    )
}

#[test]
fn a_tls_session_moves_over_tls_with_both_certificates_checked() {
    let pki = Pki::new("handover");
    let (tls_a, tls_b) = (free_port(), free_port());
    // B asks for a client certificate: A presents its own (tls.cert_file).
    let p = pair(
        &tls_yaml(&pki, tls_a, false, tls_b),
        &tls_yaml(&pki, tls_b, true, tls_a),
    );
    let mut c = tls_client(&pki, tls_a);
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    let b_admin = p.b.admin_port();
    let handshakes_before = metric(b_admin, HANDSHAKES_OK);
    failover(&p);

    assert_eq!(c.cmd(&["SET", "after", "2"]), Reply::ok(), "handed over");
    assert_eq!(c.cmd(&["GET", "before"]), Reply::bulk("1"));
    assert_eq!(
        authed(p.replica.client()).cmd(&["GET", "after"]),
        Reply::bulk("2"),
        "the write reached the new master"
    );
    // The session reached B through its TLS listener: nothing else
    // connects there in this test.
    assert!(
        metric(b_admin, HANDSHAKES_OK) > handshakes_before,
        "the hand-over came over TLS"
    );
    assert_eq!(metric(b_admin, HANDSHAKES_FAILED), 0);
}

#[test]
fn a_tls_session_is_not_moved_to_a_leasegate_whose_certificate_is_not_trusted() {
    let pki = Pki::new("trusted");
    let other = Pki::new("stranger");
    let (tls_a, tls_b) = (free_port(), free_port());
    // B's certificate comes from a CA that A does not trust.
    let p = pair(
        &tls_yaml(&pki, tls_a, false, tls_b),
        &tls_yaml(&other, tls_b, false, tls_a),
    );
    let mut c = tls_client(&pki, tls_a);
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    failover(&p);

    let reply = c.cmd(&["SET", "after", "2"]);
    let Reply::Error(text) = &reply else {
        panic!("the write must be refused, not moved in plaintext: {reply:?}")
    };
    assert!(
        text.starts_with(&format!(
            "TRYAGAIN cannot reach the new master at 127.0.0.1:{tls_b}"
        )) && text.contains("certificate"),
        "{text}"
    );
    assert_eq!(
        authed(p.replica.client()).cmd(&["EXISTS", "after"]),
        Reply::Int(0),
        "nothing went through"
    );
    assert!(metric(p.b.admin_port(), HANDSHAKES_OK) == 0);
}

#[test]
fn with_handover_plain_a_tls_session_moves_to_the_plaintext_listen() {
    let pki = Pki::new("plain-handover");
    let tls_a = free_port();
    // B has no TLS listener; A is told the network between them is trusted.
    let a_yaml = format!("{}  handover: plain\n", pki.listener_yaml(tls_a, false));
    let p = pair(&a_yaml, "");
    let mut c = tls_client(&pki, tls_a);
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    failover(&p);
    assert_eq!(c.cmd(&["SET", "after", "2"]), Reply::ok(), "handed over");
    assert_eq!(
        authed(p.replica.client()).cmd(&["GET", "after"]),
        Reply::bulk("2")
    );
}

#[test]
fn a_tls_listener_without_a_ca_for_the_handover_is_a_config_error() {
    let pki = Pki::new("no-peer-ca");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("leasegate.yaml");
    // A TLS listener with its certificate, and no CA anywhere.
    let yaml = format!(
        "listen: 127.0.0.1:{}\nbackend:\n  addr: 127.0.0.1:1\ntls:\n  listen: 127.0.0.1:{}\n  cert_file: {}\n  key_file: {}\n",
        free_port(),
        free_port(),
        pki.path("server.crt").display(),
        pki.path("server.key").display()
    );
    std::fs::write(&path, yaml).expect("write the config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run leasegate check-config");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("tls.handover") && said.contains("tls.peer_ca_file"),
        "{said}"
    );
}

/// The CAs a hand-over trusts are read again at a reload: a leasegate that
/// refused the new master's certificate takes it once its
/// `tls.peer_ca_file` names that CA, and an unusable file is refused,
/// naming the key, and changes nothing.
#[test]
fn the_handovers_ca_is_read_again_at_a_reload() {
    let pki = Pki::new("rotated");
    let stranger = Pki::new("before-rotation");
    let (tls_a, tls_b) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let peer_ca = dir.path().join("peer-ca.crt");
    std::fs::copy(stranger.path("ca.crt"), &peer_ca).expect("the first CA");
    let a_yaml = format!(
        "tls:\n  listen: 127.0.0.1:{tls_a}\n  cert_file: {}\n  key_file: {}\n  peer_ca_file: {}\n  peer_port: {tls_b}\n",
        pki.path("server.crt").display(),
        pki.path("server.key").display(),
        peer_ca.display()
    );
    let p = pair(&a_yaml, &tls_yaml(&pki, tls_b, false, tls_a));
    let mut c = tls_client(&pki, tls_a);
    failover(&p);
    let refused = c.cmd(&["SET", "k", "1"]);
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("TRYAGAIN")),
        "{refused:?}"
    );

    std::fs::copy(pki.path("ca.crt"), &peer_ca).expect("the rotated CA");
    let admin = p.a.admin_port();
    let (status, body) = http(admin, "POST", "/v1/reload", Some(TOKEN), Some("{}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.cmd(&["SET", "k", "2"]), Reply::ok(), "moved once trusted");
    assert_eq!(
        authed(p.replica.client()).cmd(&["GET", "k"]),
        Reply::bulk("2")
    );

    std::fs::write(&peer_ca, "not a certificate").expect("write");
    let (status, body) = http(admin, "POST", "/v1/reload", Some(TOKEN), Some("{}"));
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("tls.peer_ca_file"), "{body}");
}
