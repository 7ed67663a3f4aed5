//! Live reload against the real binary: `POST /v1/reload` and SIGHUP apply
//! what may change without closing a connection, keep the running config on
//! a file that cannot be used, and report what needs a restart.

mod support;

use std::time::{Duration, Instant};

use support::controller::{node_id, TestController};
use support::{free_port, http, Client, Proxy, RedisServer, Reply, PATIENCE};

/// A redis-server and a leasegate in front of it whose config file the test
/// rewrites: `listen`, `backend` and `log` first, then `admin`, then the rest.
struct Setup {
    redis: RedisServer,
    proxy: Proxy,
    admin: u16,
}

impl Setup {
    fn start(token: &str, rest: &str) -> Setup {
        let redis = RedisServer::start();
        let proxy = Proxy::start(
            &redis.addr(),
            &format!(
                "admin:\n  listen: 127.0.0.1:{}\n  token: {token}\n{rest}",
                free_port()
            ),
        );
        let admin = proxy.admin_port();
        Setup {
            redis,
            proxy,
            admin,
        }
    }

    /// The config file as [`Proxy::start`] wrote it, with `token` and `rest`.
    fn yaml(&self, token: &str, rest: &str) -> String {
        format!(
            "listen: 127.0.0.1:{}\nbackend:\n  addr: {}\nlog:\n  level: warn\nadmin:\n  listen: 127.0.0.1:{}\n  token: {token}\n{rest}",
            self.proxy.port,
            self.redis.addr(),
            self.admin
        )
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.proxy.config_path, text).expect("write the config");
    }

    /// `POST /v1/reload` with `token`: the status and the answer.
    fn reload(&self, token: &str) -> (u16, serde_json::Value) {
        let (code, body) = http(self.admin, "POST", "/v1/reload", Some(token), None);
        let value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {code} {body}"));
        (code, value)
    }

    /// `leasegate_config_reloads_total{result}` from `/metrics`.
    fn reloads(&self, result: &str) -> u64 {
        let (code, body) = http(self.admin, "GET", "/metrics", None, None);
        assert_eq!(code, 200, "{body}");
        let prefix = format!("leasegate_config_reloads_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{body}"))
            .trim()
            .parse()
            .expect("a count")
    }

    /// Sends SIGHUP and waits until `result` was counted once more.
    fn sighup(&self, result: &str) {
        let before = self.reloads(result);
        self.proxy.signal("HUP");
        let start = Instant::now();
        while self.reloads(result) == before {
            assert!(start.elapsed() < PATIENCE, "SIGHUP reload not counted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn assert_fenced(reply: Reply) {
    let text = reply.error_text();
    assert!(text.contains("master lease expired"), "{text}");
}

const DENIED_KEYS: &str = "ERR command 'keys' is disabled by leasegate";

#[test]
fn a_reload_changes_behaviour_on_connections_that_stay_open() {
    let me = node_id(1);
    let before =
        format!("node_id: {me}\nlease:\n  mode: block-write\ncontrol:\n  password: ctl-one\n");
    let s = Setup::start("tok-one", &before);
    assert_eq!(s.reloads("success"), 0, "registered at 0");
    assert_eq!(s.reloads("failed"), 0, "registered at 0");

    // Connected before the reload, and kept across it.
    let mut c = s.proxy.client();
    assert_fenced(c.cmd(&["SET", "k", "v"]));
    assert_eq!(c.cmd(&["KEYS", "nothing*"]), Reply::Array(vec![]));
    let mut controller = support::controller_client(&s.proxy, "ctl-one");

    let after = format!(
        "node_id: {me}\nlease:\n  mode: disabled\ncontrol:\n  password: ctl-two\ncommands:\n  deny: [keys]\n"
    );
    s.write(&s.yaml("tok-two", &after));
    let (code, answer) = s.reload("tok-one");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        strings(&answer["applied"]),
        [
            "admin.token",
            "control.password",
            "lease.mode",
            "commands.deny"
        ],
        "{answer}"
    );
    assert!(strings(&answer["needs_restart"]).is_empty(), "{answer}");
    assert_eq!(answer["unchanged"], false, "{answer}");
    assert_eq!(s.reloads("success"), 1);

    // The same connection: the deny list and the lease mode are the new ones.
    assert_eq!(
        c.cmd(&["SET", "k", "v"]),
        Reply::ok(),
        "disabled lets writes through"
    );
    assert_eq!(c.cmd(&["KEYS", "nothing*"]).error_text(), DENIED_KEYS);
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));

    // The control password: the old one is an ordinary AUTH now (the node
    // has no password), the new one makes a controller connection.
    let mut old = s.proxy.client();
    assert!(old.cmd(&["AUTH", "ctl-one"]).is_error());
    let hb = ["CLUSTERX", "HEARTBEAT", me.as_str(), "600000", "1"];
    assert!(old.cmd(&hb).error_text().starts_with("NOPERM"));
    let mut new = support::controller_client(&s.proxy, "ctl-two");
    assert!(!new.cmd(&hb).is_error(), "the new password controls");
    // A connection authenticated before the change stays the controller's.
    assert!(!controller.cmd(&hb).is_error());

    // The admin token: the old one is refused, the new one accepted.
    let (code, body) = http(s.admin, "POST", "/v1/unpause", Some("tok-one"), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("wrong admin token"), "{body}");
    let (code, body) = http(s.admin, "POST", "/v1/unpause", Some("tok-two"), None);
    assert_eq!(code, 200, "{body}");

    // SIGHUP takes the same path: back to block-write, KEYS allowed again.
    s.write(&s.yaml("tok-two", &before));
    s.sighup("success");
    assert_eq!(c.cmd(&["KEYS", "nothing*"]), Reply::Array(vec![]));
    // The heartbeat above granted a lease: writes pass under block-write.
    assert_eq!(c.cmd(&["SET", "k", "w"]), Reply::ok());
    let (code, body) = http(s.admin, "GET", "/v1/status", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""mode":"block-write""#), "{body}");
    assert_eq!(s.reloads("success"), 2);
    assert_eq!(s.reloads("failed"), 0);

    // A reload needs the admin token like every other POST.
    let (code, body) = http(s.admin, "POST", "/v1/reload", None, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http(s.admin, "POST", "/v1/reload", Some("tok-one"), None);
    assert_eq!(code, 401, "{body}");

    // The same file again changes nothing.
    let (code, answer) = s.reload("tok-two");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["unchanged"], true, "{answer}");
    assert!(strings(&answer["applied"]).is_empty(), "{answer}");
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn an_unusable_file_keeps_the_running_config() {
    let rest = "commands:\n  deny: [keys]\n";
    let s = Setup::start("tok", rest);
    let mut c = s.proxy.client();
    assert_eq!(c.cmd(&["KEYS", "x*"]).error_text(), DENIED_KEYS);

    // Not YAML.
    s.write(&format!("{}lease: [unclosed\n", s.yaml("tok", "")));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().expect("an error text");
    assert!(error.contains("config file"), "{error}");
    assert_eq!(s.reloads("failed"), 1);

    // An unknown key (with a deny list that would allow KEYS).
    s.write(&s.yaml("tok", "limits:\n  max_clientz: 5\n"));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().expect("an error text");
    assert!(error.contains("max_clientz"), "{error}");
    assert_eq!(s.reloads("failed"), 2);

    // An invalid value, through SIGHUP.
    s.write(&s.yaml("other", "lease:\n  clock_drift: 0.9\n"));
    s.sighup("failed");
    assert_eq!(s.reloads("failed"), 3);
    assert_eq!(s.reloads("success"), 0);

    // Nothing changed: the deny list, and the token (the last file had another).
    assert_eq!(c.cmd(&["KEYS", "x*"]).error_text(), DENIED_KEYS);
    let mut fresh = s.proxy.client();
    assert_eq!(fresh.cmd(&["KEYS", "x*"]).error_text(), DENIED_KEYS);
    let (code, body) = http(s.admin, "POST", "/v1/unpause", Some("tok"), None);
    assert_eq!(code, 200, "{body}");

    // Fixed: the next reload applies.
    s.write(&s.yaml("tok", ""));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["applied"]), ["commands.deny"], "{answer}");
    assert_eq!(c.cmd(&["KEYS", "x*"]), Reply::Array(vec![]));
}

