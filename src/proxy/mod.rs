//! The data plane: client sessions paired 1:1 with backend connections.
//!
//! [`session`] is the hot path (with [`crate::guard::gate`]); [`backend`]
//! opens node connections (and the control connections the control plane
//! uses); [`workers`] runs sessions on pinned single-threaded runtimes;
//! [`metrics`] counts what the data plane saw go wrong; [`rxtime`] tells
//! when a connection's first bytes arrived; [`tls`] is the TLS client
//! listener's certificates and handshake.

pub mod backend;
pub mod hex;
pub mod metrics;
pub mod node_conn;
pub mod rxtime;
pub mod session;
pub mod tls;
pub mod workers;
