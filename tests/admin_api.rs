//! The HTTP admin API against the real binary: health, status, metrics and
//! push renewal with `POST /v1/lease` (bearer token, epochs, revocation).

mod support;

use std::time::Instant;

use support::controller::node_id;
use support::{free_port, http, Proxy, RedisServer, Reply, PATIENCE};

const TOKEN: &str = "t0k";

fn admin_proxy(redis: &RedisServer, admin_extra: &str) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\n  probe_interval_ms: 100\nadmin:\n  listen: 127.0.0.1:{}\n{admin_extra}",
            node_id(1),
            free_port()
        ),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn lease_body(master: &str, epoch: u64, ttl_ms: u64) -> String {
    format!(r#"{{"master_node_id":"{master}","epoch":{epoch},"ttl_ms":{ttl_ms}}}"#)
}

fn assert_fenced(reply: Reply) {
    let text = reply.error_text();
    assert!(text.contains("master lease expired"), "{text}");
}

#[test]
fn push_renewal_over_http() {
    let redis = RedisServer::start();
    let proxy = admin_proxy(&redis, &format!("  token: {TOKEN}\n"));
    let port = proxy.admin_port();
    let me = node_id(1);

    assert_eq!(
        http(port, "GET", "/healthz", None, None),
        (200, "ok\n".into())
    );

    let (code, body) = http(port, "GET", "/v1/status", None, None);
    assert_eq!(code, 200, "{body}");
    let status = json(&body);
    assert_eq!(status["lease"]["mode"], "block-write", "{body}");
    assert_eq!(status["lease"]["valid"], false, "{body}");
    assert_eq!(status["lease"]["node_id"], me.as_str(), "{body}");
    assert_eq!(status["paused"], false, "{body}");
    assert_eq!(status["failover_state"], "none", "{body}");
    assert_eq!(status["backend"], redis.addr(), "{body}");

    let mut c = proxy.client();
    assert_fenced(c.cmd(&["SET", "k", "v"]));

    // No token, a wrong token: 401 and nothing changes.
    let grant = lease_body(&me, 5, 60_000);
    let (code, body) = http(port, "POST", "/v1/lease", None, Some(&grant));
    assert_eq!(code, 401, "{body}");
    assert!(json(&body)["error"].is_string(), "{body}");
    let (code, body) = http(port, "POST", "/v1/lease", Some("nope"), Some(&grant));
    assert_eq!(code, 401, "{body}");
    assert_fenced(c.cmd(&["SET", "k", "v"]));

    // With the token: renewed.
    let (code, body) = http(port, "POST", "/v1/lease", Some(TOKEN), Some(&grant));
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["outcome"], "renewed", "{body}");
    assert_eq!(answer["lease"]["valid"], true, "{body}");
    assert_eq!(answer["lease"]["epoch"], 5, "{body}");
    assert!(answer["nonce"].is_u64(), "{body}");
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());

    // Echoing the nonce renews from the instant it was issued.
    let nonce = answer["nonce"].as_u64().expect("nonce");
    let echoed = format!(r#"{{"master_node_id":"{me}","epoch":5,"ttl_ms":60000,"nonce":{nonce}}}"#);
    let (code, body) = http(port, "POST", "/v1/lease", Some(TOKEN), Some(&echoed));
    assert_eq!(
        (code, json(&body)["outcome"].clone()),
        (200, "renewed".into()),
        "{body}"
    );
    let forged = format!(r#"{{"master_node_id":"{me}","epoch":5,"ttl_ms":60000,"nonce":1}}"#);
    let (code, body) = http(port, "POST", "/v1/lease", Some(TOKEN), Some(&forged));
    assert_eq!(
        (code, json(&body)["outcome"].clone()),
        (200, "unknown_nonce".into()),
        "{body}"
    );

    // A lower election version is refused and leaves the lease alone.
    let (code, body) = http(
        port,
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&lease_body(&me, 4, 60_000)),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("election version mismatch"), "{body}");
    assert_eq!(c.cmd(&["SET", "k", "v2"]), Reply::ok());

    // Another node named master: revoked at once.
    let (code, body) = http(
        port,
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&lease_body(&node_id(2), 6, 60_000)),
    );
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["outcome"], "revoked", "{body}");
    assert_eq!(answer["lease"]["valid"], false, "{body}");
    assert_eq!(answer["lease"]["owner"], node_id(2).as_str(), "{body}");
    assert_fenced(c.cmd(&["SET", "k", "v3"]));
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v2"), "reads still pass");

    let (code, body) = http(port, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(body.contains("leasegate_writes_fenced_total"), "{body}");
    assert!(body.contains("leasegate_admin_requests_total{"), "{body}");
    assert!(body.contains("status=\"401\""), "{body}");
}

