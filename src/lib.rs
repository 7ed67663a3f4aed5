//! leasegate: a RESP sidecar proxy that fences writes on a Kvrocks/Redis node.
//!
//! Reading order: [`session`] (one client ↔ one backend connection, the hot
//! path) and [`gate`] (the single "may this request pass" decision); then
//! [`frame`] (RESP boundaries), [`command`] (classification), [`server`]
//! (listener and lifecycle) and [`config`].

pub mod admin;
pub mod admin_client;
pub mod backend;
pub mod command;
pub mod config;
pub mod control;
pub mod controller;
pub mod failover;
pub mod frame;
pub mod gate;
pub mod lease;
pub mod logging;
pub mod pause;
pub mod probe;
pub mod server;
pub mod session;
pub mod topology;
pub mod verify;
pub mod workers;
