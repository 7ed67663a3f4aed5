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
    /// The probe has connected once and learned whether it is Kvrocks.
    kind_known: std::sync::atomic::AtomicBool,
    /// The node answered a `PING` sent without a login ([`Self::set_door`]):
    /// its default user needs no password, so clients that have not
    /// authenticated are not held to the limits the node keeps for them.
    open_door: std::sync::atomic::AtomicBool,
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
    /// The master the probe saw the node begin to follow (after seeing it
    /// a master, or following another, or restarted: its offset went
    /// back) and has not seen it linked to since (`ROLE`'s `connected`,
    /// `INFO`'s `master_link_status:up`): it lacks what that master
    /// acknowledged since ([`NodeStatus::unsynced_with_its_master`]). A
    /// node only ever seen following its master (this process started
    /// later) is not counted: nothing is known of it. A failed probe does
    /// not set it: a busy node missing a probe just before its master
    /// dies must stay promotable.
    #[serde(skip)]
    pub unsynced_with: Option<String>,
    /// What the last successful probe saw, kept across failed ones.
    #[serde(skip)]
    last_replication: Option<Replication>,
}

impl NodeView {
    /// Notes what a probe saw for [`Self::unsynced_with`] (`before`: what
    /// the last successful probe saw).
    fn note_link(&mut self, r: &Replication, before: Option<&Replication>) {
        let (Some("slave"), Some(master)) = (r.role.as_deref(), &r.master) else {
            self.unsynced_with = None;
            return;
        };
        // `INFO`'s `master_link_status`, `ROLE`'s replica state.
        if matches!(r.link_status.as_deref(), Some("up" | "connected")) {
            self.unsynced_with = None;
            return;
        }
        let went_back = matches!(
            (before.and_then(|b| b.offset), r.offset),
            (Some(was), Some(now)) if now < was
        );
        let began = before.is_some_and(|b| {
            b.role.as_deref() != Some("slave") || b.master.as_ref() != Some(master)
        });
        if began || went_back {
            self.unsynced_with = Some(master.clone());
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

    /// Whether the node, a replica as the probe last saw it, was seen to
    /// begin following its master (or to restart) and has not been linked
    /// to it since: a full sync still under way, or a node made to follow
    /// a new master that never connected. Promoted, it would come out
    /// without that master's writes.
    pub fn unsynced_with_its_master(&self) -> bool {
        let Ok(v) = self.inner.lock() else {
            return false;
        };
        let following = v
            .replication
            .as_ref()
            .filter(|r| r.role.as_deref() == Some("slave"))
            .and_then(|r| r.master.as_ref());
        following.is_some() && v.unsynced_with.as_ref() == following
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
        self.kind_known
            .store(true, std::sync::atomic::Ordering::Release);
        self.looked_at();
    }

    /// What the probe learned of the node's door: whether a client that
    /// sent no login is served (`open`) or asked to authenticate. Returns
    /// whether that changed what was known.
    pub fn set_door(&self, open: bool) -> bool {
        self.open_door
            .swap(open, std::sync::atomic::Ordering::Relaxed)
            != open
    }

    /// Whether the node serves clients that sent no login, as the probe
    /// last saw (`false` until it has looked: a node with a password is
    /// taken to require it).
    pub fn lets_in_without_login(&self) -> bool {
        self.open_door.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the node may be Kvrocks: it said so, or the probe has not
    /// learned yet what it is (a node down since start-up). Where being
    /// wrong about Kvrocks would let a write pass as a read
    /// ([`crate::command::Special::ReadOnlyScript`]).
    pub fn may_be_kvrocks(&self) -> bool {
        self.is_kvrocks() || !self.kind_known.load(std::sync::atomic::Ordering::Acquire)
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

    /// Whether the node answered the last probe (it is up, as far as the
    /// probe knows).
    pub fn answers(&self) -> bool {
        self.inner
            .lock()
            .map(|v| v.failures == 0 && v.last_success.is_some())
            .unwrap_or(false)
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

    /// A replica counts as behind its master when the probe saw it begin
    /// to follow it (or restart) and not linked since: not while a new
    /// master's full sync is under way; not after a restart until it is
    /// linked again; never for a node only ever seen following.
    #[test]
    fn a_replica_seen_to_begin_following_is_behind_until_linked() {
        let node = NodeStatus::default();
        assert!(!node.unsynced_with_its_master(), "nothing probed");
        node.succeeded(replica("a:1", "connecting"));
        assert!(
            !node.unsynced_with_its_master(),
            "only ever seen following: nothing known"
        );
        node.succeeded(replica("a:1", "connected"));
        node.succeeded(replica("a:1", "connect"));
        assert!(
            !node.unsynced_with_its_master(),
            "its master died: it holds what the link brought"
        );
        node.succeeded(replica("b:2", "connect"));
        assert!(node.unsynced_with_its_master(), "a new master, not linked");
        node.succeeded(replica("b:2", "sync"));
        assert!(node.unsynced_with_its_master(), "a full sync under way");
        let at = |offset: u64, link: &str| Replication {
            offset: Some(offset),
            ..replica("b:2", link)
        };
        node.succeeded(at(500, "connected"));
        assert!(!node.unsynced_with_its_master());
        node.failed("no reply within 100 ms".into());
        node.succeeded(at(600, "connect"));
        assert!(
            !node.unsynced_with_its_master(),
            "one missed probe before its master died"
        );
        node.failed("refused".into());
        node.succeeded(at(0, "connect"));
        assert!(node.unsynced_with_its_master(), "restarted empty");
        node.succeeded(Replication {
            role: Some("master".into()),
            ..Default::default()
        });
        assert!(!node.unsynced_with_its_master(), "a master");
        node.succeeded(replica("a:1", "connecting"));
        assert!(
            node.unsynced_with_its_master(),
            "a master made to follow: an old master's data"
        );
    }
}
