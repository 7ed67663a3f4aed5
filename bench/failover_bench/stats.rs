//! The numbers of the report: latency quantiles (an `hdrhistogram`
//! histogram of µs, 3 significant digits) and maxima over the whole run,
//! outside every failover window, in each failover's window, at the switch
//! and in the steady period after it; errors and lost keys per failover.
//!
//! Maxima are kept exact (the headline "longest stall" is a maximum);
//! quantiles come from the histogram, nearest-rank at its resolution.

use hdrhistogram::Histogram;

use crate::args::Args;
use crate::failovers::Failover;
use crate::load::Rec;

/// Latencies of a set of requests: a histogram for quantiles, the exact maximum.
pub struct Latencies {
    hist: Histogram<u64>,
    max_us: Option<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            // Auto-resizing: as large as the largest latency recorded needs.
            hist: Histogram::new(3).expect("3 significant digits are valid"),
            max_us: None,
        }
    }

    /// The latencies of the answered requests among `recs`.
    pub fn of<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Latencies {
        let mut l = Latencies::new();
        for r in recs.into_iter().filter(|r| r.answered()) {
            l.record(r.latency_us());
        }
        l
    }

    pub fn record(&mut self, us: u64) {
        // `record` grows the histogram as needed (`saturating_record` would
        // clamp to its current, small, range instead).
        self.hist
            .record(us)
            .expect("an auto-resizing histogram records any latency");
        self.max_us = self.max_us.max(Some(us));
    }

    pub fn reset(&mut self) {
        self.hist.reset();
        self.max_us = None;
    }

    pub fn is_empty(&self) -> bool {
        self.max_us.is_none()
    }

    /// The `q` quantile in ms; NaN if nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.is_empty() {
            return f64::NAN;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in ms; NaN if nothing was recorded.
    pub fn max_ms(&self) -> f64 {
        self.max_us.map_or(f64::NAN, |us| us as f64 / 1000.0)
    }
}

/// One failover's numbers (a row of the report's table).
pub struct Row {
    /// Longest latency in the window; ∞ if a request in it got no reply.
    pub max: f64,
    pub p999: f64,
    pub p99: f64,
    /// Requests sent in the window.
    pub n: usize,
    pub errors: usize,
    pub lost: usize,
    /// The load generator's largest delay behind its schedule in the window, ms.
    pub lag: f64,
    /// Max latency of requests sent from 5 ms before the pause to 20 ms after the release.
    pub at_switch: f64,
    /// Max latency in the steady period after the window, until the next window.
    pub control: f64,
}

/// Where each failover's requests are: its window and its segment.
pub struct Spans<'a> {
    args: &'a Args,
    failovers: &'a [Failover],
}

impl<'a> Spans<'a> {
    pub fn new(args: &'a Args, failovers: &'a [Failover]) -> Spans<'a> {
        Spans { args, failovers }
    }

    /// Requests sent in `[lo, hi)` µs count for failover `f`: from
    /// `--window-before-ms` before the POST to `--window-after-ms` after it,
    /// and at least 100 ms past the reply.
    pub fn window(&self, f: &Failover) -> (u64, u64) {
        let lo = f.posted.saturating_sub(self.args.window_before_ms * 1000);
        let hi = (f.posted + self.args.window_after_ms * 1000).max(f.replied + 100_000);
        (lo, hi)
    }

    /// Failover `i`'s errors and lost keys are counted in `[lo, hi)` µs:
    /// from its window's start (the run's start for the first) to the next one's.
    pub fn segment(&self, i: usize) -> (u64, u64) {
        let before_us = self.args.window_before_ms * 1000;
        let lo = if i == 0 {
            0
        } else {
            self.failovers[i].posted.saturating_sub(before_us)
        };
        let hi = self
            .failovers
            .get(i + 1)
            .map_or(u64::MAX, |n| n.posted.saturating_sub(before_us));
        (lo, hi)
    }

    /// Whether a request sent at `sent` µs is outside every window.
    pub fn steady(&self, sent: u64) -> bool {
        self.failovers.iter().all(|f| {
            let (lo, hi) = self.window(f);
            sent < lo || sent >= hi
        })
    }
}

/// The largest latency of the answered requests sent in `[from, to)` µs (NaN if none).
pub fn max_latency(recs: &[Rec], from: u64, to: u64) -> f64 {
    recs.iter()
        .filter(|r| r.sent >= from && r.sent < to && r.answered())
        .map(Rec::latency_ms)
        .fold(f64::NAN, f64::max)
}

