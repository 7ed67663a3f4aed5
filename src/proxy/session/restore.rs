//! Restoring a session's connection state (AUTH, HELLO, SELECT, CLIENT
//! SETNAME) on the new connection it goes on over — the new master's
//! leasegate at a hand-over, or its own node once that answers again —
//! before any of its requests goes there.
//!
//! Each replayed request must succeed: a session whose ACL user was
//! deleted, or whose database no longer exists, went on as the default
//! user, in database 0, when the replies were swallowed unread, and a
//! write it sent next was acknowledged there (walkthrough 20). Such a
//! session ends instead, as its connection would directly.
//!
//! On Kvrocks a login also picks a namespace: `AUTH <token>` leads to the
//! namespace that has the token *now*, while a connection keeps the one
//! it logged into when the token moves. A session whose token was given
//! to another namespace since its login would go on writing into that
//! other tenant's namespace, every write acknowledged. So a session asks
//! its node which namespace it is in after each login (`CLIENT INFO` at
//! the end of the batch, its reply swallowed: [`Session::ask_namespace`]),
//! or, if it has not, the node it leaves when it moves ([`namespace_of`]);
//! the replay on the new connection ends with the same question, and a
//! different answer ends the session ([`restore`]). Asked after the login,
//! not only at a move, it is known where the node it leaves is gone (a
//! crash failover).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::node_conn::NodeConn;
use crate::resp::reply::ReplyFramer;

use super::state::{Expect, Lifecycle, Owed, Stream};
use super::Session;

/// `CLIENT INFO`: a connection's own line of `CLIENT LIST` (Kvrocks:
/// `... namespace=<name> ...`; `txt` verbatim string under RESP3).
const CLIENT_INFO: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n";

/// Sends `requests` on `conn` in one write and reads one reply each, all
/// within `timeout`: `Err` with the first error reply (or what failed).
/// With `namespace` (the Kvrocks namespace the session was in), a `CLIENT
/// INFO` follows them, and the connection must be in that namespace too.
pub async fn restore(
    conn: &mut NodeConn,
    requests: &[Bytes],
    namespace: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<(), String> {
    if requests.is_empty() {
        return Ok(());
    }
    let mut all = requests.concat();
    if namespace.is_some() {
        all.extend_from_slice(CLIENT_INFO);
    }
    let work = async {
        conn.write_all(&all).await.map_err(|e| e.to_string())?;
        conn.flush().await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        for _ in requests {
            let len = next_reply(conn, &mut buf).await??;
            buf.drain(..len);
        }
        let Some(was) = namespace else {
            return Ok(());
        };
        // An error (`CLIENT` denied at the leasegate it goes through,
        // `commands.deny`, or renamed on the node): not asked there, as
        // where the node it leaves refuses it ([`namespace_of`]).
        let Ok(len) = next_reply(conn, &mut buf).await? else {
            return Ok(());
        };
        match namespace_in(&buf[..len]) {
            Some(is) if is == was => Ok(()),
            is => Err(format!(
                "the login leads to namespace `{}` there, not to `{}`, where this connection is: its token was given to another namespace since the login",
                String::from_utf8_lossy(is.unwrap_or(b"(none said)")),
                String::from_utf8_lossy(was),
            )),
        }
    };
    within(timeout, work).await
}

/// Which Kvrocks namespace `conn` is in, asked on it with nothing else
/// owed there (a session about to move). `Ok(None)`: the node answered
/// without saying (Redis; `CLIENT` renamed or refused). `Err`: no clean
/// answer within `timeout`: the connection may still owe it, and must not
/// carry requests any more.
pub async fn namespace_of(
    conn: &mut NodeConn,
    timeout: std::time::Duration,
) -> Result<Option<Bytes>, String> {
    let work = async {
        conn.write_all(CLIENT_INFO)
            .await
            .map_err(|e| e.to_string())?;
        conn.flush().await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(256);
        let len = match next_reply(conn, &mut buf).await? {
            Ok(len) => len,
            Err(_) => return Ok(None),
        };
        if buf.len() > len {
            return Err("the node sent more than one reply".to_string());
        }
        Ok(namespace_in(&buf[..len]).map(Bytes::copy_from_slice))
    };
    within(timeout, work).await
}

/// `work`'s result, or its timeout as an error.
async fn within<T>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// Reads until `buf` starts with a whole reply: `Ok(Ok(its length))`, or
/// `Ok(Err(its text))` for an error reply (left in `buf`); `Err` when the
/// connection failed or closed first.
async fn next_reply(
    conn: &mut NodeConn,
    buf: &mut Vec<u8>,
) -> Result<Result<usize, String>, String> {
    let mut framer = ReplyFramer::new();
    let head = loop {
        if let Some(head) = framer.next(buf).map_err(|e| e.to_string())? {
            break head;
        }
        if conn.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the connection closed".to_string());
        }
    };
    if matches!(head.kind, b'-' | b'!') {
        let text = String::from_utf8_lossy(&buf[..head.len]);
        return Ok(Err(text
            .trim_end()
            .trim_start_matches(['-', '!'])
            .to_string()));
    }
    Ok(Ok(head.len))
}

