//! The `# Leasegate` section of `INFO`: what this proxy knows (lease,
//! pause, failover, demotion), so that `redis-cli info` shows it beside the
//! node's own sections.
//!
//! * `INFO`, `INFO default|all|everything`: forwarded; the section is
//!   appended to the node's reply (a bulk string, or RESP3's verbatim
//!   string).
//! * `INFO leasegate`: answered here, without touching the node.
//! * `INFO <sections...> leasegate`: the other sections are asked of the
//!   node, and the section is appended.
//! * `INFO replication`: forwarded; no section is appended.
//! * Any other `INFO`: forwarded unchanged.
//!
//! Wherever the node's reply has a `# Replication` section, its
//! `master_failover_state` is leasegate's: leasegate answers `FAILOVER`
//! ([`crate::guard::failover_command`]), so the node's own field (Redis
//! says `no-failover`; Kvrocks has none) would not tell its progress.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::guard::gate::{Admission, Answer, Gate, Verdict};
use crate::resp::request::arguments;

/// The section's name as `INFO` takes it.
const SECTION: &[u8] = b"leasegate";

impl Gate {
    /// The Gate's answer to an `INFO` request.
    #[cold]
    pub(super) fn info(&self, r: &Admission<'_>) -> Verdict {
        if r.control {
            if let Some(timing) = self.pause_timing.get() {
                timing.offset_read(std::time::Instant::now());
            }
        }
        let args = arguments(r.bytes, r.head.inline);
        let sections = args.get(1..).unwrap_or_default();
        let is = |s: &Vec<u8>, name: &[u8]| s.eq_ignore_ascii_case(name);
        let section = sections.is_empty()
            || sections.iter().any(|s| {
                [SECTION, b"all", b"everything", b"default"]
                    .iter()
                    .any(|n| is(s, n))
            });
        if !section {
            return if sections.iter().any(|s| is(s, b"replication")) {
                Verdict::Rewrite {
                    request: Bytes::copy_from_slice(r.bytes),
                    answer: Answer::Info { section: false },
                }
            } else {
                Verdict::Forward
            };
        }
        let others: Vec<&[u8]> = sections
            .iter()
            .filter(|s| !is(s, SECTION))
            .map(Vec::as_slice)
            .collect();
        if others.is_empty() && !sections.is_empty() {
            return Verdict::Reply(crate::resp::encode::bulk(self.info_section().as_bytes()));
        }
        let mut request: Vec<&[u8]> = vec![b"INFO"];
        request.extend(others);
        Verdict::Rewrite {
            request: crate::resp::encode::request(&request),
            answer: Answer::Info { section: true },
        }
    }

    /// The node's `INFO` reply (a complete frame) with leasegate's
    /// `master_failover_state` and, when `section`, the section appended;
    /// anything but a (verbatim) string passes unchanged.
    pub fn info_reply(&self, node_reply: &[u8], section: bool) -> Bytes {
        let Some((kind, body)) = string_body(node_reply) else {
            return Bytes::copy_from_slice(node_reply);
        };
        let state = self.role().failover_command.state().as_str();
        let mut text = with_failover_state(body, state);
        if self.role().stale_master_as_replica.load(Ordering::Relaxed) {
            if let Some(new_master) = self.role().demotion().and_then(|d| d.new_master.clone()) {
                text = as_replica_of(&text, &new_master);
            }
        }
        if section {
            if !text.is_empty() && !text.ends_with(b"\r\n") {
                text.extend_from_slice(b"\r\n");
            }
            if !text.is_empty() {
                text.extend_from_slice(b"\r\n");
            }
            text.extend_from_slice(self.info_section().as_bytes());
        }
        let mut out = format!("{}{}\r\n", kind as char, text.len()).into_bytes();
        out.extend_from_slice(&text);
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }

