//! RESP: where requests and replies begin and end ([`request`], [`reply`]),
//! command names ([`name`]), and the one encoder for what leasegate says
//! itself ([`encode`]).
//!
//! Only boundaries and the few fields the proxy acts on are read; payloads
//! are forwarded as the peer sent them.

pub mod encode;
pub mod name;
pub mod reply;
pub mod request;
