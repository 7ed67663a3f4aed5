//! The node probe: leasegate asks its node for `ROLE` (Kvrocks: `INFO
//! replication`, [`ask_role`]) every `lease.probe_interval_ms`. A node that reports itself a replica has its
//! lease revoked at once, whatever the controller last said; the role and
//! offset are also what `/v1/status` reports.
//!
//! The probe is also a **local witness** for a controller's failover vote
//! (kvrocks-controller PR #396): `GET /v1/probe` reports whether the node
//! answers, how many probes in a row failed, how long ago one last
//! succeeded, its role and sequence. Each probe gets at most one interval to
//! answer, so a stopped node is reported within two intervals.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::control::ControlContext;
pub use crate::guard::node::{NodeStatus, NodeView};
use crate::guard::role::Source;
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::ControlConnection;

/// Probes until `shutdown`; keeps one connection open and reopens it on
/// error. Reads `lease.probe_interval_ms`, `backend.password` (and `.user`) and
/// `backend.connect_timeout_ms` from the running config, again after every
/// reload: an interval of 0 idles until a reload sets one.
pub async fn run(shared: Arc<ControlContext>) {
    let role = Arc::clone(&shared.role);
    let status = &role.node;
    let mut reloaded = shared.reloaded.subscribe();
    // The connection, and the (password, bound) it was opened with.
    let mut conn: Option<(
        ControlConnection,
        Option<crate::resp::login::Login>,
        Duration,
    )> = None;
    // The last probe failed (logged once, and again when the node answers).
    let mut failing = false;
    // The last probe that was answered saw the node master.
    let mut was_master = false;
    // When the probe last asked whether the node serves clients without a login.
    let mut door_looked: Option<std::time::Instant> = None;
    loop {
        let interval = shared.config.load().lease.probe_interval;
        status.set_interval_ms(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX));
        if interval.is_zero() {
            // Disabled: what an earlier probe saw is no longer reported.
            conn = None;
            status.reset();
            tokio::select! {
                r = reloaded.changed() => if r.is_err() { return },
                _ = shared.shutdown.cancelled() => return,
            }
            continue;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                r = reloaded.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if shared.config.load().lease.probe_interval != interval {
                        break;
                    }
                    continue;
                }
                _ = shared.shutdown.cancelled() => return,
            }
            let config = shared.config.load_full();
            // One interval at most per probe: a stopped node is reported
            // within two.
            let bound = interval
                .min(config.connect_timeout())
                .max(Duration::from_millis(1));
            let login = config.backend.login();
            if conn
                .as_ref()
                .is_some_and(|(_, l, b)| *l != login || *b != bound)
            {
                conn = None;
            }
            if conn.is_none() {
                match shared.open_node(bound).await {
                    Ok(mut c) => {
                        // What the node is, once per connection: sessions
                        // follow Kvrocks' ways where it differs from Redis.
                        match tokio::time::timeout(bound, c.is_kvrocks()).await {
                            Ok(Ok(kvrocks)) => {
                                status.set_kvrocks(kvrocks);
                                // Once per connection, like what the node is
                                // (a node without an id yet gets it by a
                                // `CLUSTERX SETNODEID` that passes here).
                                if kvrocks
                                    && shared.role.lease().node_id().is_none()
                                    && !learn_node_id(&mut c, bound, &shared).await
                                {
                                    // Its answer may still come: not on
                                    // this connection.
                                    continue;
                                }
                                if kvrocks && !check_psync_mode(&mut c, bound).await {
                                    continue;
                                }
                            }
                            Ok(Err(e)) => debug!(error = %e, "node probe: what the node is"),
                            Err(_) => {
                                // The reply may still come: not on this connection.
                                probe_failed(
                                    status,
                                    &mut failing,
                                    "no answer to INFO server".to_string(),
                                );
                                continue;
                            }
                        }
                        conn = Some((c, login.clone(), bound));
                        door_looked = None;
                    }
                    Err(e) => {
                        probe_failed(status, &mut failing, login_hint(e.to_string(), &login));
                        continue;
                    }
                }
            }
            let Some((c, _, _)) = conn.as_mut() else {
                continue;
            };
            if door_looked.is_none_or(|t| t.elapsed() >= DOOR_EVERY) {
                look_at_door(&shared, &config, bound).await;
                door_looked = Some(std::time::Instant::now());
            }
            // A promotion accepted while ROLE is out makes its answer stale.
            let awaits = shared.role.lease_awaits();
            let kvrocks = status.is_kvrocks();
            let answer = match tokio::time::timeout(bound, ask_role(c, kvrocks)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!(
                    "no answer to {} within {} ms",
                    if kvrocks { "INFO replication" } else { "ROLE" },
                    bound.as_millis()
                )),
            };
            match answer {
                Ok(replication) => {
                    if std::mem::take(&mut failing) {
                        info!("node probe: the node answers again");
                    }
                    let gate = &shared.gate;
                    if replication.is_replica() && gate.lease().snapshot().valid {
                        warn!(master = ?replication.master, "the node reports itself a replica: revoking the master lease");
                    }
                    // A replica's answer to a ROLE asked before the node
                    // accepted a promotion says nothing about it now; nor
                    // does one while a promotion that went on at the fence
                    // may not have reached the node yet (its revocation
                    // ended the wait for the lease, and the poll then took
                    // the promoted node for a replaced old master).
                    if replication.is_replica()
                        && shared.role.lease_awaits() == awaits
                        && !shared.role.promotion_under_way(std::time::Instant::now())
                    {
                        gate.role()
                            .revoke("the node's ROLE is slave", Source::Probe);
                    }
                    let demoted = replication.is_replica() && was_master;
                    was_master = replication.role.as_deref() == Some("master");
                    status.succeeded(replication);
                    if demoted && status.is_kvrocks() {
                        info!("the node became a replica: sessions blocked on it in BLPOP and the like are ended (Kvrocks does not unblock them)");
                        status.kvrocks_demoted();
                    }
                }
                Err(e) => {
                    conn = None;
                    probe_failed(status, &mut failing, e);
                }
            }
        }
    }
}

