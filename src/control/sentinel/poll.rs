//! The Sentinel poll's schedule: a poll goes out every
//! `sentinel.poll_interval_ms` whether or not the one before has been
//! answered, and each is judged once all its answers are in (or timed
//! out), in the order they were sent.
//!
//! Why not one after the other: a Sentinel that answers nothing (its host
//! frozen or cut off; the kernel still accepts the connection) makes every
//! question to it wait out `sentinel.timeout_ms`. Polls sent only after the
//! last one was judged then came `poll_interval_ms` + `timeout_ms` apart,
//! and each renewal landed `timeout_ms` after its anchor, the send: with
//! one of three Sentinels frozen (interval 200 ms, timeout 500 ms) the
//! lease the other two gave ran out between renewals and the pulse lapsed,
//! and 986 of 6,200 writes in 4 s were refused (`-READONLY master lease
//! expired`) on a healthy master. On this schedule the renewals go on
//! coming every interval, each `timeout_ms` late at most.
//!
//! Each poll asks every Sentinel ([`ask_all`]) and the node its role; a
//! poll's answers are dropped if a later poll's were judged first (they
//! say less, and older). At most [`MAX_IN_FLIGHT`] polls are out at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::control::own_node::OwnNode;
use crate::control::ControlContext;
use crate::guard::lease::Nanos;
use crate::kvrocks::sentinel::{parse_master, MasterView};
use crate::proxy::backend::ControlConnection;

/// The most polls out at once (a Sentinel that answers nothing holds each
/// for `timeout_ms`; a short interval would otherwise pile them up).
const MAX_IN_FLIGHT: usize = 8;

/// One poll's answers, to judge.
pub(super) struct Answered {
    /// When its questions were sent (the lease's anchor).
    pub sent: Nanos,
    /// The lease's revocations when it was sent.
    pub revocations: u64,
    /// Each configured Sentinel's answer, or why there is none.
    pub answers: Vec<Result<MasterView, String>>,
    /// What the node said of its role (`None`: it did not answer).
    pub node_role: Option<String>,
    /// How the node refused leasegate's own connection instead (`None`:
    /// it answered, or did not answer at all).
    pub node_refusal: Option<String>,
}

/// A Sentinel and the connection to it kept between polls.
struct Asked {
    addr: String,
    /// Taken by the poll asking on it; a poll that finds it taken (a
    /// question still out) opens another.
    conn: Mutex<Option<ControlConnection>>,
}

impl Asked {
    fn take(&self) -> Option<ControlConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Keeps `conn` for the next poll, unless one is kept already.
    fn keep(&self, conn: ControlConnection) {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(conn);
        }
    }
}

/// The polls of one leasegate's Sentinels.
pub(super) struct Polls {
    sentinels: Arc<[Asked]>,
    master_name: Arc<str>,
    node: Arc<tokio::sync::Mutex<OwnNode>>,
    answered_tx: mpsc::UnboundedSender<(u64, Answered)>,
    answered: mpsc::UnboundedReceiver<(u64, Answered)>,
    in_flight: Arc<AtomicUsize>,
    next_seq: u64,
    /// The last poll returned for judging.
    judged: Option<u64>,
    next_send: Instant,
}

impl Polls {
    /// Polls of `addrs` about `master_name`; the first goes out one
    /// interval from now.
    pub fn new(ctx: &ControlContext, addrs: &[String], master_name: &str) -> Polls {
        let (answered_tx, answered) = mpsc::unbounded_channel();
        Polls {
            sentinels: addrs
                .iter()
                .map(|addr| Asked {
                    addr: addr.clone(),
                    conn: Mutex::new(None),
                })
                .collect(),
            master_name: master_name.into(),
            node: Arc::default(),
            answered_tx,
            answered,
            in_flight: Arc::default(),
            next_seq: 0,
            judged: None,
            next_send: Instant::now() + ctx.config.load().sentinel.poll_interval,
        }
    }

    /// How many Sentinels are asked.
    pub fn sentinels(&self) -> usize {
        self.sentinels.len()
    }

