//! What a session needs from the proxy: the Gate, the limits and
//! timeouts of the config it started under, the node's address and TLS,
//! the mover for upgrades, and the metrics it counts in.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::guard::gate::Gate;
use crate::resp::request::Limits;

use super::io::ClientIo;
use super::moving::Mover;
use super::node_search;

/// What a session needs from the proxy.
#[derive(Debug)]
pub struct SessionContext {
    pub gate: Arc<Gate>,
    pub limits: Limits,
    /// `limits.max_client_output_bytes`: past this much unsent reply data a
    /// client is not read from (nor its node replies) until it reads.
    pub max_client_output: usize,
    /// Bound on opening a connection to the new master's leasegate at a hand-over.
    pub connect_timeout: std::time::Duration,
    /// This proxy's node, where moved sessions return when it is master again.
    pub backend_addr: String,
    /// `limits.client_idle_timeout_ms`; zero leaves idle clients connected.
    pub idle_timeout: std::time::Duration,
    /// How long a session whose node connection closed (with nothing owed)
    /// waits for the node to come back or for a new master's leasegate
    /// that holds the lease ([`driver`](super::driver)); zero ends it with the node.
    pub node_lost_patience: std::time::Duration,
    /// The node requires a password (`backend.password` is set, and the
    /// probe has not seen the node serve a client without a login):
    /// clients that have not authenticated get Redis's limits ([`login`](super::login)).
    pub auth_required: bool,
    /// One look at a time for a node that is down ([`node_search`]).
    pub node_search: Arc<node_search::NodeSearch>,
    pub metrics: Arc<crate::proxy::metrics::ProxyMetrics>,
    /// Where sessions go at an upgrade.
    pub mover: Arc<Mover>,
    /// How the node is reached over TLS (`backend.tls`; `None`: plain),
    /// as the last reload left it; read when a node connection is opened.
    pub node_tls: Arc<arc_swap::ArcSwapOption<crate::proxy::backend::NodeTls>>,
    /// How a TLS client's session reaches another leasegate at a
    /// hand-over (`tls.handover`; `None`: its plaintext `listen`), as the
    /// last reload left it.
    pub peer_tls: Arc<arc_swap::ArcSwapOption<crate::proxy::backend::PeerTls>>,
    /// Cancelled when the drain's deadline (`drain_timeout_ms`) passed:
    /// sessions still owed an answer say so and close ([`stopping`](super::stopping)).
    pub stopping: CancellationToken,
}

impl SessionContext {
    /// How a session whose client connection is a `C` reaches another
    /// leasegate: over TLS if its client came over TLS and
    /// `tls.handover` says so, else in plaintext.
    pub fn peer_tls<C: ClientIo>(&self) -> Option<Arc<crate::proxy::backend::PeerTls>> {
        if C::TLS {
            self.peer_tls.load_full()
        } else {
            None
        }
    }
}
