//! The control plane, beside the data plane: the admin HTTP API
//! ([`admin`]), graceful failover ([`failover`]) and the node probe
//! ([`probe`]). It changes what the guard knows; it never touches sessions.

pub mod admin;
pub mod failover;
pub mod probe;