    /// `# Leasegate` and its fields, INFO-style (`key:value` lines).
    pub fn info_section(&self) -> String {
        let lease = self.lease().snapshot();
        let pause = self.pause().status();
        let demotion = self.role().demotion();
        let remaining = match (lease.valid, lease.remaining_ms) {
            (false, _) => "0".to_string(),
            (true, u64::MAX) => "-1".to_string(),
            (true, ms) => ms.to_string(),
        };
        let mode = match lease.mode {
            crate::guard::lease::LeaseMode::Disabled => "disabled",
            crate::guard::lease::LeaseMode::LogOnly => "log-only",
            crate::guard::lease::LeaseMode::BlockWrite => "block-write",
        };
        format!(
            "# Leasegate\r\nleasegate_version:{}\r\nlease_mode:{mode}\r\nlease_valid:{}\r\nlease_epoch:{}\r\nlease_remaining_ms:{remaining}\r\nlease_owner:{}\r\nlease_node_id:{}\r\nlease_revoked_reason:{}\r\npaused:{}\r\npause_mode:{}\r\npause_held_requests:{}\r\ncluster_failover_state:{}\r\ndemoted:{}\r\ndemoted_new_master:{}\r\ncontroller_version:{}\r\nmaster_failover_state:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            u8::from(lease.valid),
            lease.epoch,
            one_line(lease.owner.as_deref()),
            one_line(lease.node_id.as_deref()),
            one_line(lease.revoked_reason.as_deref()),
            u8::from(pause.paused),
            match pause.mode {
                Some(crate::guard::pause::PauseMode::Write) => "write",
                Some(crate::guard::pause::PauseMode::All) => "all",
                None => "",
            },
            pause.held_requests,
            self.role().failover.state().as_str(),
            u8::from(demotion.is_some()),
            one_line(demotion.as_ref().and_then(|d| d.new_master.as_deref())),
            self.role().controller_version(),
            self.role().failover_command.state().as_str(),
        )
    }
}

/// `info` (INFO text) with `master_failover_state:<state>` in its
/// `# Replication` section: the node's line replaced, or one added after
/// `role:` (Kvrocks has none). Text without that section is unchanged.
fn with_failover_state(info: &[u8], state: &str) -> Vec<u8> {
    const FIELD: &[u8] = b"master_failover_state:";
    let line = [FIELD, state.as_bytes(), b"\r\n"].concat();
    let mut out = Vec::with_capacity(info.len() + line.len());
    let mut in_replication = false;
    let mut placed = false;
    let mut lines = info.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(l) = lines.next() {
        let bare = l.strip_suffix(b"\n").unwrap_or(l);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.starts_with(b"#") {
            in_replication = bare[1..].trim_ascii().eq_ignore_ascii_case(b"replication");
        }
        if in_replication && !placed && bare.starts_with(FIELD) {
            out.extend_from_slice(&line);
            placed = true;
            continue;
        }
        out.extend_from_slice(l);
        if !l.ends_with(b"\n") && in_replication && !placed && bare.starts_with(b"role:") {
            out.extend_from_slice(b"\r\n"); // the last line had no CRLF
        }
        if in_replication && !placed && bare.starts_with(b"role:") {
            // Added after `role:` unless the node's own line comes later.
            let later = info_has_field_after(lines.clone(), FIELD);
            if !later {
                out.extend_from_slice(&line);
                placed = true;
            }
        }
    }
    out
}

/// `info` with a `role:master` line of its `# Replication` section shown as
/// a replica of `new_master` (`host:port`) whose link is down: an old
/// master the Sentinels replaced, whose node has not followed the new one
/// yet (`control::sentinel::stale`). Sentinel must neither take it for a
/// promoted replica nor prefer it. Other text is unchanged.
fn as_replica_of(info: &[u8], new_master: &str) -> Vec<u8> {
    let Some((host, port)) = new_master.rsplit_once(':') else {
        return info.to_vec();
    };
    let replica = format!(
        "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:down\r\n"
    );
    let mut out = Vec::with_capacity(info.len() + replica.len());
    let mut in_replication = false;
    for l in info.split_inclusive(|&b| b == b'\n') {
        let bare = l.strip_suffix(b"\n").unwrap_or(l);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.starts_with(b"#") {
            in_replication = bare[1..].trim_ascii().eq_ignore_ascii_case(b"replication");
        }
        if in_replication && bare == b"role:master" {
            out.extend_from_slice(replica.as_bytes());
            continue;
        }
        out.extend_from_slice(l);
    }
    out
}