    /// The next poll's answers to judge, sending polls on schedule while
    /// it waits; `None` once `ctx.shutdown` is cancelled.
    pub async fn next(&mut self, ctx: &Arc<ControlContext>) -> Option<Answered> {
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return None,
                Some((seq, answered)) = self.answered.recv() => {
                    if self.judged.is_none_or(|last| seq > last) {
                        self.judged = Some(seq);
                        return Some(answered);
                    }
                }
                _ = tokio::time::sleep_until(self.next_send) => {
                    self.next_send = Instant::now() + ctx.config.load().sentinel.poll_interval;
                    if self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT {
                        self.send(ctx);
                    }
                }
            }
        }
    }

    /// Sends one poll: every Sentinel and the node are asked at once.
    fn send(&mut self, ctx: &Arc<ControlContext>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let lease = ctx.gate.lease();
        let (sent, revocations) = (lease.now(), lease.revocations());
        let (ctx, sentinels, name, node, tx, in_flight) = (
            Arc::clone(ctx),
            Arc::clone(&self.sentinels),
            Arc::clone(&self.master_name),
            Arc::clone(&self.node),
            self.answered_tx.clone(),
            Arc::clone(&self.in_flight),
        );
        in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let (answers, (node_role, node_refusal)) =
                tokio::join!(ask_all(&ctx, &sentinels, &name), async {
                    let mut node = node.lock().await;
                    let role = node.role(&ctx).await;
                    (role, node.refusal().map(str::to_string))
                });
            in_flight.fetch_sub(1, Ordering::AcqRel);
            // The receiver is gone at shutdown: nothing to judge.
            let _ = tx.send((
                seq,
                Answered {
                    sent,
                    revocations,
                    answers,
                    node_role,
                    node_refusal,
                },
            ));
        });
    }
}

/// Asks every Sentinel at once; an error for each that did not answer in
/// time (its connection is dropped, and opened again next time).
async fn ask_all(
    ctx: &ControlContext,
    sentinels: &Arc<[Asked]>,
    master_name: &str,
) -> Vec<Result<MasterView, String>> {
    let (login, timeout) = {
        let c = ctx.config.load();
        (c.sentinel.login(), c.sentinel.timeout)
    };
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in sentinels.iter().enumerate() {
        let (addr, conn, login, name) = (
            s.addr.clone(),
            s.take(),
            login.clone(),
            master_name.to_string(),
        );
        set.spawn(async move {
            let asked =
                tokio::time::timeout(timeout, ask(&addr, conn, login.as_ref(), &name, timeout))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "Sentinel {addr}: no answer within {} ms",
                            timeout.as_millis()
                        ))
                    });
            (i, asked)
        });
    }
    let mut answers: Vec<Result<MasterView, String>> = sentinels
        .iter()
        .map(|s| Err(format!("Sentinel {}: not asked", s.addr)))
        .collect();
    while let Some(joined) = set.join_next().await {
        let Ok((i, asked)) = joined else { continue };
        answers[i] = asked.map(|(view, conn)| {
            sentinels[i].keep(conn);
            view
        });
    }
    answers
}

/// One Sentinel's `SENTINEL MASTER <name>`, on `conn` or a new connection.
async fn ask(
    addr: &str,
    conn: Option<ControlConnection>,
    login: Option<&crate::resp::login::Login>,
    name: &str,
    timeout: Duration,
) -> Result<(MasterView, ControlConnection), String> {
    let mut conn = match conn {
        Some(c) => c,
        None => ControlConnection::open(addr, login, timeout)
            .await
            .map_err(|e| format!("Sentinel {addr}: {e}"))?,
    };
    let reply = conn
        .call(&["SENTINEL", "MASTER", name])
        .await
        .map_err(|e| format!("Sentinel {addr}: SENTINEL MASTER {name}: {e}"))?;
    let view = parse_master(&reply).map_err(|e| format!("Sentinel {addr}: {e}"))?;
    Ok((view, conn))
}
