//! The clock leases count on: monotonic nanoseconds that keep counting
//! through suspend ([`BootClock`], `CLOCK_BOOTTIME`), behind [`Clock`] so
//! that tests can move time by hand ([`ManualClock`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// A millisecond in [`Nanos`].
const MS: u64 = 1_000_000;

/// Nanoseconds on a monotonic clock.
pub type Nanos = u64;

/// A monotonic clock in nanoseconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Nanos;
}

/// `CLOCK_BOOTTIME`: monotonic, and counts time spent suspended, so a node
/// that was frozen for longer than its lease wakes up fenced.
#[derive(Debug, Default)]
pub struct BootClock;

impl Clock for BootClock {
    #[inline]
    fn now(&self) -> Nanos {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
        // every Linux this runs on, and clock_gettime cannot fail for it.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Nanos) -> ManualClock {
        ManualClock(AtomicU64::new(start))
    }
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms * MS, Ordering::SeqCst);
    }
    pub fn set(&self, t: Nanos) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}

/// Rate-limits a warning to one a second, without a lock: the first caller
/// past the second wins the exchange and logs.
#[derive(Debug, Default)]
pub struct EverySecond(AtomicU64);

impl EverySecond {
    pub const fn new() -> EverySecond {
        EverySecond(AtomicU64::new(0))
    }

    /// Whether to log now (`now` in nanoseconds on the lease clock).
    pub fn due(&self, now: Nanos) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1_000_000_000
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
