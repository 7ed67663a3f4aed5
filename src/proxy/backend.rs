//! The node behind the proxy: opening connections to it (over TLS with
//! `backend.tls`, [`NodeConn`]), and leasegate's own requests to it
//! (start-up command learning, the probe, failovers).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::command::{learn_from_command_reply, LearnedCommand};
pub use crate::proxy::node_conn::{NodeConn, NodeTls, PeerTls};
use crate::resp::login::Login;
use crate::resp::reply::ReplyFramer;

/// Why the backend could not be used; the text reaches clients as
/// `-ERR backend <addr> unavailable: <reason>`.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect timed out after {0} ms")]
    ConnectTimeout(u128),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0} ms")]
    ReplyTimeout(u128),
    #[error("{0}")]
    Reply(String),
}

/// Opens a connection to the node, bounded by `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, BackendError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| BackendError::ConnectTimeout(timeout.as_millis()))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a connection to a node at `addr`, over TLS with `tls`, the
/// handshake included in `timeout`.
pub async fn connect_node(
    addr: &str,
    tls: Option<&NodeTls>,
    timeout: Duration,
) -> Result<NodeConn, BackendError> {
    let Some(tls) = tls else {
        return Ok(NodeConn::Plain(connect(addr, timeout).await?));
    };
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        tls.handshake(tcp, addr).await
    };
    Ok(tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| BackendError::ConnectTimeout(timeout.as_millis()))??)
}

/// Opens a connection to another leasegate whose `listen` address is
/// `addr`: there, or over TLS to its TLS listener (`peer`: a TLS client's
/// session). Returns where it connected, for errors.
pub async fn connect_peer(
    addr: &str,
    peer: Option<&PeerTls>,
    timeout: Duration,
) -> (String, Result<NodeConn, BackendError>) {
    match peer {
        None => (
            addr.to_string(),
            connect(addr, timeout).await.map(NodeConn::Plain),
        ),
        Some(peer) => {
            let at = peer.address(addr);
            let conn = connect_node(&at, Some(&peer.tls), timeout).await;
            (at, conn)
        }
    }
}

/// The error line a client gets when its backend connection cannot be opened.
pub fn unavailable_reply(addr: &str, err: &BackendError) -> Vec<u8> {
    let reason = err.to_string().replace(['\r', '\n'], " ");
    format!("-ERR backend {addr} unavailable: {reason}\r\n").into_bytes()
}

/// A short-lived RESP2 connection for leasegate's own requests.
pub struct ControlConnection {
    stream: NodeConn,
    buf: Vec<u8>,
    /// Where the reply at the head of `buf` ends (resumable, in one pass),
    /// and whether it is nested shallowly enough to decode.
    framer: ReplyFramer,
    timeout: Duration,
}

/// The deepest reply a control connection decodes: what leasegate asks
/// (`INFO`, `ROLE`, `COMMAND`, `SENTINEL MASTER`, `CLUSTER NODES`) nests
/// a few levels at most.
const MAX_CONTROL_DEPTH: usize = 32;

/// The largest reply a control connection takes (`COMMAND` is ~200 KB;
/// `CLUSTER NODES` of a large cluster a few MB).
const MAX_CONTROL_REPLY: usize = 64 * 1024 * 1024;

impl ControlConnection {
    /// Connects to a leasegate or a Sentinel (plain) and, with a `login`,
    /// authenticates.
    pub async fn open(
        addr: &str,
        login: Option<&Login>,
        timeout: Duration,
    ) -> Result<ControlConnection, BackendError> {
        ControlConnection::open_node(addr, None, login, timeout).await
    }

    /// Connects to another leasegate whose `listen` address is `addr` and,
    /// with a `login`, authenticates: over TLS to its TLS listener with
    /// `peer` (`tls.handover: tls`: the control password does not cross
    /// the network in plaintext), else to `addr`.
    pub async fn open_leasegate(
        addr: &str,
        peer: Option<&PeerTls>,
        login: Option<&Login>,
        timeout: Duration,
    ) -> Result<ControlConnection, BackendError> {
        let Some(peer) = peer else {
            let stream = connect(addr, timeout).await?;
            let mut conn = ControlConnection {
                stream: NodeConn::Plain(stream),
                buf: Vec::new(),
                framer: ReplyFramer::with_max_depth(MAX_CONTROL_DEPTH),
                timeout,
            };
            if let Some(login) = login {
                conn.authenticate_at_leasegate(login).await?;
            }
            return Ok(conn);
        };
        let at = peer.address(addr);
        ControlConnection::open_node(&at, Some(&peer.tls), login, timeout)
            .await
            .map_err(|e| BackendError::Reply(format!("over TLS at {at}: {e}")))
    }

    /// Connects to a node (over TLS with `tls`) and, with a `login`,
    /// authenticates.
    pub async fn open_node(
        addr: &str,
        tls: Option<&NodeTls>,
        login: Option<&Login>,
        timeout: Duration,
    ) -> Result<ControlConnection, BackendError> {
        let stream = connect_node(addr, tls, timeout).await?;
        let mut conn = ControlConnection {
            stream,
            buf: Vec::new(),
            framer: ReplyFramer::with_max_depth(MAX_CONTROL_DEPTH),
            timeout,
        };
        if let Some(login) = login {
            conn.call(&login.auth_args()).await?;
        }
        Ok(conn)
    }

