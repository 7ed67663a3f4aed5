//! The deployment files in `deploy/` and the Dockerfile's HEALTHCHECK: the
//! Grafana dashboard and the Prometheus alert rules parse and use only the
//! metrics leasegate exports; `promtool` (when found) accepts the rules, the
//! scrape config and the dashboard's queries, and the alerts fire in the
//! scenarios of `tests/deploy/alerts_test.yml`; the systemd unit has what it
//! needs; the HEALTHCHECK command passes against a running leasegate.
//!
//! `promtool` is looked for in `LEASEGATE_PROMTOOL`, then on `PATH` (Debian
//! ships it in the `prometheus` package); without it those checks print
//! `SKIPPED`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use leasegate::config::Config;
use support::{free_port, Proxy};

/// Gauges and counters the deploy files may use (counters with `_total`).
const METRICS: &[&str] = &[
    "leasegate_lease_valid",
    "leasegate_lease_remaining_seconds",
    "leasegate_node_is_master",
    "leasegate_node_probe_failures",
    "leasegate_writes_fenced_total",
    "leasegate_unknown_outcomes_total",
    "leasegate_failovers_total",
    "leasegate_heartbeats_total",
    "leasegate_heartbeats_refused_total",
    "leasegate_build_info",
    "leasegate_client_connections",
    "leasegate_controller_answers_total",
];

/// Histograms: used as `<name>_bucket`, `_sum` or `_count`.
const HISTOGRAMS: &[&str] = &[
    "leasegate_failover_duration_seconds",
    "leasegate_pause_hold_duration_seconds",
];

/// The alerts operators are promised (README, "Deploying").
const ALERTS: &[&str] = &[
    "LeasegateLeaseAboutToLapse",
    "LeasegateLeaseNotValidWhileMaster",
    "LeasegateWritesFenced",
    "LeasegateUnknownWriteOutcomes",
    "LeasegateFailoverFailed",
    "LeasegateNodeProbeFailing",
    "LeasegateControllerNotAnswering",
    "LeasegateDown",
];

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// The `leasegate_*` metric names a PromQL expression mentions (quoted
/// strings, i.e. label values, are skipped).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            let word = &expr[start..end];
            if word.starts_with("leasegate_") {
                names.insert(word.to_string());
            }
        }
    }
    names
}

fn is_known_metric(name: &str) -> bool {
    METRICS.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

fn assert_known_metrics(expr: &str, where_: &str) {
    let names = metric_names(expr);
    assert!(
        !names.is_empty(),
        "{where_}: no leasegate metric in {expr:?}"
    );
    for name in names {
        assert!(
            is_known_metric(&name),
            "{where_}: unknown metric {name} in {expr:?}"
        );
    }
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/leasegate.json"))
        .expect("deploy/grafana/leasegate.json is JSON")
}

fn alert_rules() -> Yaml {
    serde_yaml_ng::from_str(&read("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml is YAML")
}

fn rules_of(doc: &Yaml) -> Vec<&Yaml> {
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    assert!(!groups.is_empty(), "no rule group");
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].as_str().is_some(), "a group without a name");
            g["rules"].as_sequence().expect("rules: a list").iter()
        })
        .collect()
}

/// Every expression of the dashboard, with Grafana's variables filled in.
fn dashboard_exprs(dashboard: &Json) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*");
                exprs.push((title.to_string(), expr));
            }
        }
    }
    exprs
}

