//! What the failover asks of the two nodes: their replication state and
//! offsets, the replica's catch-up, what a failed promotion did, and the
//! old master rejoining as a replica.

use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

use super::{FailoverError, NotPromoted, PromotionUnknown, RoleError};
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::{BackendError, ControlConnection};

/// check_slave: the target has every Kvrocks namespace of this node, by
/// the same token. Moved sessions log in again at the target with what
/// they sent here: a namespace token it lacks ends every such session (and
/// each reconnect's, at its next write), and one it gives another
/// namespace would move them into another tenant's keys (walkthrough 39).
pub(super) async fn same_namespaces(
    source: &mut ControlConnection,
    target: &mut ControlConnection,
) -> Result<(), FailoverError> {
    let (Some(here), Some(there)) = (namespaces(source).await, namespaces(target).await) else {
        return Ok(());
    };
    let differ = namespaces_missing(&here, &there);
    if !differ.is_empty() {
        return Err(FailoverError::NamespacesDiffer {
            differ: differ.join(", "),
        });
    }
    // A session stays in a namespace deleted while it was connected; moved,
    // it would log in with that namespace's token wherever the token leads
    // now (another namespace, given it since: walkthrough 39).
    let Ok(OwnedFrame::BulkString(list)) = source.call(&["CLIENT", "LIST"]).await else {
        return Ok(());
    };
    let gone = namespaces_gone(&String::from_utf8_lossy(&list), &here);
    if gone.is_empty() {
        return Ok(());
    }
    Err(FailoverError::NamespacesGone {
        gone: gone.join(", "),
    })
}

/// The namespaces connections of a Kvrocks `CLIENT LIST` (`namespace=`
/// fields) are in that `existing` lacks, each with how many are there.
fn namespaces_gone(
    client_list: &str,
    existing: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut gone = std::collections::BTreeMap::<&str, usize>::new();
    for line in client_list.lines() {
        let namespace = line
            .split(' ')
            .find_map(|field| field.strip_prefix("namespace="));
        if let Some(ns) = namespace.filter(|ns| !ns.is_empty() && !existing.contains_key(*ns)) {
            *gone.entry(ns).or_default() += 1;
        }
    }
    gone.into_iter()
        .map(|(ns, n)| format!("{ns}: {n} connection(s)"))
        .collect()
}

/// A Kvrocks node's namespaces and their tokens (`NAMESPACE GET *`; the
/// default one, `__namespace`, with the node's password); `None` where
/// the node has no such command (Redis) or refuses it (Kvrocks in cluster
/// mode, a connection that is not the node's admin).
async fn namespaces(
    conn: &mut ControlConnection,
) -> Option<std::collections::BTreeMap<String, String>> {
    let Ok(OwnedFrame::Array(items)) = conn.call(&["NAMESPACE", "GET", "*"]).await else {
        return None;
    };
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        OwnedFrame::SimpleString(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [name, token] => Some((text(name)?, text(token)?)),
            _ => None,
        })
        .collect()
}

/// The namespaces of `source` the target lacks or knows by another token,
/// by name (never the tokens: they are passwords).
fn namespaces_missing(
    source: &std::collections::BTreeMap<String, String>,
    target: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    source
        .iter()
        .filter(|(name, token)| target.get(*name) != Some(*token))
        .map(|(name, _)| {
            let why = if target.contains_key(name) {
                "another token there"
            } else {
                "missing there"
            };
            if name == "__namespace" {
                // The default namespace's token is the node's password.
                format!("the default namespace ({name}): another requirepass there")
            } else {
                format!("{name}: {why}")
            }
        })
        .collect()
}

/// Makes this node a replica of the new master (after the writes were
/// released, so this costs no stall). Kvrocks refuses to follow a node it
/// still lists as its own replica ("can't replicate your own replicas")
/// until it notices the promoted node's link is gone: retried for a while.
pub(super) async fn rejoin(
    source: &mut ControlConnection,
    host: &str,
    port: &str,
) -> Result<(), BackendError> {
    let deadline = Instant::now() + REJOIN_PATIENCE;
    loop {
        match source.call(&["SLAVEOF", host, port]).await {
            Err(BackendError::Reply(e))
                if e.contains("own replicas") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map(|_| ()),
        }
    }
}

/// How long [`rejoin`] retries while the node still lists the new master as its replica.
const REJOIN_PATIENCE: Duration = Duration::from_secs(5);

/// Whether the target node carried out a `SLAVEOF NO ONE` that failed.
#[derive(Debug)]
pub(super) enum Promotion {
    /// It is master now.
    Done,
    /// It is a replica, and the request cannot take effect any more.
    NotDone(NotPromoted),
    /// It may be promoted, now or later.
    Unknown(PromotionUnknown),
}