    /// `AUTH` at another leasegate, with its `INFO leasegate` in the same
    /// write: a leasegate whose node is down holds a new client's requests
    /// while it waits for the node, but refuses at once one whose set-up is
    /// followed by a request addressed to the node (`INFO`). Sent alone,
    /// the `AUTH` of a fence waited there until the fence's timeout (1 s)
    /// before the old master was found unreachable.
    async fn authenticate_at_leasegate(&mut self, login: &Login) -> Result<(), BackendError> {
        let auth = login.auth_request();
        let info = crate::resp::encode::request(&[b"INFO".as_slice(), b"leasegate".as_slice()]);
        self.stream.write_all(&[auth, info].concat()).await?;
        self.stream.flush().await?;
        self.read_reply().await?;
        match self.read_reply().await {
            Ok(_) | Err(BackendError::Reply(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Another leasegate's `INFO leasegate` (answered by that leasegate,
    /// never its node), as `field: value` pairs.
    pub async fn leasegate_info(
        &mut self,
    ) -> Result<std::collections::HashMap<String, String>, String> {
        use redis_protocol::resp2::types::OwnedFrame;
        match self.call(&["INFO", "leasegate"]).await {
            Ok(OwnedFrame::BulkString(text)) => Ok(String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()),
            Ok(other) => Err(format!("unexpected INFO leasegate reply {other:?}")),
            Err(e) => Err(format!("INFO leasegate: {e}")),
        }
    }

    /// `INFO replication` of what this connection reaches (a node, or a
    /// leasegate passing it to its node), parsed and as the text.
    pub async fn replication(
        &mut self,
    ) -> Result<(crate::kvrocks::topology::Replication, String), BackendError> {
        use redis_protocol::resp2::types::OwnedFrame;
        match self.call(&["INFO", "replication"]).await? {
            OwnedFrame::BulkString(b) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                Ok((
                    crate::kvrocks::topology::Replication::parse_info(&text),
                    text,
                ))
            }
            other => Err(BackendError::Reply(format!(
                "INFO replication answered {other:?}"
            ))),
        }
    }

    /// The connection's socket, for a session to carry on with (between
    /// replies nothing is buffered).
    pub fn into_stream(self) -> NodeConn {
        self.stream
    }

    /// Whether the node is Kvrocks (`INFO server` names its version).
    pub async fn is_kvrocks(&mut self) -> Result<bool, String> {
        match self.call(&["INFO", "server"]).await {
            Ok(redis_protocol::resp2::types::OwnedFrame::BulkString(text)) => {
                Ok(String::from_utf8_lossy(&text).contains("kvrocks_version:"))
            }
            Ok(other) => Err(format!("unexpected INFO server reply {other:?}")),
            Err(e) => Err(format!("INFO server: {e}")),
        }
    }

    /// The node's cluster id (`CLUSTERX MYID`, Kvrocks in cluster mode):
    /// `None` where it has none yet (empty) or is not a cluster node.
    pub async fn cluster_node_id(&mut self) -> Result<Option<String>, String> {
        use redis_protocol::resp2::types::OwnedFrame;
        match self.call(&["CLUSTERX", "MYID"]).await {
            Ok(OwnedFrame::BulkString(id) | OwnedFrame::SimpleString(id)) => {
                let id = String::from_utf8_lossy(&id).trim().to_string();
                Ok((!id.is_empty()).then_some(id))
            }
            Ok(other) => Err(format!("unexpected CLUSTERX MYID reply {other:?}")),
            // Not in cluster mode: no id to learn.
            Err(BackendError::Reply(_)) => Ok(None),
            Err(e) => Err(format!("CLUSTERX MYID: {e}")),
        }
    }

    /// The node's `CONFIG GET <name>` value: `None` where it has no such
    /// setting (or refuses `CONFIG`).
    pub async fn config_value(&mut self, name: &str) -> Result<Option<String>, String> {
        use redis_protocol::resp2::types::OwnedFrame;
        match self.call(&["CONFIG", "GET", name]).await {
            Ok(OwnedFrame::Array(items)) => Ok(match items.get(1) {
                Some(OwnedFrame::BulkString(v) | OwnedFrame::SimpleString(v)) => {
                    Some(String::from_utf8_lossy(v).trim().to_string())
                }
                _ => None,
            }),
            Ok(other) => Err(format!("unexpected CONFIG GET reply {other:?}")),
            Err(BackendError::Reply(_)) => Ok(None),
            Err(e) => Err(format!("CONFIG GET {name}: {e}")),
        }
    }

    /// Sends one command and returns its decoded reply; error replies become
    /// [`BackendError::Reply`].
    pub async fn call(
        &mut self,
        args: &[&str],
    ) -> Result<redis_protocol::resp2::types::OwnedFrame, BackendError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let req = crate::resp::encode::request(&args);
        self.stream.write_all(&req).await?;
        // TLS keeps what was written in its buffer until flushed.
        self.stream.flush().await?;
        self.read_reply().await
    }

    /// The next reply on the connection, within the timeout; an error
    /// reply is an `Err`.
    async fn read_reply(
        &mut self,
    ) -> Result<redis_protocol::resp2::types::OwnedFrame, BackendError> {
        use redis_protocol::resp2::types::OwnedFrame;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            // Framed first (in one pass, its depth bounded), then decoded:
            // `redis-protocol` recurses, and decoding from the start at
            // every read made a long reply cost quadratic time.
            let framed = self
                .framer
                .next(&self.buf)
                .map_err(|e| BackendError::Reply(format!("invalid reply: {e}")))?;
            if let Some(head) = framed {
                let decoded = redis_protocol::resp2::decode::decode(&self.buf[..head.len]);
                self.buf.drain(..head.len);
                return match decoded {
                    Ok(Some((OwnedFrame::Error(e), _))) => Err(BackendError::Reply(e)),
                    Ok(Some((f, _))) => Ok(f),
                    Ok(None) => Err(BackendError::Reply("invalid reply: incomplete".into())),
                    Err(e) => Err(BackendError::Reply(format!("invalid reply: {e}"))),
                };
            }
            if self.buf.len() > MAX_CONTROL_REPLY {
                return Err(BackendError::Reply(format!(
                    "invalid reply: longer than {MAX_CONTROL_REPLY} bytes"
                )));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| BackendError::ReplyTimeout(self.timeout.as_millis()))??;
            if n == 0 {
                return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Asks the node for `COMMAND` and returns what it says about each command.
pub async fn learn_commands(
    addr: &str,
    tls: Option<&NodeTls>,
    login: Option<&Login>,
    timeout: Duration,
) -> Result<Vec<LearnedCommand>, BackendError> {
    let mut conn = ControlConnection::open_node(addr, tls, login, timeout).await?;
    let reply = conn.call(&["COMMAND"]).await?;
    Ok(learn_from_command_reply(&reply))
}

/// A connection to the new master's leasegate for a client of a node that
/// is down: `None` unless this node was demoted toward one (with
/// `pause.on_demote: forward`) and that leasegate holds the lease. Only
/// one that holds it takes the client (its `INFO leasegate`): its node is
/// master, so neither is a client passed back and forth between two
/// leasegates that each take the other for the master, nor a replica's
/// link led back to the replica itself.
pub async fn stand_in(
    role: &crate::guard::role::Role,
    peer: Option<&PeerTls>,
    timeout: Duration,
) -> Result<NodeConn, String> {
    if role.on_demote() != crate::guard::pause::OnDemote::Forward {
        return Err("pause.on_demote is not forward".to_string());
    }
    let to = role
        .demotion()
        .and_then(|d| d.new_master.clone())
        .ok_or_else(|| "no new master is known".to_string())?;
    let mut conn = ControlConnection::open_leasegate(&to, peer, None, timeout)
        .await
        .map_err(|e| format!("{to}: {e}"))?;
    let info = conn.leasegate_info().await?;
    if info.get("lease_valid").map(String::as_str) != Some("1") {
        return Err(format!(
            "{to} holds no lease (lease_valid: {:?})",
            info.get("lease_valid")
        ));
    }
    Ok(conn.into_stream())
}

/// Whether the node at `addr` serves a client that sent no login: a
/// `PING` on a fresh connection is answered `+PONG` (its default user needs
/// no password), not `-NOAUTH`. `Err` where it could not tell.
pub async fn lets_in_without_login(
    addr: &str,
    tls: Option<&NodeTls>,
    timeout: Duration,
) -> Result<bool, BackendError> {
    use redis_protocol::resp2::types::OwnedFrame;
    let mut conn = ControlConnection::open_node(addr, tls, None, timeout).await?;
    match conn.call(&["PING"]).await {
        Ok(OwnedFrame::SimpleString(s)) => Ok(s.eq_ignore_ascii_case(b"PONG")),
        Ok(_) => Ok(false),
        Err(BackendError::Reply(e)) if e.starts_with("NOAUTH") => Ok(false),
        // Logged in as the default user, who may not run PING: no login
        // was asked for.
        Err(BackendError::Reply(e)) if e.starts_with("NOPERM") => Ok(true),
        Err(e) => Err(e),
    }
}

/// A connection to the node at `addr` once it answers a `PING` (an error
/// such as `NOAUTH` is an answer too): a process that is being killed may
/// still accept a connection it will never serve.
pub async fn answering(addr: &str, tls: Option<&NodeTls>, timeout: Duration) -> Option<NodeConn> {
    let mut conn = ControlConnection::open_node(addr, tls, None, timeout)
        .await
        .ok()?;
    match conn.call(&["PING"]).await {
        Ok(_) | Err(BackendError::Reply(_)) => Some(conn.into_stream()),
        Err(_) => None,
    }
}