#[test]
fn bad_requests() {
    let redis = RedisServer::start();
    let proxy = admin_proxy(&redis, &format!("  token: {TOKEN}\n"));
    let port = proxy.admin_port();

    let (code, body) = http(port, "GET", "/nope", None, None);
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(port, "GET", "/v1/lease", None, None);
    assert_eq!(code, 405, "{body}");
    let (code, body) = http(port, "POST", "/healthz", Some(TOKEN), Some("{}"));
    assert_eq!(code, 405, "{body}");

    let (code, body) = http(port, "POST", "/v1/lease", Some(TOKEN), Some("{not json"));
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(
        port,
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&format!(
            r#"{{"master_node_id":"{}","ttl_ms":1000}}"#,
            node_id(1)
        )),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("epoch"), "names the missing field: {body}");
    let (code, body) = http(
        port,
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&lease_body(&node_id(1), 1, 0)),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ttl_ms"), "{body}");

    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let (code, body) = http(port, "POST", "/v1/lease", Some(TOKEN), Some(&huge));
    assert_eq!(code, 413, "{body}");

    // The node answers its probe: ready.
    let start = Instant::now();
    loop {
        let (code, body) = http(port, "GET", "/readyz", None, None);
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(start.elapsed() < PATIENCE, "never ready: {body}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, body) = http(port, "GET", "/v1/status", None, None);
    assert_eq!(
        json(&body)["node"]["replication"]["role"],
        "master",
        "{body}"
    );
}

#[test]
fn without_a_token_mutating_calls_are_refused() {
    let redis = RedisServer::start();
    let proxy = admin_proxy(&redis, "");
    let port = proxy.admin_port();
    let (code, body) = http(
        port,
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&lease_body(&node_id(1), 1, 60_000)),
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("admin.token"), "{body}");
    assert_fenced(proxy.client().cmd(&["SET", "k", "v"]));
    assert_eq!(http(port, "GET", "/healthz", None, None).0, 200);
}

