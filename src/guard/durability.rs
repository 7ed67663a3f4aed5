//! Replica acknowledgements (`durability.min_replicas`): a write's success
//! reply reaches the client only once the node says that many replicas
//! have it.
//!
//! The lease keeps a node that lost mastership from acknowledging writes,
//! but a master cut off from its replicas (and not yet from its clients)
//! still holds its lease for a while, and with asynchronous replication
//! every write it acknowledges then is lost when a replica is promoted.
//! With this rule a session sends the node `WAIT <min_replicas>
//! <timeout_ms>` after each batch of writes and holds their replies until
//! `WAIT` answers; a write the replicas did not confirm in time gets
//! [`NOT_REPLICATED_HEAD`] instead of its success reply (the node applied
//! it, so its outcome is unknown, as for a reply that comes after the
//! lease). This module decides; the session ([`crate::proxy`]) sends and
//! holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use std::time::Duration;

/// The start of what a client gets instead of a write's success reply when
/// the replicas did not confirm it: `UNKNOWN`, as for every reply leasegate
/// replaces, because the node did apply the write (Redis's `NOREPLICAS`
/// says a write was *not* applied, which would mislead here).
pub const NOT_REPLICATED_HEAD: &str = "-UNKNOWN write outcome unknown: ";

/// The rule in force, as a session needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct AckRule {
    /// Replicas that must have the write.
    pub min_replicas: u32,
    pub timeout_ms: u64,
    /// `WAIT <min_replicas> <timeout_ms>` as a RESP request.
    pub request: Bytes,
}

/// The rule a reload may change; sessions read it once per batch of writes.
#[derive(Debug, Default)]
pub struct ReplicaAcks {
    /// Whether a rule is in force (one load on the batch's way out).
    on: AtomicBool,
    rule: ArcSwapOption<AckRule>,
}

impl ReplicaAcks {
    /// Puts `durability.min_replicas` and `durability.timeout_ms` in
    /// force (0 replicas: none); sessions use them from their next batch.
    pub fn set(&self, min_replicas: u32, timeout: Duration) {
        let rule = (min_replicas > 0).then(|| {
            let timeout_ms = timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            Arc::new(AckRule {
                min_replicas,
                timeout_ms,
                request: wait_request(min_replicas, timeout_ms),
            })
        });
        self.on.store(rule.is_some(), Ordering::Relaxed);
        self.rule.store(rule);
    }

    /// The rule in force, if any.
    #[inline]
    pub fn rule(&self) -> Option<Arc<AckRule>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        self.rule.load_full()
    }
}

/// `WAIT <replicas> <timeout_ms>` as a RESP array of bulk strings.
fn wait_request(replicas: u32, timeout_ms: u64) -> Bytes {
    let (r, t) = (replicas.to_string(), timeout_ms.to_string());
    Bytes::from(format!(
        "*3\r\n$4\r\nWAIT\r\n${}\r\n{r}\r\n${}\r\n{t}\r\n",
        r.len(),
        t.len()
    ))
}

/// The node's answer to `WAIT` for writes sent under `min_replicas` and
/// `timeout_ms`: `None` when enough replicas have them, else the reply
/// each of those writes' success replies is replaced with.
pub fn judge(wait_reply: &[u8], min_replicas: u32, timeout_ms: u64) -> Option<Bytes> {
    let why = match replicas_in(wait_reply) {
        Some(n) if n >= i64::from(min_replicas) => return None,
        Some(n) => format!(
            "the node applied it, but only {n} of the {min_replicas} replica(s) durability.min_replicas asks for confirmed it within {timeout_ms} ms, so a failover may lose it"
        ),
        None => format!(
            "the node applied it, but did not answer WAIT with a count of replicas that have it ({})",
            shown(wait_reply, 120)
        ),
    };
    Some(Bytes::from(format!("{NOT_REPLICATED_HEAD}{why}\r\n")))
}

/// A node's reply as an error text may quote it: its first `max`
/// characters, its CRLF and other control characters as spaces.
pub fn shown(reply: &[u8], max: usize) -> String {
    String::from_utf8_lossy(reply.strip_suffix(b"\r\n").unwrap_or(reply))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// The count in `:<n>\r\n`.
fn replicas_in(reply: &[u8]) -> Option<i64> {
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rule_until_replicas_are_asked_for() {
        let acks = ReplicaAcks::default();
        assert!(acks.rule().is_none());
        acks.set(0, Duration::from_millis(100));
        assert!(acks.rule().is_none());
        acks.set(2, Duration::from_millis(250));
        let rule = acks.rule().expect("a rule");
        assert_eq!(rule.min_replicas, 2);
        assert_eq!(
            &rule.request[..],
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$3\r\n250\r\n"
        );
        acks.set(0, Duration::from_millis(250));
        assert!(acks.rule().is_none(), "a reload switches it off");
    }

    #[test]
    fn enough_replicas_pass_the_replies() {
        assert_eq!(judge(b":1\r\n", 1, 100), None);
        assert_eq!(judge(b":3\r\n", 2, 100), None);
    }

    #[test]
    fn too_few_replicas_or_an_error_replace_them() {
        let short = judge(b":0\r\n", 1, 100).expect("refused");
        assert!(short.starts_with(NOT_REPLICATED_HEAD.as_bytes()));
        assert!(String::from_utf8_lossy(&short).contains("only 0 of the 1 replica(s)"));
        assert!(short.ends_with(b"\r\n"));
        let error = judge(b"-ERR unknown command `wait`\r\n", 1, 100).expect("refused");
        assert!(String::from_utf8_lossy(&error).contains("ERR unknown command"));
        assert_eq!(error.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    }
}
