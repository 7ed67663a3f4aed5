//! What the outside world says, as data: the node's topology and replication
//! reports ([`topology`]), the kvrocks-controller HTTP API ([`controller`]),
//! and other leasegates' admin API ([`admin_client`]).

pub mod admin_client;
pub mod controller;
pub mod topology;