/// What the node says of its role. Kvrocks is asked `INFO replication`,
/// not `ROLE`: its `ROLE` is served while a replica restores a full sync
/// (it is marked `ok-loading`) and reads the database the restore has
/// closed (`GetRoleInfo`, `storage->LatestSeqNumber()`), which crashes the
/// node. With `use-rsid-psync yes`, a replica asked `ROLE` every 20 ms on
/// one connection segfaulted in 3 full syncs of 4 (walkthrough 22 saw it
/// with this probe), one never asked in 0 of 4, one asked `INFO
/// replication` in 0 of 4: its `INFO` leaves the replication section out
/// while loading (the role is then unknown for that probe).
async fn ask_role(conn: &mut ControlConnection, kvrocks: bool) -> Result<Replication, String> {
    if kvrocks {
        conn.replication()
            .await
            .map(|(replication, _)| replication)
            .map_err(|e| e.to_string())
    } else {
        conn.call(&["ROLE"])
            .await
            .map(|reply| Replication::from_role(&reply))
            .map_err(|e| e.to_string())
    }
}

/// How often the probe asks again whether the node serves a client that
/// sent no login (and at each new connection of its own).
const DOOR_EVERY: Duration = Duration::from_secs(30);

/// Asks the node, on a connection without a login, whether it serves
/// such clients (where `backend.password` is set; without one, clients
/// are never held to the unauthenticated limits). A node whose default
/// user needs no password (an ACL user only for leasegate) serves them:
/// taken to require a login, every client's request past 10 arguments or
/// with a bulk past 16 KiB was cut off with Redis's unauthenticated
/// limits, which that node does not apply.
async fn look_at_door(shared: &ControlContext, config: &crate::config::Config, bound: Duration) {
    if config.backend.password.is_none() {
        return;
    }
    let tls = shared.node_tls();
    let asked =
        crate::proxy::backend::lets_in_without_login(&config.backend.addr, tls.as_deref(), bound);
    match tokio::time::timeout(bound, asked).await {
        Ok(Ok(open)) => {
            if shared.role.node.set_door(open) {
                if open {
                    info!("the node serves clients that send no login (its default user needs no password): they are not held to the limits for unauthenticated clients");
                } else {
                    info!("the node asks clients to log in again: those that have not are held to the limits for unauthenticated clients");
                }
            }
        }
        Ok(Err(e)) => {
            debug!(error = %e, "node probe: whether the node serves clients without a login")
        }
        Err(_) => debug!("node probe: no answer to a PING without a login"),
    }
}

