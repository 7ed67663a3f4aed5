//! The numbers of the report: latency quantiles (an `hdrhistogram`
//! histogram of µs, 3 significant digits) and maxima over the whole run,
//! outside every failover window, in each failover's window, at the switch
//! and in the steady period after it; errors and lost keys per failover.
//!
//! Maxima are kept exact (the headline "longest stall" is a maximum);
//! quantiles come from the histogram, nearest-rank at its resolution.
//! [`by_mode`] sums the failovers up per promotion-timing mode (with /
//! without / n/a), side by side.

use hdrhistogram::Histogram;
use leasegate::kvrocks::admin_api::TimingOutcome;

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

/// The median of `v` (mean of the two middle values for an even count; NaN
/// when empty; NaN values are left out, ∞ sorts last).
pub fn median(v: &[f64]) -> f64 {
    let v = sorted(v);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q` quantile of `v`, nearest rank (the smallest value with at least
/// `q` of them at or below it); NaN when empty, NaN values left out.
pub fn nearest_rank(v: &[f64], q: f64) -> f64 {
    let v = sorted(v);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The largest of `v` (NaN when empty; NaN values left out).
pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The failovers of one promotion-timing mode, summed up (a column of the
/// report's side-by-side table). Stalls are the rows' longest stalls (the
/// clients' view; ∞ for a request without a reply); promotions are
/// [`Failover::promotion`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModeStats {
    /// `promotion_timing` of these failovers (`None`: n/a).
    pub timing: Option<bool>,
    pub failovers: usize,
    pub succeeded: usize,
    pub errors: usize,
    pub lost: usize,
    pub stall_median: f64,
    pub stall_p90: f64,
    pub stall_max: f64,
    /// Failovers whose longest stall was at most 5 ms, 10 ms.
    pub within_5ms: usize,
    pub within_10ms: usize,
    /// The longest stall of the requests sent around the switch (from 5 ms
    /// before the pause to 20 ms after the release): the failover's own,
    /// without what the window holds besides (a replica attaching, noise).
    pub switch_median: f64,
    pub switch_max: f64,
    pub switch_within_5ms: usize,
    pub switch_within_10ms: usize,
    pub report_stall_median: f64,
    pub promotion_median: f64,
    pub promotion_max: f64,
    pub held: usize,
    pub missed: usize,
    pub unused: usize,
    /// Failovers whose report had no `timing` (failed early, or a server
    /// without promotion timing).
    pub no_timing: usize,
    pub wait_median: f64,
    pub wait_max: f64,
}

impl ModeStats {
    /// The column's name.
    pub fn label(&self) -> &'static str {
        match self.timing {
            Some(true) => "with promotion timing",
            Some(false) => "without",
            None => "n/a (controller flow)",
        }
    }
}

/// One [`ModeStats`] per mode: with and without (always, when any
/// failover had a mode, so the columns stand side by side even if one is
/// empty), and n/a if any failover had none. `rows[i]` is `failovers[i]`'s.
pub fn by_mode(failovers: &[Failover], rows: &[Row]) -> Vec<ModeStats> {
    let mut modes: Vec<Option<bool>> = Vec::new();
    if failovers.iter().any(|f| f.timing.is_some()) {
        modes.extend([Some(true), Some(false)]);
    }
    if failovers.iter().any(|f| f.timing.is_none()) {
        modes.push(None);
    }
    modes
        .into_iter()
        .map(|mode| {
            let (fs, rs): (Vec<&Failover>, Vec<&Row>) = failovers
                .iter()
                .zip(rows)
                .filter(|(f, _)| f.timing == mode)
                .unzip();
            mode_stats(mode, &fs, &rs)
        })
        .collect()
}

fn mode_stats(timing: Option<bool>, fs: &[&Failover], rows: &[&Row]) -> ModeStats {
    let stalls: Vec<f64> = rows.iter().map(|r| r.max).collect();
    let within = |ms: f64| stalls.iter().filter(|&&s| s <= ms).count();
    let switch: Vec<f64> = rows.iter().map(|r| r.at_switch).collect();
    let switch_within = |ms: f64| switch.iter().filter(|&&s| s <= ms).count();
    let promotions: Vec<f64> = fs.iter().filter_map(|f| f.promotion()).collect();
    let waits: Vec<f64> = fs.iter().filter_map(|f| f.wait_ms).collect();
    let reports: Vec<f64> = fs.iter().filter_map(|f| f.stall_ms).collect();
    let outcomes = |o: TimingOutcome| fs.iter().filter(|f| f.outcome == Some(o)).count();
    ModeStats {
        timing,
        failovers: fs.len(),
        succeeded: fs.iter().filter(|f| f.ok()).count(),
        errors: rows.iter().map(|r| r.errors).sum(),
        lost: rows.iter().map(|r| r.lost).sum(),
        stall_median: median(&stalls),
        stall_p90: nearest_rank(&stalls, 0.9),
        stall_max: max(&stalls),
        within_5ms: within(5.0),
        within_10ms: within(10.0),
        switch_median: median(&switch),
        switch_max: max(&switch),
        switch_within_5ms: switch_within(5.0),
        switch_within_10ms: switch_within(10.0),
        report_stall_median: median(&reports),
        promotion_median: median(&promotions),
        promotion_max: max(&promotions),
        held: outcomes(TimingOutcome::Held),
        missed: outcomes(TimingOutcome::Missed),
        unused: outcomes(TimingOutcome::Unused),
        no_timing: fs.iter().filter(|f| f.outcome.is_none()).count(),
        wait_median: median(&waits),
        wait_max: max(&waits),
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
    use super::*;

    /// Nearest rank over the exact values, in ms.
    fn exact_nearest_rank(sorted: &[u64], q: f64) -> f64 {
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
            let (got, exact) = (lat.quantile_ms(q), exact_nearest_rank(&sorted, q));
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

    /// A row with this longest stall, errors and lost writes (the rest 0).
    fn row(max: f64, errors: usize, lost: usize) -> Row {
        Row {
            max,
            p999: max,
            p99: max,
            n: 100,
            errors,
            lost,
            lag: 0.0,
            at_switch: max,
            control: 1.0,
        }
    }

    /// A failover `n` with the mode alternating (odd: with timing), and the
    /// report's promotion, outcome and wait.
    fn failover(
        n: usize,
        ok: bool,
        promotion: Option<f64>,
        outcome: Option<TimingOutcome>,
        wait: Option<f64>,
    ) -> Failover {
        let mut f = Failover::new(n, (n + 1) % 2, n % 2, Some(n % 2 == 1));
        f.result = if ok { "success" } else { "failed" }.into();
        f.stall_ms = ok.then_some(1.0);
        f.promotion_ms = promotion;
        f.outcome = outcome;
        f.wait_ms = wait;
        f
    }

    #[test]
    fn median_and_nearest_rank() {
        assert!(median(&[]).is_nan() && nearest_rank(&[], 0.9).is_nan() && max(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[1.0, f64::NAN, 3.0]), 2.0);
        assert_eq!(median(&[1.0, f64::INFINITY]), f64::INFINITY);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&ten, 0.9), 9.0);
        assert_eq!(nearest_rank(&ten, 0.91), 10.0);
        assert_eq!(nearest_rank(&ten[..3], 0.9), 3.0);
        assert_eq!(nearest_rank(&[7.0], 0.0), 7.0);
        assert_eq!(max(&[1.0, f64::NAN, 3.0]), 3.0);
    }

    #[test]
    fn side_by_side_sums_each_mode_apart() {
        use TimingOutcome::{Held, Missed, Unused};
        // Odd = with timing, even = without.
        let fs = vec![
            failover(1, true, Some(2.0), Some(Held), Some(40.0)),
            failover(2, true, Some(60.0), Some(Unused), Some(0.0)),
            failover(3, true, Some(4.0), Some(Held), Some(80.0)),
            failover(4, true, Some(90.0), Some(Unused), Some(0.0)),
            failover(5, true, Some(101.0), Some(Missed), Some(10.0)),
            failover(6, false, None, None, None),
        ];
        let rows = vec![
            row(4.0, 0, 0),
            row(70.0, 1, 0),
            row(6.0, 0, 0),
            row(95.0, 0, 2),
            row(110.0, 0, 0),
            row(f64::INFINITY, 3, 1),
        ];
        let modes = by_mode(&fs, &rows);
        assert_eq!(modes.len(), 2, "with and without, no n/a");
        let (with, without) = (&modes[0], &modes[1]);
        assert_eq!(with.label(), "with promotion timing");
        assert_eq!(without.label(), "without");

        assert_eq!((with.failovers, with.succeeded), (3, 3));
        assert_eq!((with.errors, with.lost), (0, 0));
        assert_eq!(with.stall_median, 6.0);
        assert_eq!(with.stall_p90, 110.0);
        assert_eq!(with.stall_max, 110.0);
        assert_eq!((with.within_5ms, with.within_10ms), (1, 2));
        assert_eq!(with.promotion_median, 4.0);
        assert_eq!(with.promotion_max, 101.0);
        assert_eq!(
            (with.held, with.missed, with.unused, with.no_timing),
            (2, 1, 0, 0)
        );
        assert_eq!(with.wait_median, 40.0);
        assert_eq!(with.wait_max, 80.0);
        assert_eq!(with.report_stall_median, 1.0);

        assert_eq!((without.failovers, without.succeeded), (3, 2));
        assert_eq!((without.errors, without.lost), (4, 3));
        // 70, 95, ∞: the no-reply stall sorts last and is the max.
        assert_eq!(without.stall_median, 95.0);
        assert_eq!(without.stall_p90, f64::INFINITY);
        assert_eq!(without.stall_max, f64::INFINITY);
        assert_eq!((without.within_5ms, without.within_10ms), (0, 0));
        assert_eq!(without.promotion_median, 75.0);
        assert_eq!(without.promotion_max, 90.0);
        assert_eq!(
            (
                without.held,
                without.missed,
                without.unused,
                without.no_timing
            ),
            (0, 0, 2, 1)
        );
        assert_eq!(without.wait_median, 0.0);
    }

    #[test]
    fn side_by_side_has_both_columns_or_only_na() {
        // Every failover with timing: the "without" column is still there, empty.
        let fs = vec![failover(
            1,
            true,
            Some(2.0),
            Some(TimingOutcome::Held),
            Some(5.0),
        )];
        let modes = by_mode(&fs, &[row(3.0, 0, 0)]);
        assert_eq!(modes.len(), 2);
        assert_eq!(modes[1].failovers, 0);
        assert!(modes[1].stall_median.is_nan() && modes[1].promotion_max.is_nan());
        // Controller flow: one n/a column; the controller's promotion counts.
        let mut f = Failover::new(1, 0, 1, None);
        f.result = "success".into();
        f.promote_ms = Some(50.0);
        let modes = by_mode(&[f], &[row(60.0, 0, 0)]);
        assert_eq!(modes.len(), 1);
        assert_eq!(modes[0].label(), "n/a (controller flow)");
        assert_eq!(modes[0].promotion_median, 50.0);
        assert_eq!(modes[0].no_timing, 1);
    }
}