/// Every failover's row. `stop` is when the load stopped (µs).
pub fn rows(
    args: &Args,
    recs: &[Rec],
    failovers: &[Failover],
    lost_keys: &[(u64, String)],
    stop: u64,
) -> Vec<Row> {
    let spans = Spans::new(args, failovers);
    (0..failovers.len())
        .map(|i| row(&spans, recs, i, lost_keys, stop))
        .collect()
}

fn row(spans: &Spans, recs: &[Rec], i: usize, lost_keys: &[(u64, String)], stop: u64) -> Row {
    let f = &spans.failovers[i];
    let (lo, hi) = spans.window(f);
    let in_window: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.sent >= lo && r.sent < hi)
        .collect();
    let lat = Latencies::of(in_window.iter().copied());
    let (slo, shi) = spans.segment(i);
    let in_segment = |t: u64| t >= slo && t < shi;
    let pause = f.pause_us();
    let release = pause + (f.stall_ms.unwrap_or(0.0) * 1000.0) as u64;
    Row {
        max: if in_window.iter().any(|r| !r.answered()) {
            f64::INFINITY
        } else {
            lat.max_ms()
        },
        p999: lat.quantile_ms(0.999),
        p99: lat.quantile_ms(0.99),
        n: in_window.len(),
        errors: recs.iter().filter(|r| in_segment(r.sent) && !r.ok).count(),
        lost: lost_keys.iter().filter(|(t, _)| in_segment(*t)).count(),
        lag: in_window
            .iter()
            .map(|r| r.sent.saturating_sub(r.scheduled) as f64 / 1000.0)
            .fold(0.0, f64::max),
        at_switch: max_latency(recs, pause.saturating_sub(5_000), release + 20_000),
        control: max_latency(recs, hi, shi.min(stop)),
    }
}

/// Latencies over the whole run and outside every failover window.
pub struct Summary {
    pub all: Latencies,
    pub steady: Latencies,
    /// Requests that failed (error reply, broken connection, no reply).
    pub errors: usize,
}

pub fn summary(args: &Args, recs: &[Rec], failovers: &[Failover]) -> Summary {
    let spans = Spans::new(args, failovers);
    Summary {
        all: Latencies::of(recs),
        steady: Latencies::of(recs.iter().filter(|r| spans.steady(r.sent))),
        errors: recs.iter().filter(|r| !r.ok).count(),
    }
}

/// (x, y) points of a plotted line.
pub type Series = Vec<(f64, f64)>;

/// Max and p99 latency (ms) per bucket of send time, as (s since the start,
/// ms) points; buckets without an answered request are left out.
pub struct Timeline {
    pub max: Series,
    pub p99: Series,
}

/// The [`Timeline`] of `recs` (sorted by send time) per `bucket_us`.
pub fn timeline(recs: &[Rec], bucket_us: u64) -> Timeline {
    let mut out = Timeline {
        max: Vec::new(),
        p99: Vec::new(),
    };
    let mut lat = Latencies::new();
    let mut flush = |bucket: u64, lat: &mut Latencies| {
        if !lat.is_empty() {
            let t = (bucket * bucket_us) as f64 / 1e6;
            out.max.push((t, lat.max_ms()));
            out.p99.push((t, lat.quantile_ms(0.99)));
        }
        lat.reset();
    };
    let mut current = 0;
    for r in recs.iter().filter(|r| r.answered()) {
        let bucket = r.sent / bucket_us;
        if bucket != current {
            flush(current, &mut lat);
            current = bucket;
        }
        lat.record(r.latency_us());
    }
    flush(current, &mut lat);
    out
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    /// Nearest rank over the exact values, in ms.
    fn nearest_rank(sorted: &[u64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }

    #[test]
    fn quantiles_are_nearest_rank_within_the_histogram_resolution() {
        // 0.1 ms .. 60 ms, well past the histogram's initial range.
        let values: Vec<u64> = (0..20_000u64).map(|i| 100 + (i * 7919) % 60_000).collect();
        let mut lat = Latencies::new();
        for &v in &values {
            lat.record(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let (got, exact) = (lat.quantile_ms(q), nearest_rank(&sorted, q));
            assert!(
                (got - exact).abs() <= exact * 0.001,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(lat.max_ms(), *sorted.last().unwrap() as f64 / 1000.0);
    }

    #[test]
    fn empty_is_nan_and_reset_empties() {
        let mut lat = Latencies::new();
        assert!(lat.quantile_ms(0.99).is_nan() && lat.max_ms().is_nan());
        lat.record(5_000);
        // The bucket's highest equivalent value: within 0.1 %.
        assert!((lat.quantile_ms(0.5) - 5.0).abs() <= 0.005);
        assert_eq!(lat.max_ms(), 5.0);
        lat.reset();
        assert!(lat.is_empty() && lat.quantile_ms(0.5).is_nan());
    }
}