impl Session {
    /// After a login went out: `CLIENT INFO` follows it, at the end of the
    /// batch, when the node is Kvrocks (a transaction or a subscription
    /// still open: at the end of a later batch).
    #[cold]
    pub(super) fn ask_namespace(&mut self) {
        if !self.transaction.is_none()
            || self.stream != Stream::Replies
            || self.lifecycle != Lifecycle::Open
            || self.monitoring
            || self.owed.iter().any(|o| matches!(o, Owed::Replication))
        {
            // Not behind a request after which the node streams: its
            // answer would be taken for a stream's bytes.
            return;
        }
        self.login_unplaced = false;
        if !self.gate.role().node.is_kvrocks() {
            return;
        }
        self.forward_run();
        self.to_backend.extend_from_slice(CLIENT_INFO);
        self.owed.push_back(Owed::Reply(Expect::Namespace));
    }

    /// The node answered [`Session::ask_namespace`] (`range` of
    /// `from_backend`): where the connection is now (an error: unknown,
    /// asked again at a move).
    #[cold]
    pub(super) fn namespace_answered(&mut self, range: std::ops::Range<usize>) {
        self.replay.namespace = namespace_in(&self.from_backend[range]).map(Bytes::copy_from_slice);
    }
}

/// The `namespace=` field of a `CLIENT INFO` reply (Kvrocks').
fn namespace_in(reply: &[u8]) -> Option<&[u8]> {
    const FIELD: &[u8] = b" namespace=";
    let at = reply.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let rest = &reply[at..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// When a session whose state could not be restored was last logged: at
/// most once a second, since clients whose login the new master refuses
/// reconnect to the old one and fail again at their next write, in a loop
/// (walkthrough 39: 4,705 lines in 17 s for 6 clients). Each is counted
/// (`leasegate_handovers_total{outcome="failed"}`).
pub static UNRESTORED_WARNING: crate::guard::clock::EverySecond =
    crate::guard::clock::EverySecond::new();

/// What a session whose state could not be restored (`why`) answers the
/// request that waits, before it closes.
pub fn refused_reply(why: &str) -> Bytes {
    Bytes::from(format!(
        "-ERR leasegate: this connection's state (AUTH, HELLO, SELECT, CLIENT SETNAME) could not be restored on a new node connection ({}); the connection ends: where it went on, that login, database or name is not accepted (nodes must share passwords, users and namespace tokens)\r\n",
        why.replace(['\r', '\n'], " ")
    ))
}

#[cfg(test)]
mod tests {
    use super::namespace_in;

    #[test]
    fn the_namespace_is_read_from_client_info_in_either_protocol() {
        let resp2 = b"$96\r\nid=7 addr=127.0.0.1:5 fd=9 name= age=0 idle=0 flags=N namespace=ns1 qbuf=0 obuf=0 cmd=client\n\r\n";
        assert_eq!(namespace_in(resp2), Some(&b"ns1"[..]));
        let resp3 = b"=100\r\ntxt:id=7 addr=127.0.0.1:5 fd=9 name= age=0 idle=0 flags=N namespace=__namespace qbuf=0\n\r\n";
        assert_eq!(namespace_in(resp3), Some(&b"__namespace"[..]));
        // Redis says no namespace; a client named "namespace=x" is not one.
        let redis =
            b"$60\r\nid=3 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=8 name=namespace=x db=0\n\r\n";
        assert_eq!(namespace_in(redis), None);
    }
}
