//! Unit tests of [`super`].

use super::*;

#[test]
fn threads_past_the_cpus_warn_and_past_the_limit_are_refused() {
    let with = |n: usize| Config::parse(&format!("backend:\n  addr: h:1\nthreads: {n}\n"), "t");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let warned = |c: &Config| c.warnings().iter().any(|w| w.starts_with("threads ("));
    assert!(
        !warned(&with(0).expect("default")),
        "the default never warns"
    );
    assert!(!warned(&with(cpus).expect("one per CPU")));
    assert!(warned(&with(cpus + 1).expect("valid, with a warning")));
    with(MAX_THREADS).expect("the limit itself is allowed");
    let err = with(MAX_THREADS + 1).unwrap_err().to_string();
    assert!(err.contains("threads") && err.contains("1025"), "{err}");
}

#[test]
fn settings_that_do_nothing_as_set_warn() {
    let with = |yaml: &str| {
        Config::parse(&format!("backend:\n  addr: h:1\n{yaml}"), "t")
            .expect("valid")
            .warnings()
    };
    let tls = "tls:\n  cert_file: /c.pem\n  key_file: /k.pem\n";
    assert!(with(tls).iter().any(|w| w.starts_with("tls.cert_file")));
    assert!(!with("").iter().any(|w| w.starts_with("tls.cert_file")));
    let idle = "verify:\n  max_in_flight: 0\n";
    assert!(with(idle)
        .iter()
        .any(|w| w.starts_with("verify.max_in_flight (0)")));
    assert!(!with("").iter().any(|w| w.starts_with("verify.")));
    // A lease source with the lease off: polled, fencing nothing.
    let polled = "controller:\n  url: http://c:9379\n  namespace: n\n  cluster: c\n";
    assert!(with(polled)
        .iter()
        .any(|w| w.starts_with("controller.url is set but lease.mode is disabled")));
    let fenced = format!("{polled}lease:\n  mode: block-write\n");
    assert!(!with(&fenced)
        .iter()
        .any(|w| w.contains("lease.mode is disabled")));
    // The admin API open beyond loopback without a token.
    let open = "admin:\n  listen: 0.0.0.0:9180\n";
    assert!(with(open)
        .iter()
        .any(|w| w.starts_with("admin.listen is 0.0.0.0:9180")));
    let guarded = "admin:\n  listen: 0.0.0.0:9180\n  token: t\n";
    assert!(!with(guarded).iter().any(|w| w.starts_with("admin.listen")));
    assert!(!with("").iter().any(|w| w.starts_with("admin.listen")));
    // A controller that logs in with the node password, told apart by
    // neither: its pushes would be refused.
    let apart = format!("{fenced}control:\n  password: ctl\n");
    let warned = |yaml: &str| {
        with(yaml)
            .iter()
            .any(|w| w.starts_with("control.password differs"))
    };
    assert!(warned(&apart));
    assert!(!warned(&format!("{apart}  allow_from: [10.0.0.5]\n")));
    let same = format!("backend:\n  addr: h:1\n  password: pw\n{fenced}control:\n  password: pw\n");
    let config = Config::parse(&same, "t").expect("valid");
    assert!(!config
        .warnings()
        .iter()
        .any(|w| w.starts_with("control.password differs")));
}

#[test]
fn an_acl_user_needs_its_password() {
    let err = Config::parse("backend:\n  addr: h:1\n  user: lg\n", "f")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backend.user") && err.contains("backend.password"),
        "{err}"
    );
    let text = "backend:\n  addr: h:1\n  user: lg\n  password: pw\n";
    let config = Config::parse(text, "f").expect("valid");
    assert_eq!(
        config.backend.login().map(|l| l.auth_args().join(" ")),
        Some("AUTH lg pw".to_string())
    );
    let text = "backend:\n  addr: h:1\nsentinel:\n  user: w\n";
    let err = Config::parse(text, "f").unwrap_err().to_string();
    assert!(
        err.contains("sentinel.user") && err.contains("sentinel.password"),
        "{err}"
    );
}

#[test]
fn the_controller_is_one_address_or_every_controller_of_its_group() {
    let with = |url: &str| {
        Config::parse(
            &format!(
                "backend:\n  addr: h:1\ncontroller:\n  url: {url}\n  namespace: n\n  cluster: c\n"
            ),
            "f",
        )
    };
    let one = with("http://a:1").expect("valid");
    let one = one.controller.url.expect("set");
    assert_eq!(one.as_slice(), ["http://a:1"]);
    let group = with("[http://a:1, http://b:1, http://c:1]").expect("valid");
    let group = group.controller.url.expect("set");
    assert_eq!(group.as_slice().len(), 3);
    assert_eq!(group.to_string(), "http://a:1, http://b:1, http://c:1");
    // Written back as it was read (a reload compares configs so).
    assert_eq!(
        serde_yaml_ng::to_string(&one).expect("yaml").trim(),
        "http://a:1"
    );
    assert!(serde_yaml_ng::to_string(&group)
        .expect("yaml")
        .starts_with("- http://a:1"));
    let pair = with("[http://a:1, http://b:1]").expect("valid");
    assert!(
        pair.warnings()
            .iter()
            .any(|w| w.contains("majority of two")),
        "{:?}",
        pair.warnings()
    );
    let trio = with("[http://a:1, http://b:1, http://c:1]").expect("valid");
    assert!(!trio.warnings().iter().any(|w| w.contains("majority")));
    for (url, says) in [
        ("[http://a:1, http://a:1]", "listed twice"),
        ("[http://c:80/, HTTP://C, http://d:1]", "listed twice"),
        ("[]", "lists no address"),
        ("[http://a:1, b:1]", "must start with http://"),
        // A list written without brackets: one string.
        (
            "http://a:1, http://b:1, http://c:1",
            "several addresses in one string",
        ),
    ] {
        let err = with(url).unwrap_err().to_string();
        assert!(
            err.contains("controller.url") && err.contains(says),
            "{url}: {err}"
        );
    }
}

