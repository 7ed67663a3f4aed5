//! leasegate: a RESP sidecar proxy that fences writes on a Kvrocks/Redis node.
//!
//! The folders are the layers, lowest first; a module imports only from its
//! own layer or those below (`tests/layers.rs` checks it). See
//! `ARCHITECTURE.md` for the map.
//!
//! * [`resp`] — RESP: request and reply framing, command names, encoding;
//! * [`command`] — classification (read / write / admin / intercept);
//! * [`kvrocks`] — what the node, the controller and other leasegates say;
//! * [`guard`] — the Gate (may this request pass?), the lease, pause,
//!   verification and the node's role;
//! * [`proxy`] — sessions (one client ↔ one backend connection: the hot
//!   path, with [`guard::gate`]), backend connections, worker threads;
//! * [`config`] — the YAML file, typed, with every default in one place;
//! * [`control`] — the control plane beside the data plane: admin HTTP API,
//!   controller polling, graceful failover, node probe;
//! * [`server`], [`logging`] — wiring and lifecycle.
//!
//! The library exists for the binary, its tests and benchmarks, not as an
//! API: its docs are meant to be read with `cargo doc
//! --document-private-items`, where module docs may point at the private
//! items that do the work.
#![allow(rustdoc::private_intra_doc_links)]

pub mod resp;

pub mod command;

pub mod kvrocks;

pub mod guard;

pub mod proxy;

pub mod config;

pub mod control;

pub mod logging;
pub mod server;
