//! RESP framing: where requests and replies begin and end.
//!
//! Only boundaries and the few fields the proxy acts on are read; payloads
//! are forwarded as the peer sent them.

pub mod name;
pub mod reply;
pub mod request;