#[test]
fn listen_and_backend_changes_are_reported_not_applied() {
    let s = Setup::start("tok", "");
    let mut c = s.proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());

    let elsewhere = free_port();
    let file = s.yaml("tok", "commands:\n  deny: [keys]\n").replace(
        &format!("listen: 127.0.0.1:{}\n", s.proxy.port),
        &format!("listen: 127.0.0.1:{elsewhere}\n"),
    );
    let file = file.replace(
        &format!("addr: {}\n", s.redis.addr()),
        "addr: 127.0.0.1:1\n",
    );
    let file = file.replace(
        &format!("listen: 127.0.0.1:{}\n  token", s.admin),
        &format!("listen: 127.0.0.1:{}\n  token", free_port()),
    );
    // The log level is live (and quiets this reload's own warning).
    let file = file.replace("level: warn\n", "level: error\n");
    s.write(&file);
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        strings(&answer["needs_restart"]),
        ["listen", "backend.addr", "admin.listen"],
        "{answer}"
    );
    assert_eq!(
        strings(&answer["applied"]),
        ["commands.deny", "log.level"],
        "{answer}"
    );

    // Still serving where it was, in front of the same node.
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(c.cmd(&["KEYS", "*"]).error_text(), DENIED_KEYS);
    let mut fresh = s.proxy.client();
    assert_eq!(fresh.cmd(&["GET", "k"]), Reply::bulk("v"));
    let (code, body) = http(s.admin, "GET", "/v1/status", None, None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["listen"], format!("127.0.0.1:{}", s.proxy.port));
    assert_eq!(status["backend"], s.redis.addr());

    // Asked again, the restart is still pending; nothing else is applied.
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        strings(&answer["needs_restart"]),
        ["listen", "backend.addr", "admin.listen"]
    );
    assert!(strings(&answer["applied"]).is_empty(), "{answer}");
    assert_eq!(answer["unchanged"], false, "{answer}");
}