/// Whether a later line of the same section starts with `field`.
fn info_has_field_after<'a>(lines: impl Iterator<Item = &'a [u8]>, field: &[u8]) -> bool {
    for l in lines {
        if l.starts_with(b"#") {
            return false;
        }
        if l.starts_with(field) {
            return true;
        }
    }
    false
}

/// The kind byte and body of a bulk (`$`) or verbatim (`=`, its `txt:`
/// prefix kept) string frame.
fn string_body(frame: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *frame.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let header_end = frame.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&frame[1..header_end])
        .ok()?
        .parse()
        .ok()?;
    let start = header_end + 2;
    frame.get(start..start + len).map(|body| (kind, body))
}

/// A field's value as one line: what came from the network (a heartbeat's
/// master, a topology's address) may hold a line break, and another
/// leasegate reads this section line by line (a fence reads
/// `lease_valid` and `controller_version` from it).
fn one_line(value: Option<&str>) -> std::borrow::Cow<'_, str> {
    let value = value.unwrap_or("");
    if value.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(value.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::{as_replica_of, string_body, with_failover_state};

    #[test]
    fn a_replaced_masters_node_shows_as_the_new_masters_replica() {
        let kvrocks = b"# Server\r\nrole:master\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:9\r\n";
        assert_eq!(
            as_replica_of(kvrocks, "10.0.0.2:6380"),
            b"# Server\r\nrole:master\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.2\r\nmaster_port:6380\r\nmaster_link_status:down\r\nconnected_slaves:0\r\nmaster_repl_offset:9\r\n"
        );
        // A node that follows someone already is shown as it is.
        let replica = b"# Replication\r\nrole:slave\r\nmaster_host:10.0.0.2\r\n";
        assert_eq!(as_replica_of(replica, "10.0.0.2:6380"), replica);
    }

    #[test]
    fn the_replication_section_carries_leasegates_failover_state() {
        let redis = b"# Server\r\nx:1\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\n";
        let out = with_failover_state(redis, "waiting-for-sync");
        assert_eq!(
            out,
            b"# Server\r\nx:1\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:waiting-for-sync\r\nmaster_repl_offset:0\r\n"
        );
        let kvrocks = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n# Stats\r\nmaster_failover_state:x\r\n";
        assert_eq!(
            with_failover_state(kvrocks, "no-failover"),
            b"# Replication\r\nrole:master\r\nmaster_failover_state:no-failover\r\nconnected_slaves:0\r\n\r\n# Stats\r\nmaster_failover_state:x\r\n",
            "added after role:, and only in # Replication"
        );
        let no_section = b"# Server\r\nrole:master\r\n";
        assert_eq!(with_failover_state(no_section, "x"), no_section);
    }

    #[test]
    fn a_value_with_line_breaks_stays_on_its_line() {
        // A heartbeat's master named so would otherwise add a field.
        assert_eq!(
            super::one_line(Some("m\r\nlease_valid:0")),
            "m  lease_valid:0"
        );
        assert_eq!(super::one_line(Some("127.0.0.1:7")), "127.0.0.1:7");
        assert_eq!(super::one_line(None), "");
    }

    #[test]
    fn string_frames_are_read() {
        assert_eq!(string_body(b"$3\r\nabc\r\n"), Some((b'$', &b"abc"[..])));
        assert_eq!(
            string_body(b"=7\r\ntxt:abc\r\n"),
            Some((b'=', &b"txt:abc"[..]))
        );
        assert_eq!(string_body(b"-ERR x\r\n"), None);
        assert_eq!(string_body(b"$-1\r\n"), None);
    }
}