#[test]
fn grafana_dashboard_panels_query_known_metrics() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    assert_eq!(dashboard["uid"], "leasegate");

    // The datasource is chosen by a variable, the instances by another.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(variable("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(variable("DS_PROMETHEUS")["query"], "prometheus");
    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${DS_PROMETHEUS}");
    assert_known_metrics(
        instance["definition"].as_str().expect("instance query"),
        "variable instance",
    );

    let panels = dashboard["panels"].as_array().expect("panels: a list");
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(!title.is_empty(), "a panel with an empty title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            assert_known_metrics(expr, title);
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: {expr:?} ignores the instance variable"
            );
            used.extend(metric_names(expr));
        }
    }
    // The panels the issue asks for, by the metrics they show.
    for name in [
        "leasegate_lease_valid",
        "leasegate_lease_remaining_seconds",
        "leasegate_node_is_master",
        "leasegate_writes_fenced_total",
        "leasegate_unknown_outcomes_total",
        "leasegate_heartbeats_total",
        "leasegate_heartbeats_refused_total",
        "leasegate_pause_hold_duration_seconds_bucket",
        "leasegate_failovers_total",
        "leasegate_failover_duration_seconds_bucket",
        "leasegate_client_connections",
        "leasegate_build_info",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

#[test]
fn alert_rules_are_complete_and_use_known_metrics() {
    let doc = alert_rules();
    let mut names = BTreeSet::new();
    for rule in rules_of(&doc) {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        assert!(names.insert(alert.to_string()), "{alert} twice");
        let expr = rule["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: no expr"));
        if alert == "LeasegateDown" {
            assert!(expr.contains("up{job=\"leasegate\"}"), "{alert}: {expr}");
        } else {
            assert_known_metrics(expr, alert);
        }
        let severity = rule["labels"]["severity"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: no labels.severity"));
        assert!(
            ["critical", "warning"].contains(&severity),
            "{alert}: severity {severity}"
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no annotations.{key}"));
            assert!(text.len() > 20, "{alert}: annotations.{key} says little");
        }
    }
    let expected: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected);
}

/// `promtool` from `LEASEGATE_PROMTOOL` or `PATH`.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEASEGATE_PROMTOOL") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

fn run(promtool: &Path, args: &[&str], dir: &Path) -> Output {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    eprintln!(
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn promtool_accepts_the_rules_scrape_config_and_dashboard_queries() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED: promtool not found (LEASEGATE_PROMTOOL or PATH); \
             alerts.yml and scrape.yml were only parsed as YAML"
        );
        return;
    };
    let root = path("");
    let work = tempfile::tempdir().expect("temp dir");

    // The rules as shipped.
    let out = run(
        &promtool,
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        &root,
    );
    assert!(out.status.success(), "promtool check rules failed");

    // The scrape config, its rule_files pointed at the rules.
    let alerts = path("deploy/prometheus/alerts.yml");
    let scrape = read("deploy/prometheus/scrape.yml").replace(
        "/etc/prometheus/rules/leasegate-alerts.yml",
        alerts.to_str().expect("utf-8 path"),
    );
    std::fs::write(work.path().join("prometheus.yml"), scrape).expect("write");
    let out = run(
        &promtool,
        &["check", "config", "prometheus.yml"],
        work.path(),
    );
    assert!(out.status.success(), "promtool check config failed");

    // When each alert fires: tests/deploy/alerts_test.yml compares labels
    // only, so it runs against the rules without their annotations.
    let mut doc = alert_rules();
    for group in doc["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            rule.as_mapping_mut().expect("rule").remove("annotations");
        }
    }
    std::fs::write(
        work.path().join("alerts.yml"),
        serde_yaml_ng::to_string(&doc).expect("serialize"),
    )
    .expect("write");
    std::fs::write(
        work.path().join("alerts_test.yml"),
        include_str!("deploy/alerts_test.yml"),
    )
    .expect("write");
    let out = run(
        &promtool,
        &["test", "rules", "alerts_test.yml"],
        work.path(),
    );
    assert!(out.status.success(), "promtool test rules failed");

    // The dashboard's queries parse: each as a recording rule.
    let groups = dashboard_exprs(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            let mut rule = serde_yaml_ng::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}").into());
            rule.insert("expr".into(), expr.into());
            rule.insert(
                "labels".into(),
                Yaml::Mapping([("panel".into(), title.into())].into_iter().collect()),
            );
            Yaml::Mapping(rule)
        })
        .collect::<Vec<_>>();
    let mut group = serde_yaml_ng::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(groups));
    let mut doc = serde_yaml_ng::Mapping::new();
    doc.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    std::fs::write(
        work.path().join("dashboard_queries.yml"),
        serde_yaml_ng::to_string(&doc).expect("serialize"),
    )
    .expect("write");
    let out = run(
        &promtool,
        &["check", "rules", "dashboard_queries.yml"],
        work.path(),
    );
    assert!(out.status.success(), "promtool rejects a dashboard query");
}

/// `key=value` lines of one `[section]` of a unit file.
fn unit_section<'a>(unit: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{name}]");
    let mut lines = unit.lines().map(str::trim);
    assert!(
        lines.any(|l| l == header),
        "the unit has no {header} section"
    );
    lines
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .collect()
}

