//! When the controller's `CLIENT PAUSE` begins: the hook through which the
//! control plane times it ([`PauseTiming`]).
//!
//! kvrocks-controller PR #389 runs a failover as `CLIENT PAUSE <ms> WRITE`
//! to the master (here), offsets polled until the replica caught up, the
//! topology pushed (the replica's promotion), `CLIENT UNPAUSE`. A Kvrocks
//! replica becomes master only at the next tick of its replication
//! thread's 100 ms timer (`reference/KVROCKS-PROMOTION.md`), so held writes
//! would wait 0–100 ms for it. The Gate asks the hook when to begin the
//! pause instead of beginning it at once: the `CLIENT PAUSE` is held (writes
//! go on meanwhile, under the lease) and answered once the pause began, so
//! that the controller's work ends just before the tick.
//!
//! The decision lives in the control plane (`control::failover::
//! controller_pause`), which knows the replication links' ticks and what
//! past pauses took; the Gate only holds the request and begins the pause.
//! Only the timing of a pause is decided there, never whether a write
//! passes.

use std::time::Instant;

/// Times the controller's `CLIENT PAUSE` ([`crate::guard::gate::Gate::time_controller_pauses`]).
pub trait PauseTiming: Send + Sync + std::fmt::Debug {
    /// When a `CLIENT PAUSE ... WRITE` that arrived at `now` should begin
    /// (`None`: at once). At most about one period ahead.
    fn begin_at(&self, now: Instant) -> Option<Instant>;

    /// The pause planned by the last [`PauseTiming::begin_at`] began (at
    /// `at`): the hook follows what comes of it.
    fn began(&self, at: Instant);

    /// A control connection asked for `INFO` at `at`: the controller
    /// reading this node's offset, which it does after the pause and
    /// before it promotes the replica.
    fn offset_read(&self, _at: Instant) {}
}
