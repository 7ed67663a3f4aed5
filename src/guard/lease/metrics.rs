//! The lease as gauges, read when metrics are scraped.

use super::Lease;

/// The lease as gauges (`leasegate_lease_valid`, `_remaining_seconds`,
/// `_epoch`), read from the lease when metrics are scraped
/// ([`LeaseMetrics::refresh`]) rather than written on the hot path.
#[derive(Debug, Default)]
pub struct LeaseMetrics {
    valid: prometheus_client::metrics::gauge::Gauge,
    remaining: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    epoch: prometheus_client::metrics::gauge::Gauge,
}

/// What `leasegate_lease_remaining_seconds` shows for a lease valid until
/// told otherwise (`initial: valid`): a year.
pub const REMAINING_FOREVER_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

impl LeaseMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "lease_valid",
            "1 while this node's master lease is valid",
            self.valid.clone(),
        );
        registry.register(
            "lease_remaining_seconds",
            "Seconds until the master lease lapses (0 when not valid; a year when valid until told otherwise)",
            self.remaining.clone(),
        );
        registry.register(
            "lease_epoch",
            "Epoch (election version) of the last grant",
            self.epoch.clone(),
        );
    }

    /// Reads the lease into the gauges.
    pub fn refresh(&self, lease: &Lease) {
        let s = lease.snapshot();
        self.valid.set(i64::from(s.valid));
        self.remaining.set(if !s.valid {
            0.0
        } else if s.remaining_ms == u64::MAX {
            REMAINING_FOREVER_SECONDS
        } else {
            s.remaining_ms as f64 / 1000.0
        });
        self.epoch.set(i64::try_from(s.epoch).unwrap_or(i64::MAX));
    }
}
