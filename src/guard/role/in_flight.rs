//! The writes in flight on this node, counted by every session and read by
//! a pause that must see them at zero: sharded so the hot path never
//! contends.

use std::sync::atomic::{AtomicI64, Ordering};

/// A counter sharded by thread: sessions never migrate between worker
/// threads, so each one counts on its own thread's cache line and the hot
/// path never contends; only the (rare) reader sums the shards.
pub(super) struct InFlight {
    shards: Box<[Shard]>,
}

#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicI64);

const IN_FLIGHT_SHARDS: usize = 64;

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            shards: (0..IN_FLIGHT_SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl InFlight {
    #[inline]
    pub(super) fn add(&self, n: i64) {
        thread_local! {
            static SHARD: usize = {
                static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % IN_FLIGHT_SHARDS
            };
        }
        let i = SHARD.with(|s| *s);
        // SeqCst pairs with the pause flag: see `Session::admit`.
        self.shards[i].0.fetch_add(n, Ordering::SeqCst);
    }

    pub(super) fn sum(&self) -> i64 {
        self.shards.iter().map(|s| s.0.load(Ordering::SeqCst)).sum()
    }
}
