//! `INFO` through leasegate: the node's sections plus `# Leasegate`;
//! `INFO leasegate` answered without touching the node.

mod support;

use support::{redis_and_proxy, Reply};

fn text(reply: Reply) -> String {
    match reply {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Other(s) => s,
        other => panic!("INFO answers a string: {other:?}"),
    }
}

#[test]
fn info_has_the_nodes_sections_and_the_leasegate_section() {
    let (_redis, proxy) = redis_and_proxy("lease:\n  mode: block-write\n");
    let mut c = proxy.client();
    let all = text(c.cmd(&["INFO"]));
    assert!(all.contains("# Server"), "{all}");
    assert!(all.contains("# Replication"), "{all}");
    assert!(all.contains("# Leasegate\r\n"), "{all}");
    assert!(all.contains("lease_mode:block-write\r\n"), "{all}");
    assert!(all.contains("lease_valid:0\r\n"), "{all}");
    assert!(all.contains("cluster_failover_state:none\r\n"), "{all}");
    // Every line is a section header, a key:value line or blank.
    for line in all.lines() {
        assert!(
            line.is_empty() || line.starts_with('#') || line.contains(':'),
            "{line:?}"
        );
    }

    let only = text(c.cmd(&["INFO", "leasegate"]));
    assert!(only.starts_with("# Leasegate\r\n"), "{only}");
    assert!(!only.contains("# Server"), "{only}");

    let replication = text(c.cmd(&["INFO", "replication"]));
    assert!(replication.contains("# Replication"), "{replication}");
    assert!(!replication.contains("# Leasegate"), "{replication}");

    let both = text(c.cmd(&["INFO", "replication", "LEASEGATE"]));
    assert!(both.contains("# Replication"), "{both}");
    assert!(both.contains("# Leasegate"), "{both}");
    assert!(!both.contains("# Server"), "{both}");

    // Inline too, and the connection goes on.
    c.send_raw(b"INFO leasegate\r\n");
    assert!(text(c.read()).starts_with("# Leasegate"));
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}

/// The node's MONITOR sees the PING that follows, never the INFO.
#[test]
fn info_leasegate_does_not_touch_the_node() {
    let (redis, proxy) = redis_and_proxy("");
    let mut monitor = redis.client();
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    let mut c = proxy.client();
    let only = text(c.cmd(&["INFO", "leasegate"]));
    assert!(only.contains("lease_valid:"), "{only}");
    assert_eq!(c.cmd(&["ECHO", "after-info"]), Reply::bulk("after-info"));
    loop {
        let line = format!("{:?}", monitor.read());
        assert!(
            !line.to_lowercase().contains("\"info\""),
            "the node saw {line}"
        );
        if line.contains("after-info") {
            break;
        }
    }
}

#[test]
fn info_over_resp3_keeps_its_verbatim_string() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    c.send(&["HELLO", "3"]);
    c.resp3 = true;
    assert!(!c.read().is_error());
    // The test client shows a verbatim string as its decoded frame: look
    // for the sections' bytes in it.
    let reply = format!("{:?}", c.cmd(&["INFO"]));
    let bytes_of = |s: &str| {
        let list = format!("{:?}", s.as_bytes());
        list[1..list.len() - 1].to_string()
    };
    assert!(reply.starts_with("Other(\"VerbatimString"), "{reply}");
    assert!(reply.contains(&bytes_of("# Server\r\n")), "{reply}");
    assert!(reply.contains(&bytes_of("\r\n# Leasegate\r\n")), "{reply}");
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}
