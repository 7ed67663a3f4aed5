//! What the node said about itself when leasegate's probe last asked
//! (`ROLE`), and the probe's record: failures in a row, the last success,
//! the interval. Written by the probe ([`crate::control::probe`]), read by
//! `/v1/status`, `/v1/probe` and the controller's `CLUSTERX PROBE` — the
//! node's neighbour as a witness for a failover vote.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kvrocks::topology::Replication;

/// The latest the node said about itself, and the probe's record.
#[derive(Debug, Default)]
pub struct NodeStatus {
    inner: Mutex<NodeView>,
    /// The probe's interval in ms (0: the probe is off).
    interval_ms: std::sync::atomic::AtomicU64,
    /// `leasegate_node_probe_failures`: failed probes in a row.
    pub failures_gauge: Gauge,
    /// `leasegate_node_is_master`: 1 when the last probe saw `master`.
    pub is_master_gauge: Gauge,
    /// The last probe saw `slave` (read by the Gate on every read with
    /// `lease.fence_reads`).
    replica: std::sync::atomic::AtomicBool,
    /// The node said it is Kvrocks (`INFO server` has `kvrocks_version`)
    /// when the probe connected; sessions follow its ways where Kvrocks and
    /// Redis differ (`CLIENT REPLY`, RESP3 pub/sub messages).
    kvrocks: std::sync::atomic::AtomicBool,
    /// How many times the probe saw a Kvrocks node turn from master to
    /// replica, and the sessions waiting for the next time: those blocked
    /// on the node in BLPOP & co., which Kvrocks does not unblock.
    demotions: std::sync::atomic::AtomicU64,
    demoted: tokio::sync::Notify,
    /// The probe has looked at the node once (learned what it is, or
    /// failed): [`Self::first_look`].
    looked: crate::guard::once::OnceEvent,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NodeView {
    pub replication: Option<Replication>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
    /// Failed probes in a row (0 after a success).
    #[serde(skip)]
    pub failures: u64,
    /// When a probe last succeeded.
    #[serde(skip)]
    pub last_success: Option<Instant>,
    /// Probes made so far.
    #[serde(skip)]
    pub probes: u64,
    /// The master the node was last seen linked to (`ROLE`'s `connected`,
    /// `INFO`'s `master_link_status:up`) as its replica, without a change of role or master since, nor
    /// a replication offset lower than the one before (a restart: a Redis
    /// node without persistence comes back empty): what it holds came from
    /// that master's stream, up to when the link last stood
    /// ([`NodeStatus::synced_with_its_master`]). A failed probe alone
    /// does not clear it: a busy node missing one probe just before its
    /// master dies must stay promotable.
    #[serde(skip)]
    pub synced_with: Option<String>,
    /// What the last successful probe saw, kept across failed ones.
    #[serde(skip)]
    last_replication: Option<Replication>,
}

impl NodeView {
    /// Notes what a probe saw for [`Self::synced_with`] (`before`: what the
    /// last successful probe saw).
    fn note_link(&mut self, r: &Replication, before: Option<&Replication>) {
        let went_back = matches!(
            (before.and_then(|b| b.offset), r.offset),
            (Some(was), Some(now)) if now < was
        );
        match (r.role.as_deref(), &r.master, r.link_status.as_deref()) {
            // `INFO`'s `master_link_status`, `ROLE`'s replica state.
            (Some("slave"), Some(master), Some("up" | "connected")) => {
                self.synced_with = Some(master.clone())
            }
            (Some("slave"), Some(master), _)
                if !went_back && self.synced_with.as_ref() == Some(master) => {}
            _ => self.synced_with = None,
        }
    }
}

impl NodeStatus {
    /// The probe runs every `ms` (0: off).
    pub fn set_interval_ms(&self, ms: u64) {
        self.interval_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The record in INFO form (`key:value` lines), as `CLUSTERX PROBE`
    /// answers it.
    pub fn report_text(&self) -> String {
        let v = self.view();
        let interval = self.interval_ms();
        let r = v.replication.clone().unwrap_or_default();
        format!(
            "# Probe\r\nenabled:{}\r\nprobe_interval_ms:{interval}\r\nreachable:{}\r\nconsecutive_failures:{}\r\nlast_success_ms_ago:{}\r\nprobes:{}\r\nrole:{}\r\noffset:{}\r\nerror:{}\r\n",
            u8::from(interval > 0),
            u8::from(v.probes > 0 && v.failures == 0),
            v.failures,
            v.last_success
                .map_or("-1".to_string(), |t| t.elapsed().as_millis().to_string()),
            v.probes,
            r.role.as_deref().unwrap_or(""),
            r.offset.map_or(String::new(), |o| o.to_string()),
            v.error.as_deref().unwrap_or("").replace(['\r', '\n'], " "),
        )
    }

    /// Whether the node, a replica as the probe last saw it, has been
    /// linked to the master it follows since it began following it (and
    /// since it last restarted, as far as its offset tells). `false`
    /// for one that has not: a full sync still under way, or a node made
    /// to follow a new master that never connected; promoted, it would
    /// come out without that master's writes. `None` when the probe has
    /// not seen the node as a replica (off, or not yet).
    pub fn synced_with_its_master(&self) -> Option<bool> {
        let v = self.inner.lock().ok()?;
        let following = v
            .replication
            .as_ref()
            .filter(|r| r.role.as_deref() == Some("slave"))?
            .master
            .as_ref()?;
        Some(v.synced_with.as_ref() == Some(following))
    }

    pub fn view(&self) -> NodeView {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "node_probe_failures",
            "Probes of the node that failed in a row (0 after a success)",
            self.failures_gauge.clone(),
        );
        registry.register(
            "node_is_master",
            "1 when the node's last ROLE said master",
            self.is_master_gauge.clone(),
        );
    }

