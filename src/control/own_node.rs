//! This leasegate's own node as the control plane asks it: what it says
//! of itself (`INFO replication`: role, offset, the master it follows),
//! over a connection kept between asks, and how it refused leasegate's own
//! login where it did. The Sentinel poll, the promotion fences (the
//! controller's and Sentinel's) and the step-down fence all ask through it.

use crate::control::ControlContext;
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::{BackendError, ControlConnection};

/// The connection to this leasegate's own node, kept between polls.
#[derive(Default)]
pub(in crate::control) struct OwnNode {
    conn: Option<ControlConnection>,
    /// How the node refused leasegate's own connection at the last ask
    /// (its login or `INFO`: a password or ACL user not what the node
    /// has); `None` when it answered, or did not answer at all.
    refusal: Option<String>,
}

impl OwnNode {
    /// What the node says of itself now (`INFO replication`); `None` when
    /// it does not answer (its connection is opened again next time).
    pub(in crate::control) async fn replication(
        &mut self,
        ctx: &ControlContext,
    ) -> Option<Replication> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => match open_node_connection(ctx).await {
                Ok(c) => c,
                Err(e) => {
                    self.refusal = refused(&e);
                    return None;
                }
            },
        };
        match conn.replication().await {
            Ok((info, _)) => {
                self.refusal = None;
                self.conn = Some(conn);
                Some(info)
            }
            Err(e) => {
                self.refusal = refused(&e).map(|why| format!("INFO replication: {why}"));
                None
            }
        }
    }

    /// How the node refused leasegate's own connection at the last ask, if
    /// it did (its login, or a command the user may not run).
    pub(in crate::control) fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// The master the node replicates from (`host:port`, a leasegate's
    /// where nodes follow through leasegates): the old master a promotion
    /// of this node fences.
    pub(in crate::control) async fn followed_master(
        &mut self,
        ctx: &ControlContext,
    ) -> Result<String, &'static str> {
        let mine = self
            .replication(ctx)
            .await
            .ok_or("this node does not answer INFO replication")?;
        mine.master
            .filter(|_| mine.role.as_deref() == Some("slave"))
            .ok_or("this node follows no master")
    }

    /// The node's replication offset now (0 when it does not say).
    pub(in crate::control) async fn offset(&mut self, ctx: &ControlContext) -> u64 {
        self.replication(ctx)
            .await
            .and_then(|r| r.offset)
            .unwrap_or(0)
    }

    /// Waits (at most `within`) until the node reports itself master;
    /// whether it did.
    pub(in crate::control) async fn until_master(
        &mut self,
        ctx: &ControlContext,
        within: std::time::Duration,
    ) -> bool {
        tokio::time::timeout(within, async {
            while self.role(ctx).await.as_deref() != Some("master") {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
        .await
        .is_ok()
    }

    /// The node's role now: `master` or `slave`.
    pub(in crate::control) async fn role(&mut self, ctx: &ControlContext) -> Option<String> {
        self.replication(ctx).await.and_then(|r| r.role)
    }
}

/// A new connection to this leasegate's own node (`backend.addr`, with its
/// password and TLS).
pub(in crate::control) async fn open_own_node(
    ctx: &ControlContext,
) -> Result<ControlConnection, String> {
    let addr = ctx.config.load().backend.addr.clone();
    open_node_connection(ctx)
        .await
        .map_err(|e| format!("node {addr}: {e}"))
}

/// [`open_own_node`], its error as it came.
async fn open_node_connection(ctx: &ControlContext) -> Result<ControlConnection, BackendError> {
    let (addr, login, timeout) = {
        let c = ctx.config.load();
        (
            c.backend.addr.clone(),
            c.backend.login(),
            c.backend.connect_timeout,
        )
    };
    let tls = ctx.node_tls();
    ControlConnection::open_node(&addr, tls.as_deref(), login.as_ref(), timeout).await
}

/// The node's refusal of leasegate's own login or command (`NOPERM`,
/// `WRONGPASS`, `NOAUTH`, Kvrocks' `invalid password`): the node is up, and
/// it is leasegate's credentials that are wrong.
fn refused(e: &BackendError) -> Option<String> {
    let BackendError::Reply(text) = e else {
        return None;
    };
    let upper = text.to_ascii_uppercase();
    [
        "NOPERM",
        "WRONGPASS",
        "NOAUTH",
        "ERR AUTH",
        "ERR INVALID PASSWORD",
    ]
    .iter()
    .any(|p| upper.starts_with(p))
    .then(|| text.clone())
}

/// `INFO replication` of whatever `conn` reaches.
pub(in crate::control) async fn replication_of(
    conn: &mut ControlConnection,
) -> Result<Replication, String> {
    conn.replication()
        .await
        .map(|(r, _)| r)
        .map_err(|e| format!("INFO replication: {e}"))
}
