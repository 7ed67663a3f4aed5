//! `leasegate ctl` against a running leasegate: summaries for people,
//! `--json` for scripts, and the documented exit codes.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{free_port, Proxy, RedisServer, PATIENCE};

const TOKEN: &str = "ctl-token";

fn ctl(proxy: &Proxy, args: &[&str]) -> Output {
    let admin = format!("127.0.0.1:{}", proxy.admin_port());
    Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["ctl", "--admin", &admin, "--token", TOKEN])
        .args(args)
        .output()
        .expect("run leasegate ctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn proxy(redis: &RedisServer) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            "lease:\n  mode: block-write\n  probe_interval_ms: 100\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\n",
            free_port()
        ),
    )
}

#[test]
fn status_and_pause_read_as_summaries_or_json() {
    let redis = RedisServer::start();
    let proxy = proxy(&redis);
    let out = ctl(&proxy, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("lease: NOT valid"), "{text}");
    assert!(text.contains("pause: off"), "{text}");
    assert!(text.contains("failover: none"), "{text}");

    let out = ctl(&proxy, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["lease"]["valid"], false);

    let out = ctl(&proxy, &["pause", "--timeout-ms", "60000"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).starts_with("pause: writes held"), "{out:?}");
    let out = ctl(&proxy, &["unpause"]);
    assert_eq!(stdout(&out).trim(), "pause: off");
}

#[test]
fn exit_codes_tell_what_failed() {
    let redis = RedisServer::start();
    let proxy = proxy(&redis);
    // A refused call (wrong token) is 1, with the server's error printed.
    let admin = format!("127.0.0.1:{}", proxy.admin_port());
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["ctl", "--admin", &admin, "--token", "wrong", "unpause"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("wrong admin token"), "{out:?}");
    // An unreachable leasegate is 1.
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["ctl", "--admin", "127.0.0.1:1", "status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Bad usage is 2.
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["ctl", "frobnicate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // probe: 0 while the node answers, 3 once it does not.
    let start = Instant::now();
    loop {
        let out = ctl(&proxy, &["probe"]);
        if out.status.code() == Some(0) {
            assert!(
                stdout(&out).starts_with("node reachable: master"),
                "{out:?}"
            );
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &redis.pid().to_string()])
            .status()
            .expect("kill")
            .success());
    };
    stop("-STOP");
    let start = Instant::now();
    let out = loop {
        let out = ctl(&proxy, &["probe"]);
        if out.status.code() == Some(3) {
            break out;
        }
        assert!(start.elapsed() < PATIENCE, "{out:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    stop("-CONT");
    assert!(stdout(&out).starts_with("node UNREACHABLE"), "{out:?}");
}
