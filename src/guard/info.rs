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
//! * Any other `INFO`: forwarded unchanged.

use bytes::Bytes;

use crate::guard::gate::{Admission, Answer, Gate, Verdict};
use crate::resp::request::arguments;

/// The section's name as `INFO` takes it.
const SECTION: &[u8] = b"leasegate";

impl Gate {
    /// The Gate's answer to an `INFO` request.
    #[cold]
    pub(super) fn info(&self, r: &Admission<'_>) -> Verdict {
        let args = arguments(r.bytes, r.head.inline);
        let sections = args.get(1..).unwrap_or_default();
        let is = |s: &Vec<u8>, name: &[u8]| s.eq_ignore_ascii_case(name);
        let wanted = sections.is_empty()
            || sections.iter().any(|s| {
                [SECTION, b"all", b"everything", b"default"]
                    .iter()
                    .any(|n| is(s, n))
            });
        if !wanted {
            return Verdict::Forward;
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
            answer: Answer::Info,
        }
    }

    /// The node's `INFO` reply (a complete frame) with the section
    /// appended; anything but a (verbatim) string passes unchanged.
    pub fn info_reply(&self, node_reply: &[u8]) -> Bytes {
        let Some((kind, body)) = string_body(node_reply) else {
            return Bytes::copy_from_slice(node_reply);
        };
        let mut text = body.to_vec();
        if !text.is_empty() && !text.ends_with(b"\r\n") {
            text.extend_from_slice(b"\r\n");
        }
        if !text.is_empty() {
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(self.info_section().as_bytes());
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
            lease.owner.as_deref().unwrap_or(""),
            lease.node_id.as_deref().unwrap_or(""),
            lease.revoked_reason.as_deref().unwrap_or(""),
            u8::from(pause.paused),
            match pause.mode {
                Some(crate::guard::pause::PauseMode::Write) => "write",
                Some(crate::guard::pause::PauseMode::All) => "all",
                None => "",
            },
            pause.held_requests,
            self.role().failover.state().as_str(),
            u8::from(demotion.is_some()),
            demotion
                .as_ref()
                .and_then(|d| d.new_master.as_deref())
                .unwrap_or(""),
            self.role().controller_version(),
            self.role().failover_command.state().as_str(),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::string_body;

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
