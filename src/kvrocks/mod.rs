//! What the outside world says, as data: the node's topology and replication
//! reports ([`topology`]), the kvrocks-controller HTTP API ([`controller`],
//! over plain HTTP or TLS: [`connector`]; what its raft group stands
//! behind: [`controller_group`]),
//! Redis Sentinel's view of a master ([`sentinel`]), and other leasegates'
//! admin API ([`admin_api`], the wire model; [`admin_client`], the client;
//! [`admin_text`], its answers for people).

pub mod admin_api;
pub mod admin_client;
pub mod admin_text;
pub mod connector;
pub mod controller;
pub mod controller_group;
pub mod sentinel;
pub mod topology;