#[test]
fn readyz_reports_an_unreachable_node() {
    let mut redis = RedisServer::start();
    let proxy = admin_proxy(&redis, "");
    let port = proxy.admin_port();
    redis.stop();
    let start = Instant::now();
    loop {
        let (code, body) = http(port, "GET", "/readyz", None, None);
        if code == 503 && body.contains("probe failed") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "still {code}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `GET /v1/probe`: the node probe's record. A stopped node (SIGSTOP) is
/// reported unreachable (each probe gets one interval to answer), and
/// reachable again when it resumes.
#[test]
fn the_probe_reports_a_stopped_node() {
    let redis = RedisServer::start();
    let proxy = admin_proxy(&redis, "control:\n  password: pw\n");
    // The same record over RESP, for control connections only.
    let resp_probe = || {
        let mut ctl = proxy.client();
        assert_eq!(ctl.cmd(&["AUTH", "pw"]), Reply::ok());
        ctl.cmd(&["CLUSTERX", "PROBE"]).text()
    };
    let refused = proxy.client().cmd(&["CLUSTERX", "PROBE"]);
    assert!(refused.error_text().starts_with("NOPERM"), "{refused:?}");
    let probe = || {
        let (status, body) = http(proxy.admin_port(), "GET", "/v1/probe", None, None);
        assert_eq!(status, 200, "{body}");
        json(&body)
    };
    let start = Instant::now();
    while probe()["reachable"] != true {
        assert!(start.elapsed() < PATIENCE, "never reachable: {}", probe());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = resp_probe();
    assert!(text.starts_with("# Probe\r\n"), "{text}");
    assert!(text.contains("reachable:1\r\n"), "{text}");
    assert!(text.contains("role:master\r\n"), "{text}");
    let p = probe();
    assert_eq!(p["enabled"], true);
    assert_eq!(p["probe_interval_ms"], 100);
    assert_eq!(p["role"], "master");
    assert_eq!(p["consecutive_failures"], 0);
    assert!(p["last_success_ms_ago"].as_u64().is_some(), "{p}");
    assert!(p["lease"]["valid"].is_boolean(), "{p}");

    let signal = |name: &str| {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &redis.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    };
    signal("STOP");
    let stopped = Instant::now();
    while probe()["reachable"] != false {
        assert!(
            stopped.elapsed() < PATIENCE,
            "a stopped node still reported reachable: {}",
            probe()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("stopped node reported after {:?}", stopped.elapsed());
    let text = resp_probe();
    assert!(text.contains("reachable:0\r\n"), "{text}");
    let p = probe();
    assert!(p["consecutive_failures"].as_u64() >= Some(1), "{p}");
    assert!(p["error"].is_string(), "{p}");
    let (_, metrics) = http(proxy.admin_port(), "GET", "/metrics", None, None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leasegate_node_probe_failures ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    signal("CONT");
    let start = Instant::now();
    while probe()["reachable"] != true {
        assert!(start.elapsed() < PATIENCE, "never reachable again");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The value of one sample line in `/metrics` (`name{labels} value`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` is parsed and its counters move when their events happen:
/// fenced writes by reason, refused heartbeats by reason, node connections
/// that failed; the state gauges and build info are there.
#[test]
fn the_counters_move_when_their_events_happen() {
    let mut redis = RedisServer::start();
    let proxy = admin_proxy(&redis, "control:\n  allow_from: [127.0.0.1]\n");
    let scrape = || http(proxy.admin_port(), "GET", "/metrics", None, None).1;
    let before = scrape();
    for series in [
        "leasegate_writes_fenced_total{reason=\"lease\"}",
        "leasegate_writes_fenced_total{reason=\"demoted\"}",
        "leasegate_heartbeats_refused_total{reason=\"epoch\"}",
        "leasegate_backend_connect_errors_total",
        "leasegate_handovers_total{result=\"failed\"}",
        "leasegate_client_backpressure_total",
        "leasegate_clients_closed_unread_total",
        "leasegate_clients_waiting_for_node",
        "leasegate_failover_state{state=\"none\"}",
        "leasegate_failovers_total{result=\"failed\"}",
        "leasegate_lease_valid",
        "leasegate_config_reloads_total{result=\"failed\"}",
    ] {
        assert!(
            sample(&before, series).is_some(),
            "{series} missing:\n{before}"
        );
    }
    assert_eq!(
        sample(&before, "leasegate_failover_state{state=\"none\"}"),
        Some(1.0)
    );
    assert!(
        before.contains("leasegate_build_info{version=\""),
        "{before}"
    );

    let mut c = proxy.client();
    // A fenced write (no lease yet).
    assert_fenced(c.cmd(&["SET", "k", "v"]));
    // A heartbeat at a stale epoch: grant epoch 5, then send epoch 4.
    let mut ctl = proxy.client();
    let grant = |c: &mut support::Client, epoch: &str| {
        c.cmd(&["CLUSTERX", "HEARTBEAT", &node_id(1), "60000", epoch])
    };
    assert!(!grant(&mut ctl, "5").is_error());
    assert!(grant(&mut ctl, "4").is_error());
    // The node goes away: a new client's node connection fails.
    redis.stop();
    let mut late = proxy.client();
    assert!(late.cmd(&["PING"]).is_error());
    let after = scrape();
    let moved = |series: &str| {
        sample(&after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0)
    };
    assert_eq!(
        moved("leasegate_writes_fenced_total{reason=\"lease\"}"),
        1.0
    );
    assert_eq!(moved("leasegate_heartbeats_total"), 1.0);
    assert_eq!(
        moved("leasegate_heartbeats_refused_total{reason=\"epoch\"}"),
        1.0
    );
    assert_eq!(moved("leasegate_backend_connect_errors_total"), 1.0);
}

/// An idle session gives its buffers back (`leasegate_idle_buffers_released`
/// moves once it has been quiet for one to two seconds), serves its next
/// requests as before (the buffers grow again), and, quiet again, gives them
/// back again: the trim timer is set anew after every release.
#[test]
fn an_idle_session_gives_its_buffers_back_each_time_it_goes_quiet() {
    let redis = RedisServer::start();
    let proxy = admin_proxy(&redis, "");
    let released = || {
        sample(
            &http(proxy.admin_port(), "GET", "/metrics", None, None).1,
            "leasegate_idle_buffers_released_total",
        )
        .unwrap_or_else(|| panic!("no leasegate_idle_buffers_released_total"))
    };
    let wait_for_release = |after: f64| {
        let start = Instant::now();
        while released() <= after {
            assert!(
                start.elapsed() < PATIENCE,
                "the quiet session kept its buffers"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let big = "v".repeat(256 * 1024);
    let mut c = proxy.client();
    for round in 0..2 {
        // Buffers grown by a large value (reads need no lease), then quiet.
        let mut node = redis.client();
        assert_eq!(node.cmd(&["SET", "big", &big]), Reply::ok());
        assert_eq!(c.cmd(&["GET", "big"]), Reply::bulk(&big));
        let before = released();
        wait_for_release(before);
        // Served as before, a pipeline included.
        for _ in 0..3 {
            c.send(&["GET", "big"]);
        }
        c.send(&["PING"]);
        for _ in 0..3 {
            assert_eq!(c.read(), Reply::bulk(&big), "round {round}");
        }
        assert_eq!(c.read(), Reply::Status("PONG".into()), "round {round}");
    }
}