/// Finds out what a failed `SLAVEOF NO ONE` (sent on `conn`) did.
///
/// An error reply means the node refused it. A broken connection means the
/// node either ran it already or never will (it was closed with the request
/// unread). After a timeout the request may still be queued on the node, so
/// its late answer is waited for once more: a reply to a command sent after
/// it cannot arrive before it. Then the node is asked for its `ROLE` on a
/// fresh connection: `master` is final (a master does not turn replica by
/// itself); `slave` is final only when the request can no longer run.
pub(super) async fn promotion_outcome(
    error: &BackendError,
    conn: &mut ControlConnection,
    (node, tls): (&str, Option<&crate::proxy::backend::NodeTls>),
    login: Option<&crate::resp::login::Login>,
    timeout: Duration,
) -> Promotion {
    #[derive(PartialEq)]
    enum Fate {
        Refused,
        Lost,
        Pending,
    }
    let fate = |e: &BackendError| match e {
        BackendError::Reply(text) if !text.starts_with("invalid reply") => Fate::Refused,
        BackendError::Io(_) | BackendError::ConnectTimeout(_) => Fate::Lost,
        _ => Fate::Pending,
    };
    let mut request = fate(error);
    if request == Fate::Pending {
        // Returns the late answer to SLAVEOF NO ONE, not ROLE's.
        match conn.call(&["ROLE"]).await {
            Ok(_) => return Promotion::Done,
            Err(e) => request = fate(&e),
        }
    }
    let role = async {
        let mut fresh = ControlConnection::open_node(node, tls, login, timeout)
            .await
            .map_err(|source| RoleError::Connect { source })?;
        let reply = fresh
            .call(&["ROLE"])
            .await
            .map_err(|source| RoleError::Role { source })?;
        Ok::<_, RoleError>(Replication::from_role(&reply))
    };
    match role.await {
        Ok(r) if r.role.as_deref() == Some("master") => Promotion::Done,
        Ok(r) if r.is_replica() => match request {
            Fate::Refused => Promotion::NotDone(NotPromoted::Refused),
            Fate::Lost => Promotion::NotDone(NotPromoted::ConnectionBroke),
            Fate::Pending => Promotion::Unknown(PromotionUnknown::NoAnswer),
        },
        Ok(r) => Promotion::Unknown(PromotionUnknown::OtherRole { role: r.role }),
        Err(source) => Promotion::Unknown(PromotionUnknown::RoleUnreadable { source }),
    }
}

/// How the replica's offset compares with the one it must reach.
pub(in crate::control) enum CatchUp {
    Reached,
    /// The deadline passed; the replica was last seen at this offset.
    Behind(Option<u64>),
}

/// Polls the replica's offset until it reaches `target`, until `deadline`.
pub(in crate::control) async fn catch_up(
    replica: &mut ControlConnection,
    target: u64,
    deadline: Instant,
) -> Result<CatchUp, FailoverError> {
    let mut seen = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(CatchUp::Behind(seen));
        }
        match tokio::time::timeout(left, info_replication(replica)).await {
            Ok(Ok(r)) if r.offset.unwrap_or(0) >= target => return Ok(CatchUp::Reached),
            Ok(Ok(r)) => seen = r.offset,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(CatchUp::Behind(seen)),
        }
    }
}

/// This node's replication offset.
pub(super) async fn offset(conn: &mut ControlConnection) -> Result<u64, FailoverError> {
    Ok(info_replication(conn).await?.offset.unwrap_or(0))
}

/// check_slave: asks the target's leasegate (`GET /v1/status`) for its
/// node's id, its node and its client address.
pub(in crate::control) async fn info_replication(
    conn: &mut ControlConnection,
) -> Result<Replication, FailoverError> {
    match conn.call(&["INFO", "replication"]).await {
        Ok(OwnedFrame::BulkString(text)) => {
            Ok(Replication::parse_info(&String::from_utf8_lossy(&text)))
        }
        Ok(reply) => Err(FailoverError::UnexpectedInfo { reply }),
        Err(source) => Err(FailoverError::Info { source }),
    }
}

/// Whether `a` (as a node reports its master) names `b` (`host:port`).
pub(super) fn same_addr(a: Option<&str>, b: &str) -> bool {
    let Some(a) = a else { return false };
    let norm = |s: &str| s.replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_the_target_lacks_or_knows_by_another_token_is_named_not_its_token() {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let here = map(&[("__namespace", "pw"), ("ns1", "t1"), ("ns2", "t2")]);
        let there = map(&[("__namespace", "pw"), ("ns2", "other"), ("ns3", "t3")]);
        assert_eq!(
            namespaces_missing(&here, &there),
            ["ns1: missing there", "ns2: another token there"]
        );
        assert!(namespaces_missing(&here, &here).is_empty());
        let list = "id=5 addr=127.0.0.1:1 fd=9 name= age=1 idle=0 flags=N namespace=ns1 qbuf=0 obuf=0 cmd=set\n\
                    id=6 addr=127.0.0.1:2 fd=10 name= age=1 idle=0 flags=N namespace=gone qbuf=0 obuf=0 cmd=set\n\
                    id=7 addr=127.0.0.1:3 fd=11 name= age=1 idle=0 flags=N namespace=gone qbuf=0 obuf=0 cmd=get\n\
                    id=8 addr=127.0.0.1:4 fd=12 name= age=1 idle=0 flags=N namespace=__namespace qbuf=0 obuf=0 cmd=client\n";
        assert_eq!(namespaces_gone(list, &here), ["gone: 2 connection(s)"]);
        assert!(
            namespaces_gone("id=1 addr=a:1 cmd=ping\n", &here).is_empty(),
            "Redis: no field"
        );
        assert!(
            namespaces_missing(&map(&[]), &there).is_empty(),
            "the target's own namespaces are no concern"
        );
    }
}