fn seconds(value: &str) -> f64 {
    if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<f64>().expect("ms") / 1000.0
    } else if let Some(min) = value.strip_suffix("min") {
        min.parse::<f64>().expect("min") * 60.0
    } else {
        value.trim_end_matches('s').parse().expect("seconds")
    }
}

#[test]
fn systemd_unit_has_the_essentials() {
    // systemd-analyze verify is left to humans: it wants the binary and the
    // user in place, and some checks want systemd running.
    let unit = read("deploy/systemd/leasegate.service");
    let service = unit_section(&unit, "Service");
    let value = |key: &str| {
        service
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("[Service] has no {key}="))
    };
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/leasegate run --config /etc/leasegate/leasegate.yaml"
    );
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    // An upgrade's successor tells systemd it is the main process now
    // (tests/upgrade.rs checks that it does).
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("NotifyAccess"), "all");
    assert_eq!(value("Restart"), "on-failure");
    assert_eq!(value("User"), "leasegate");
    // Stopping waits for the drain: longer than the example's and the default.
    let example = Config::parse(&read("config.example.yaml"), "config.example.yaml")
        .expect("config.example.yaml");
    let default = Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "minimal").expect("minimal");
    let stop = seconds(value("TimeoutStopSec"));
    for config in [&example, &default] {
        assert!(
            stop > config.drain_timeout().as_secs_f64(),
            "TimeoutStopSec={stop}s is not above drain_timeout_ms {:?}",
            config.drain_timeout()
        );
    }
    // Two descriptors per client.
    let nofile: usize = value("LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(
        nofile > 2 * default.limits.max_clients,
        "LimitNOFILE={nofile}"
    );
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("CapabilityBoundingSet"), "");
    assert!(unit_section(&unit, "Unit")
        .iter()
        .any(|(k, _)| *k == "Description"));
    assert!(unit_section(&unit, "Install").contains(&("WantedBy", "multi-user.target")));
}

/// The Dockerfile's HEALTHCHECK command (its exec-form JSON array).
fn healthcheck_command() -> Vec<String> {
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let line = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("HEALTHCHECK"))
        .expect("the Dockerfile has a HEALTHCHECK");
    let (_, json) = line.split_once(" CMD ").expect("HEALTHCHECK ... CMD [...]");
    serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD is a JSON array")
}

fn run_healthcheck(command: &[String], port: u16) -> bool {
    let args: Vec<String> = command
        .iter()
        .map(|a| {
            a.replace(
                "/dev/tcp/127.0.0.1/9180",
                &format!("/dev/tcp/127.0.0.1/{port}"),
            )
        })
        .collect();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .spawn()
        .expect("run the HEALTHCHECK command");
    // Docker's --timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn docker_healthcheck_passes_against_leasegate() {
    let command = healthcheck_command();
    assert!(
        command
            .iter()
            .any(|a| a.contains("/dev/tcp/127.0.0.1/9180")),
        "HEALTHCHECK does not ask 127.0.0.1:9180: {command:?}"
    );
    assert!(command.iter().any(|a| a.contains("GET /healthz HTTP/1.0")));
    // 127.0.0.1:9180 is where the image's config and the default put the admin API.
    let example = Config::parse(&read("config.example.yaml"), "config.example.yaml")
        .expect("config.example.yaml");
    let default = Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "minimal").expect("minimal");
    assert_eq!(example.admin.listen, "127.0.0.1:9180");
    assert_eq!(default.admin.listen, "127.0.0.1:9180");

    // The same command, on a test port, against the real binary (no node
    // behind it: liveness does not depend on the node).
    let proxy = Proxy::start(
        &format!("127.0.0.1:{}", free_port()),
        &format!(
            "admin:\n  listen: 127.0.0.1:{}\nlease:\n  probe_interval_ms: 0\ncommands:\n  learn_from_backend: false\n",
            free_port()
        ),
    );
    let port = proxy.admin_port();
    assert!(
        run_healthcheck(&command, port),
        "HEALTHCHECK failed against leasegate"
    );
    drop(proxy);
    // And it fails when nothing answers (bash says "Connection refused").
    assert!(
        !run_healthcheck(&command, port),
        "HEALTHCHECK passed with leasegate stopped"
    );
}
