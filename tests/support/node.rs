//! A standalone node of either kind, for tests that run on both.

use super::kvrocks::KvrocksServer;
use super::{Client, RedisServer};

/// A standalone node: redis-server or the real Kvrocks.
pub enum Node {
    Redis(RedisServer),
    Kvrocks(KvrocksServer),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Kvrocks,
}

impl Node {
    /// `None` when Kvrocks is asked for and its binary is not here.
    pub fn start(kind: Kind) -> Option<Node> {
        Some(match kind {
            Kind::Redis => Node::Redis(RedisServer::start()),
            Kind::Kvrocks => Node::Kvrocks(KvrocksServer::start(false)?),
        })
    }

    /// [`Node::start`] with `requirepass` and `masterauth` `password`, as
    /// production nodes have them (`None`: neither).
    #[allow(dead_code)]
    pub fn start_with_password(kind: Kind, password: Option<&str>) -> Option<Node> {
        let Some(pw) = password else {
            return Node::start(kind);
        };
        let args = ["--requirepass", pw, "--masterauth", pw];
        Some(match kind {
            Kind::Redis => Node::Redis(RedisServer::start_with(&args)),
            Kind::Kvrocks => Node::Kvrocks(KvrocksServer::start_with(false, &args)?),
        })
    }

    pub fn port(&self) -> u16 {
        match self {
            Node::Redis(r) => r.port,
            Node::Kvrocks(k) => k.port,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port())
    }

    /// A client of the node, authenticated with `password` when given.
    #[allow(dead_code)]
    pub fn client_auth(&self, password: Option<&str>) -> Client {
        super::authenticated(self.client(), password)
    }

    /// Kills the node and starts it again on its port, as a supervisor
    /// would after a crash (what it set at run time, `CONFIG SET`, is gone).
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        match self {
            Node::Redis(r) => r.restart(),
            Node::Kvrocks(k) => k.restart(),
        }
    }

    /// Kills the node (a crash).
    pub fn stop(&mut self) {
        match self {
            Node::Redis(r) => r.stop(),
            Node::Kvrocks(k) => k.kill(),
        }
    }
}