#[test]
fn new_limits_apply_to_new_connections() {
    let s = Setup::start("tok", "");
    let mut c = s.proxy.client();
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));

    s.write(&s.yaml("tok", "limits:\n  max_clients: 1\n"));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["applied"]), ["limits.max_clients"]);
    let mut refused = s.proxy.client();
    assert_eq!(
        refused.read().error_text(),
        "ERR max number of clients reached"
    );
    assert!(refused.is_closed());
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()), "kept");

    s.write(&s.yaml("tok", ""));
    assert_eq!(s.reload("tok").0, 200);
    let mut admitted = s.proxy.client();
    assert_eq!(admitted.cmd(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn verification_is_switched_on_and_off_live() {
    let ctl = TestController::start();
    let (me, other) = (node_id(1), node_id(2));
    ctl.set_topology(
        1,
        vec![vec![
            (&me, "127.0.0.1:1", "master"),
            (&other, "127.0.0.1:2", "slave"),
        ]],
    );
    // The poller asks once at start, then practically never.
    let rest = |mode: &str| {
        format!(
            "node_id: {me}\n{}verify:\n  mode: {mode}\n  timeout_ms: 300\n",
            ctl.yaml(3_600_000, 3_600_000)
        )
    };
    let s = Setup::start("tok", &rest("off"));
    let mut c: Client = s.proxy.client();
    ctl.set_down(true);
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok(), "not verified");

    s.write(&s.yaml("tok", &rest("every-write")));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["applied"]), ["verify.mode"], "{answer}");
    let refused = c.cmd(&["SET", "k", "2"]);
    assert!(
        refused
            .error_text()
            .starts_with("TRYAGAIN mastership not confirmed by controller"),
        "{refused:?}"
    );
    ctl.set_down(false);
    assert_eq!(c.cmd(&["SET", "k", "3"]), Reply::ok(), "confirmed");

    ctl.set_down(true);
    s.write(&s.yaml("tok", &rest("off")));
    assert_eq!(s.reload("tok").0, 200);
    assert_eq!(c.cmd(&["SET", "k", "4"]), Reply::ok(), "off again");
}

/// `verify.hold` is live: with `request` a refused write never reaches the
/// node; after the reload, with `acknowledgement`, it does, and its success
/// becomes the unknown-outcome error.
#[test]
fn what_verification_holds_is_switched_live() {
    let ctl = TestController::start();
    let (me, other) = (node_id(1), node_id(2));
    // Another node is master, and this one is not in the cluster: every
    // confirmation is refused. (Listed as that master's replica, this
    // node's leasegate would hand its writes there instead.)
    ctl.set_topology(1, vec![vec![(&other, "127.0.0.1:2", "master")]]);
    let rest = |hold: &str| {
        format!(
            "node_id: {me}\n{}verify:\n  mode: every-write\n  hold: {hold}\n  timeout_ms: 300\n",
            ctl.yaml(3_600_000, 3_600_000)
        )
    };
    let s = Setup::start("tok", &rest("request"));
    let mut c: Client = s.proxy.client();
    let mut node = s.redis.client();
    let refused = c.cmd(&["SET", "k", "1"]);
    assert!(
        refused
            .error_text()
            .starts_with("TRYAGAIN mastership not confirmed by controller"),
        "{refused:?}"
    );
    assert_eq!(node.cmd(&["EXISTS", "k"]), Reply::Int(0), "never forwarded");

    s.write(&s.yaml("tok", &rest("acknowledgement")));
    let (code, answer) = s.reload("tok");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(strings(&answer["applied"]), ["verify.hold"], "{answer}");
    let unknown = c.cmd(&["SET", "k", "2"]);
    assert!(
        unknown
            .error_text()
            .starts_with("UNKNOWN write outcome unknown: mastership not confirmed by controller"),
        "{unknown:?}"
    );
    assert_eq!(
        node.cmd(&["GET", "k"]),
        Reply::bulk("2"),
        "forwarded at once"
    );
}

#[test]
fn leasegate_ctl_reload_prints_the_outcome() {
    let s = Setup::start("tok", "");
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["ctl", "--admin", &format!("127.0.0.1:{}", s.admin)])
            .args(["--token", "tok", "reload"])
            .args(args)
            .output()
            .expect("run leasegate ctl")
    };
    let out = ctl(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reloaded: nothing changed\n"
    );

    s.write(&s.yaml("tok", "commands:\n  deny: [keys]\n"));
    let out = ctl(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(strings(&answer["applied"]), ["commands.deny"], "{answer}");

    s.write("listen: [\n");
    let out = ctl(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config file"), "{text}");
}