/// Records a failed probe; the first of a run is logged (a wrong
/// `backend.password`, a stopped node), the rest are counted in
/// `/v1/status` and the metrics.
/// `error` with a hint where the node refused the login by password alone
/// (`WRONGPASS`): a Redis whose `default` user is off wants the ACL user
/// too (`backend.user`).
fn login_hint(error: String, login: &Option<crate::resp::login::Login>) -> String {
    // Redis: `WRONGPASS ...`; Kvrocks: `ERR Invalid password`.
    let refused = error.starts_with("WRONGPASS") || error.contains("nvalid password");
    match login {
        Some(l) if l.user.is_none() && error.starts_with("WRONGPASS") => format!(
            "{error} (backend.password is not the node's password; or the node logs users in by name: then set backend.user to the ACL user backend.password belongs to)"
        ),
        Some(_) if refused => {
            format!("{error} (the node refused backend.user/backend.password)")
        }
        None if error.starts_with("NOAUTH") => {
            format!("{error} (the node requires a password: set backend.password)")
        }
        _ => error,
    }
}

fn probe_failed(status: &NodeStatus, failing: &mut bool, error: String) {
    if !std::mem::replace(failing, true) {
        warn!(%error, "node probe failed");
    }
    status.failed(error);
}

/// Warns where a Kvrocks node replicates by sequence number alone
/// (`use-rsid-psync no`, Kvrocks' default): after an unplanned failover an
/// old master that applied writes nobody acknowledged (a frozen node's
/// socket, a leasegate stopped before it answered) rejoins the new master
/// at its own sequence, skips as many of the new master's writes, and
/// reports the same offset. A later failover to it loses those writes,
/// which the new master had acknowledged. With `use-rsid-psync yes` the
/// rejoin sees the other history and syncs in full. `false` when the
/// connection must not be used again (no answer in time, or it broke).
async fn check_psync_mode(conn: &mut ControlConnection, bound: Duration) -> bool {
    match tokio::time::timeout(bound, conn.config_value("use-rsid-psync")).await {
        Ok(Ok(Some(v))) if v.eq_ignore_ascii_case("no") => {
            warn!(
                "the node replicates by sequence number alone (use-rsid-psync no): after an unplanned \
                 failover its old master can rejoin with writes of its own in place of the new master's, \
                 and a later failover to it loses acknowledged writes; set use-rsid-psync yes on every \
                 node (docs/kvrocks-controller.md#replication-ids)"
            );
            true
        }
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "node probe: use-rsid-psync");
            false
        }
        Err(_) => {
            debug!("node probe: no answer to CONFIG GET use-rsid-psync");
            false
        }
    }
}

/// Learns this node's id from the node (`CLUSTERX MYID`) where leasegate
/// does not know it: a leasegate restarted beside a Kvrocks cluster node
/// saw no `CLUSTERX SETNODEID` pass (the controller sends it once, when it
/// adds the node), and without its id no grant or poll can renew the
/// lease. `false` when the connection must not be used again (no answer
/// in time, or it broke).
async fn learn_node_id(
    conn: &mut ControlConnection,
    bound: Duration,
    shared: &ControlContext,
) -> bool {
    match tokio::time::timeout(bound, conn.cluster_node_id()).await {
        Ok(Ok(Some(id))) => {
            info!(node_id = %id, "learned this node's id from the node (CLUSTERX MYID)");
            shared.role.lease().learn_node_id(&id);
            true
        }
        Ok(Ok(None)) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "node probe: the node's id");
            false
        }
        Err(_) => {
            debug!("node probe: no answer to CLUSTERX MYID");
            false
        }
    }
}
