//! The lost-write check: every acknowledged key is read back (`STRLEN`)
//! from the final master's node, bypassing the proxies; the nodes' roles
//! are read too (`INFO replication`) so the report shows where the master
//! ended up.
//!
//! An acknowledged write that is missing there, or has the wrong length,
//! was lost in a failover. This is the benchmark's correctness verdict, so
//! it talks to the nodes directly: a proxy bug cannot hide a loss.

use tokio::net::TcpStream;

use redis_protocol::resp2::types::OwnedFrame;

use crate::args::Args;
use crate::load::{key, Rec};
use crate::resp;

/// What the check found.
pub struct LostWrites {
    /// Keys acknowledged but not on the final master: (sent µs, key).
    pub keys: Vec<(u64, String)>,
    /// Acknowledged keys (all of them were to be read back).
    pub acked: usize,
    /// Why the check could not read every key, if it could not.
    pub error: Option<String>,
    /// `role:` of the nodes behind A and B.
    pub roles: [Result<String, String>; 2],
}

/// Reads every acknowledged request's key back from node `master`
/// (0 = `--redis-a`, 1 = `--redis-b`).
pub async fn lost_writes(args: &Args, recs: &[Rec], master: usize) -> LostWrites {
    let redis = [args.redis_a.as_str(), args.redis_b.as_str()];
    let pw = args.password.as_str();
    let roles = [role(redis[0], pw).await, role(redis[1], pw).await];
    let acked: Vec<&Rec> = recs.iter().filter(|r| r.ok).collect();
    let mut lost = LostWrites {
        keys: Vec::new(),
        acked: acked.len(),
        error: None,
        roles,
    };
    let addr = redis[master];
    let mut s = match resp::connect(addr, &args.password).await {
        Ok(s) => s,
        Err(e) => {
            lost.error = Some(format!("{addr}: {e}"));
            return lost;
        }
    };
    for batch in acked.chunks(2000) {
        if let Err(e) = read_back(&mut s, batch, args.value_size, &mut lost.keys).await {
            lost.error = Some(format!("reading keys from {addr}: {e}"));
            break;
        }
    }
    lost
}

/// `STRLEN` of each key of `batch` (pipelined); the keys that are not
/// `value_size` long go to `lost`.
async fn read_back(
    s: &mut TcpStream,
    batch: &[&Rec],
    value_size: usize,
    lost: &mut Vec<(u64, String)>,
) -> Result<(), String> {
    let keys: Vec<String> = batch.iter().map(|r| key(r.conn, r.seq)).collect();
    let cmds: Vec<Vec<&[u8]>> = keys
        .iter()
        .map(|k| vec![&b"STRLEN"[..], k.as_bytes()])
        .collect();
    let replies = resp::pipeline(s, &cmds).await?;
    for ((r, k), reply) in batch.iter().zip(keys).zip(replies) {
        if !matches!(reply, OwnedFrame::Integer(n) if n as usize == value_size) {
            lost.push((r.sent, k));
        }
    }
    Ok(())
}

/// The node (0 = A, 1 = B) that says it is master, when exactly one does
/// within `patience` (a failover that failed after the controller's switch
/// ends with the other node master, a moment later); `expected` otherwise.
pub async fn actual_master(args: &Args, expected: usize, patience: std::time::Duration) -> usize {
    let redis = [args.redis_a.as_str(), args.redis_b.as_str()];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut masters = Vec::new();
        for (i, addr) in redis.iter().enumerate() {
            if role(addr, &args.password)
                .await
                .is_ok_and(|r| r == "master")
            {
                masters.push(i);
            }
        }
        if let [one] = masters[..] {
            return one;
        }
        if tokio::time::Instant::now() >= deadline {
            return expected;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The `role:` field of the node's `INFO replication` ("unknown" without one).
async fn role(addr: &str, password: &str) -> Result<String, String> {
    let mut s = resp::connect(addr, password).await?;
    let cmd: Vec<&[u8]> = vec![b"INFO", b"replication"];
    let reply = resp::pipeline(&mut s, &[cmd]).await?;
    let text = match reply.first() {
        Some(OwnedFrame::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}