#[test]
fn bad_addresses_are_rejected() {
    let err = Config::parse("backend:\n  addr: nohostport\n", "f")
        .unwrap_err()
        .to_string();
    assert!(err.contains("backend.addr"), "{err}");
    let err = Config::parse("listen: x\nbackend:\n  addr: h:1\n", "f")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
    // Its own listener as its node: it would connect to itself.
    for (listen, backend) in [
        ("127.0.0.1:6380", "127.0.0.1:6380"),
        ("0.0.0.0:6380", "127.0.0.1:6380"),
        ("0.0.0.0:6380", "localhost:6380"),
        ("\"[::]:6380\"", "\"[::1]:6380\""),
    ] {
        let err = Config::parse(
            &format!("listen: {listen}\nbackend:\n  addr: {backend}\n"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("backend.addr") && err.contains("own listen"),
            "{listen} {backend}: {err}"
        );
    }
    for (listen, backend) in [
        ("0.0.0.0:6380", "127.0.0.1:6379"),
        ("127.0.0.1:6380", "10.0.0.2:6380"),
        ("0.0.0.0:6380", "node-a:6380"),
    ] {
        Config::parse(
            &format!("listen: {listen}\nbackend:\n  addr: {backend}\n"),
            "f",
        )
        .unwrap_or_else(|e| panic!("{listen} {backend}: {e}"));
    }
}

#[test]
fn a_sentinel_section_is_checked_at_load() {
    let base = "listen: 127.0.0.1:7000\nbackend:\n  addr: h:1\n";
    let ok = format!("{base}sentinel:\n  addrs: [s1:26379, s2:26379]\n  master_name: m\n");
    let c = Config::parse(&ok, "f").expect("valid");
    assert_eq!(c.sentinel_address(), "127.0.0.1:7000", "listen by default");
    for (yaml, key) in [
        ("sentinel:\n  addrs: [s1:26379]\n", "sentinel.master_name"),
        (
            "sentinel:\n  addrs: [s1]\n  master_name: m\n",
            "sentinel.addrs",
        ),
        (
            "sentinel:\n  addrs: [s1:1]\n  master_name: m\ncontroller:\n  url: http://c:1\n",
            "sentinel.addrs",
        ),
        (
            "sentinel:\n  addrs: [s1:1]\n  master_name: m\n  address: nope\n",
            "sentinel.address",
        ),
    ] {
        let err = Config::parse(&format!("{base}{yaml}"), "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
    // Listening on every address, the Sentinels' name for this
    // leasegate must be given.
    let wild = "listen: 0.0.0.0:7000\nbackend:\n  addr: h:1\nsentinel:\n  addrs: [s1:1]\n  master_name: m\n";
    let err = Config::parse(wild, "f").unwrap_err().to_string();
    assert!(err.contains("sentinel.address"), "{err}");
    let named = format!("{wild}  address: 10.0.0.5:7000\n");
    assert_eq!(
        Config::parse(&named, "f")
            .expect("valid")
            .sentinel_address(),
        "10.0.0.5:7000"
    );
}

#[test]
fn deny_typo_is_an_error() {
    let text = "backend:\n  addr: h:1\ncommands:\n  deny: [flushal]\n";
    let err = Config::parse(text, "f").unwrap_err().to_string();
    assert!(err.contains("flushal"), "{err}");
    let ok = "backend:\n  addr: h:1\ncommands:\n  deny: [FLUSHALL, mod.cmd]\n  classes: {mod.cmd: write}\n";
    Config::parse(ok, "f").expect("valid");
}

#[test]
fn allow_from_is_parsed_at_load_and_errors_name_the_line() {
    let ok = "backend:\n  addr: 127.0.0.1:6666\ncontrol:\n  allow_from: [10.0.0.0/24, \"::1\"]\n";
    let c = Config::parse(ok, "f.yaml").expect("valid");
    assert_eq!(c.control.allow_from.len(), 2);
    let bad = "backend:\n  addr: 127.0.0.1:6666\ncontrol:\n  allow_from:\n    - 10.0.0.0/24\n    - 10.0.0.x\n";
    let err = Config::parse(bad, "f.yaml").unwrap_err().to_string();
    assert!(
        err.contains("control.allow_from") && err.contains("10.0.0.x") && err.contains("line 5"),
        "{err}"
    );
    let listen = "listen: nowhere\nbackend:\n  addr: 127.0.0.1:6666\n";
    let err = Config::parse(listen, "f.yaml").unwrap_err().to_string();
    assert!(err.contains("listen") && err.contains("line 1"), "{err}");
}

/// A margin past the longest lease is refused: past 2^64 ns it wrapped to
/// almost nothing and left the lease its whole term (an audit).
#[test]
fn a_safety_margin_past_the_longest_lease_is_refused() {
    let with = |ms: u64| {
        Config::parse(
            &format!("backend:\n  addr: h:1\nlease:\n  safety_margin_ms: {ms}\n"),
            "t",
        )
    };
    with(crate::guard::lease::MAX_TTL_MS).expect("one hour is allowed");
    for ms in [crate::guard::lease::MAX_TTL_MS + 1, 18_446_744_073_710] {
        let err = with(ms).unwrap_err().to_string();
        assert!(err.contains("lease.safety_margin_ms"), "{ms}: {err}");
    }
}
