//! The plots (SVG, `plotters`): `NAME.svg`, write latency against send time
//! relative to each failover's pause start (top: every failover overlaid,
//! the largest latency per 0.5 ms, one colour for the failovers with
//! promotion timing and one for those without, or per direction where the
//! controller runs them; bottom: every request of the worst failover), and `NAME-timeline.svg`, max and p99 latency per 10 ms over
//! the whole run with the failover POSTs marked.
//!
//! A table gives one number per failover; the plots show the shape of the
//! stall (how long, which requests, whether a backlog drained after it) and
//! whether the noise between failovers is of the same size.

use std::collections::BTreeMap;
use std::error::Error;

use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::args::Args;
use crate::failovers::Failover;
use crate::load::Rec;
use crate::stats::{self, Series};

type PlotResult = Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A failover's index and its requests as (send time relative to its pause start, latency) in ms.
type Points = (usize, Series);

/// What a switch chart shows.
struct Switches<'a> {
    failovers: &'a [Failover],
    x: (f64, f64),
}

/// `NAME.svg`: latency around the switch, all failovers, then the worst one
/// (`worst`, an index into `failovers`).
pub fn switches(
    args: &Args,
    recs: &[Rec],
    failovers: &[Failover],
    worst: Option<usize>,
) -> PlotResult {
    let path = format!("{}/{}.svg", args.out_dir, args.name);
    let root = SVGBackend::new(&path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let x_hi = failovers
        .iter()
        .filter_map(|f| f.stall_ms)
        .fold(70.0f64, f64::max)
        + 30.0;
    let sw = Switches {
        failovers,
        x: (-(args.window_before_ms as f64), x_hi),
    };
    let all: Vec<Points> = (0..failovers.len())
        .map(|i| (i, sw.around(recs, i)))
        .collect();
    let title = format!(
        "Write latency around the switch, all {} failovers overlaid, max per 0.5 ms ({} SET/s × {} B, {} conns)",
        failovers.len(),
        args.rate,
        args.value_size,
        args.connections
    );
    sw.draw(&top, &title, &all, false)?;
    if let Some(w) = worst {
        let f = &failovers[w];
        let title = format!(
            "Worst failover: #{} {}→{}, timing {} (report stall {} ms)",
            f.n,
            f.from,
            f.to,
            f.mode(),
            f.stall_ms.map_or("-".into(), |s| format!("{s:.2}"))
        );
        sw.draw(&bottom, &title, &all[w..=w], true)?;
    }
    root.present()?;
    Ok(())
}

impl Switches<'_> {
    /// Whether the failovers are told apart by promotion timing (else by
    /// direction: controller-run failovers have no timing mode).
    fn by_timing(&self) -> bool {
        self.failovers.iter().any(|f| f.timing.is_some())
    }

    /// The series (colour and legend label) failover `i` belongs to.
    fn series(&self, i: usize) -> (RGBColor, &'static str) {
        let f = &self.failovers[i];
        if self.by_timing() {
            match f.timing {
                Some(false) => (RED, "without"),
                _ => (BLUE, "with promotion timing"),
            }
        } else if f.from == "A" {
            (BLUE, "request, A→B")
        } else {
            (RED, "request, B→A")
        }
    }

    /// Failover `i`'s answered requests in the x range, relative to its pause start.
    fn around(&self, recs: &[Rec], i: usize) -> Vec<(f64, f64)> {
        let p = self.failovers[i].pause_us() as i64;
        recs.iter()
            .filter(|r| r.answered())
            .filter_map(|r| {
                let x = (r.sent as i64 - p) as f64 / 1000.0;
                (x >= self.x.0 && x <= self.x.1).then(|| (x, r.latency_ms()))
            })
            .collect()
    }

    /// One chart: every request as a point, or the max per 0.5 ms as a line.
    fn draw(&self, area: &Area, title: &str, sets: &[Points], points: bool) -> PlotResult {
        let ys = sets
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(self.x.0..self.x.1, 0.0..ys.max(0.5))?;
        chart
            .configure_mesh()
            .x_desc("send time relative to the pause start (ms)")
            .y_desc("latency (ms)")
            .draw()?;
        for (i, pts) in sets {
            let color = self.series(*i).0.mix(0.5);
            if points {
                chart.draw_series(
                    pts.iter()
                        .map(|&(x, y)| Circle::new((x, y), 2, color.filled())),
                )?;
            } else {
                chart.draw_series(LineSeries::new(max_per_half_ms(pts), color.stroke_width(1)))?;
            }
        }
        self.markers(&mut chart, sets, ys)?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }

    /// The pause start, the release (report stall) of each failover shown,
    /// and legend entries for the requests' colours.
    fn markers(&self, chart: &mut Chart, sets: &[Points], ys: f64) -> PlotResult {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (0.0, ys)],
                BLACK.stroke_width(2),
            ))?
            .label("pause start")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let mut labelled = false;
        for s in sets.iter().filter_map(|(i, _)| self.failovers[*i].stall_ms) {
            let series = chart.draw_series(LineSeries::new(
                vec![(s, 0.0), (s, ys)],
                GREEN.mix(0.6).stroke_width(1),
            ))?;
            if !labelled {
                series.label("release (report stall_ms)").legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2))
                });
                labelled = true;
            }
        }
        // One legend entry per series shown.
        let mut shown: Vec<(RGBColor, &'static str)> = Vec::new();
        for (i, _) in sets {
            let s = self.series(*i);
            if !shown.iter().any(|t| t.1 == s.1) {
                shown.push(s);
            }
        }
        shown.sort_by_key(|s| s.1 == "without");
        for (color, label) in shown {
            chart
                .draw_series(Vec::<Circle<(f64, f64), i32>>::new())?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
        }
        Ok(())
    }
}

/// The largest latency per 0.5 ms of send time (keeps the SVG small).
fn max_per_half_ms(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<i64, f64> = BTreeMap::new();
    for &(x, y) in pts {
        let b = buckets.entry((x * 2.0).floor() as i64).or_insert(0.0);
        *b = b.max(y);
    }
    buckets
        .into_iter()
        .map(|(b, y)| (b as f64 / 2.0 + 0.25, y))
        .collect()
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> PlotResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `NAME-timeline.svg`: max and p99 latency per 10 ms of send time over the
/// whole run; a vertical line per failover POST.
pub fn timeline(args: &Args, recs: &[Rec], failovers: &[Failover]) -> PlotResult {
    let path = format!("{}/{}-timeline.svg", args.out_dir, args.name);
    let root = SVGBackend::new(&path, (1400, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let end_s = recs.last().map_or(1.0, |r| r.sent as f64 / 1e6);
    let stats::Timeline { max, p99 } = stats::timeline(recs, 10_000);
    let ys = max.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Write latency over the whole run (per 10 ms of send time); vertical lines: failover POSTs (grey: succeeded, magenta: failed)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0.0..ys)?;
    chart
        .configure_mesh()
        .x_desc("time since the start (s)")
        .y_desc("latency (ms)")
        .draw()?;
    for f in failovers {
        let t = f.posted as f64 / 1e6;
        let color = if f.ok() {
            BLACK.mix(0.4)
        } else {
            MAGENTA.mix(0.8)
        };
        chart.draw_series(LineSeries::new(
            vec![(t, 0.0), (t, ys)],
            color.stroke_width(1),
        ))?;
    }
    for (label, pts, color) in [("max", max, RED), ("p99", p99, BLUE)] {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(1)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}