    pub fn succeeded(&self, replication: Replication) {
        let master = replication.role.as_deref() == Some("master");
        if let Ok(mut v) = self.inner.lock() {
            let before = v.replication.take().or_else(|| v.last_replication.take());
            v.note_link(&replication, before.as_ref());
            v.last_replication = Some(replication.clone());
            v.replication = Some(replication);
            v.error = None;
            v.failures = 0;
            v.last_success = Some(Instant::now());
            v.probes += 1;
        }
        self.failures_gauge.set(0);
        self.is_master_gauge.set(i64::from(master));
        self.replica
            .store(!master, std::sync::atomic::Ordering::Relaxed);
        self.looked_at();
    }

    /// What the probe learned the node is, when it connected.
    pub fn set_kvrocks(&self, kvrocks: bool) {
        self.kvrocks
            .store(kvrocks, std::sync::atomic::Ordering::Relaxed);
        self.looked_at();
    }

    /// The probe looked at the node: it learned what it is, or failed.
    fn looked_at(&self) {
        self.looked.set();
    }

    /// Returns once the probe has looked at the node for the first time
    /// (what it is, or that it cannot say): the server admits clients only
    /// then, so that no session follows Redis' ways on a Kvrocks node for
    /// want of an answer that was on its way.
    pub async fn first_look(&self) {
        self.looked.wait().await
    }

    /// Whether the node is Kvrocks, as far as the probe knows (Redis when
    /// the probe is off or has not connected yet).
    pub fn is_kvrocks(&self) -> bool {
        self.kvrocks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The probe saw this Kvrocks node turn from master to replica: a
    /// client blocked on it (BLPOP & co.) would wait for good, for elements
    /// that now go to the new master (Redis unblocks such clients with
    /// `-UNBLOCKED`; Kvrocks keeps them). The sessions waiting in
    /// [`Self::demoted_since`] end their blocking command.
    pub fn kvrocks_demoted(&self) {
        self.demotions
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.demoted.notify_waiters();
    }

    /// How many such demotions the probe has seen, for [`Self::demoted_since`].
    pub fn demotions(&self) -> u64 {
        self.demotions.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once the probe has seen the node demoted after `seen`
    /// ([`Self::demotions`] when the wait began).
    pub async fn demoted_since(&self, seen: u64) {
        loop {
            let notified = self.demoted.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.demotions() > seen {
                return;
            }
            notified.await;
        }
    }

    /// Whether the last probe saw the node as a replica.
    #[inline]
    pub fn is_replica(&self) -> bool {
        self.replica.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets what earlier probes saw (the probe was switched off).
    pub fn reset(&self) {
        if let Ok(mut v) = self.inner.lock() {
            *v = NodeView::default();
        }
        self.failures_gauge.set(0);
        self.is_master_gauge.set(0);
        self.replica
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn failed(&self, error: String) {
        let failures = match self.inner.lock() {
            Ok(mut v) => {
                v.replication = None;
                v.error = Some(error);
                v.failures += 1;
                v.probes += 1;
                v.failures
            }
            Err(_) => 0,
        };
        self.failures_gauge
            .set(i64::try_from(failures).unwrap_or(i64::MAX));
        self.looked_at();
        self.is_master_gauge.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(master: &str, link: &str) -> Replication {
        Replication {
            role: Some("slave".into()),
            master: Some(master.into()),
            link_status: Some(link.into()),
            ..Default::default()
        }
    }

    /// A replica counts as synced with its master only once its link to
    /// that master was seen up: not while a new master's full sync is under
    /// way, and not after a failed probe (a restart) until it is up again.
    #[test]
    fn a_replica_is_synced_with_the_master_it_was_seen_linked_to() {
        let node = NodeStatus::default();
        assert_eq!(node.synced_with_its_master(), None, "nothing probed");
        node.succeeded(replica("a:1", "down"));
        assert_eq!(node.synced_with_its_master(), Some(false), "never linked");
        node.succeeded(replica("a:1", "up"));
        assert_eq!(node.synced_with_its_master(), Some(true));
        node.succeeded(replica("a:1", "down"));
        assert_eq!(
            node.synced_with_its_master(),
            Some(true),
            "its master died: it holds what the link brought"
        );
        node.succeeded(replica("b:2", "down"));
        assert_eq!(node.synced_with_its_master(), Some(false), "a new master");
        let at = |offset: u64, link: &str| Replication {
            offset: Some(offset),
            ..replica("b:2", link)
        };
        node.succeeded(at(500, "connected"));
        node.failed("no reply within 100 ms".into());
        node.succeeded(at(600, "down"));
        assert_eq!(
            node.synced_with_its_master(),
            Some(true),
            "one missed probe before its master died"
        );
        node.failed("refused".into());
        node.succeeded(at(0, "down"));
        assert_eq!(
            node.synced_with_its_master(),
            Some(false),
            "restarted empty"
        );
        node.succeeded(Replication {
            role: Some("master".into()),
            ..Default::default()
        });
        assert_eq!(node.synced_with_its_master(), None, "a master");
    }
}
