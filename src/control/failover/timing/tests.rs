//! Unit tests of [`super`].

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

#[test]
fn the_grid_floors_on_both_sides_of_its_origin() {
    let base = Instant::now() + ms(1000);
    let grid = Grid::new(base, ms(4), Duration::ZERO).expect("grid");
    assert_eq!(grid.floor(base), base);
    assert_eq!(grid.floor(base + us(3999)), base);
    assert_eq!(grid.floor(base + ms(4)), base + ms(4));
    assert_eq!(grid.floor(base + ms(10)), base + ms(8));
    assert_eq!(grid.floor(base - us(1)), base - ms(4));
    assert_eq!(grid.floor(base - ms(4)), base - ms(4));
    assert_eq!(grid.floor(base - us(4001)), base - ms(8));
    assert!(Grid::new(base, Duration::ZERO, Duration::ZERO).is_none());
    assert!(
        Grid::new(base, ms(4), ms(4)).is_none(),
        "a lag of a whole step"
    );
}

#[test]
fn a_clock_view_maps_through_the_round_trips_midpoint() {
    let sent = Instant::now();
    let trip = RoundTrip {
        sent,
        received: sent + us(400),
        sent_monotonic: ms(5000),
        received_monotonic: ms(5000) + us(400),
    };
    let mut view = ClockView {
        tick_ns: 4_000_000,
        since_tick_ns: 1_500_000,
        lag_ns: 300_000,
        monotonic_ns: 1_000_000,
    };
    // Another host's clock: answered at sent + 200 µs (± 200 µs),
    // 1.5 ms after a grid point.
    let (grid, error) = Grid::from_view(view, &trip).expect("grid");
    assert_eq!(error, us(200));
    let point = sent + us(200) - us(1500);
    assert_eq!(grid.floor(point + us(10)), point);
    assert_eq!(grid.floor(point + ms(4)), point + ms(4));
    // The same host: its monotonic time places the answer exactly.
    view.monotonic_ns = 5_000_050_000;
    let (grid, error) = Grid::from_view(view, &trip).expect("grid");
    assert_eq!(error, Duration::ZERO);
    let point = sent + us(50) - us(1500);
    assert_eq!(grid.floor(point + us(10)), point);
}

/// With the grid known, the first bytes well inside a coarse tick give
/// one exact tick; near a grid point, the earlier of two. The clock
/// shows each grid point `lag` late: so does the timer fire.
#[test]
fn ticks_from_a_link_with_a_grid() {
    let origin = Instant::now() + ms(1000);
    let lag = us(300);
    let grid = Grid::new(origin, ms(4), lag).expect("grid");
    let exact = Some((grid, Duration::ZERO));
    let inside = Ticks::from_link(origin + us(2500), exact);
    assert_eq!(inside.earliest, origin + lag);
    assert_eq!(inside.spread(), Duration::ZERO);
    // Armed 0.2 ms after the grid point: the clock still read the one before.
    let shown_late = Ticks::from_link(origin + us(200), exact);
    assert_eq!(shown_late.earliest, origin - ms(4) + lag);
    assert_eq!(shown_late.spread(), Duration::ZERO);
    // First bytes 0.6 ms after the grid point: armed before or after
    // the clock showed it.
    let near = Ticks::from_link(origin + us(600), exact);
    assert_eq!(near.earliest, origin - ms(4) + lag);
    assert_eq!(near.spread(), ms(4));
    // A mapping that may be 1 ms off widens the window the same way.
    let mapped = Ticks::from_link(origin + us(2500), Some((grid, ms(1))));
    assert_eq!(mapped.earliest, origin + lag);
    let mapped = Ticks::from_link(origin + us(3500), Some((grid, ms(1))));
    assert_eq!(mapped.spread(), ms(4));
    // Every period after.
    let t = origin + lag;
    assert_eq!(inside.at_or_after(t + us(1)), t + ms(100));
    assert_eq!(inside.at_or_after(t + ms(100)), t + ms(100));
    assert_eq!(inside.at_or_after(t + ms(250)), t + ms(300));
}

#[test]
fn ticks_from_a_link_without_a_grid_take_the_whole_window() {
    let first = Instant::now() + ms(1000);
    let ticks = Ticks::from_link(first, None);
    assert_eq!(ticks.earliest, first - us(4500));
    assert_eq!(ticks.spread(), us(4500));
}

/// The pause comes at the first tick that the work and the margin can
/// still meet, never more than a period away.
#[test]
fn the_plan_meets_the_first_reachable_tick() {
    let origin = Instant::now() + ms(1000);
    let grid = Grid::new(origin, ms(4), Duration::ZERO).map(|g| (g, Duration::ZERO));
    let ticks = Ticks::from_link(origin + us(2500), grid);
    // 10 ms after a tick, 2 ms of work: the next tick, 90 ms away.
    let now = origin + ms(10);
    let p = plan(&ticks, now, ms(2));
    assert_eq!(p.tick, origin + ms(100));
    assert_eq!(p.pause_at, origin + ms(97));
    // 2.5 ms before a tick with 2 ms of work and 1 ms of margin: too
    // late for it, so the one after.
    let now = origin + us(97_500);
    let p = plan(&ticks, now, ms(2));
    assert_eq!(p.tick, origin + ms(200));
    assert_eq!(p.pause_at, origin + ms(197));
    for offset in 0..200 {
        let now = origin + ms(offset);
        let p = plan(&ticks, now, ms(2));
        assert!(p.pause_at >= now && p.pause_at - now <= PERIOD);
        assert_eq!(p.tick - p.pause_at, ms(3));
        assert_eq!(p.tick - p.send_by(), LATE_MARGIN);
    }
}

#[test]
fn a_promotion_slower_than_half_a_period_missed() {
    assert_eq!(judge(ms(3)), TimingOutcome::Held);
    assert_eq!(judge(ms(49)), TimingOutcome::Held);
    assert_eq!(judge(ms(97)), TimingOutcome::Missed);
}

#[test]
fn the_work_estimate_follows_the_median() {
    let memory = Memory::default().catch_up;
    assert_eq!(memory.estimate(), WORK_FIRST);
    memory.record(us(800));
    assert_eq!(memory.estimate(), us(1300));
    for w in [700, 900, 1000, 600, 25_000, 30_000] {
        memory.record(us(w));
    }
    // Two slow attempts (a replica that just attached) do not lead.
    assert_eq!(memory.estimate(), us(1400));
    for _ in 0..WORK_SAMPLES {
        memory.record(us(100));
    }
    assert_eq!(memory.estimate(), us(600), "old samples are forgotten");
    for _ in 0..WORK_SAMPLES {
        memory.record(us(60_000));
    }
    assert_eq!(memory.estimate(), WORK_MAX);
}

#[test]
fn the_switch_estimate_follows_the_slowest_recent_one() {
    let memory = Memory::default().switch;
    assert_eq!(memory.estimate(), SWITCH_FIRST);
    for w in [6, 9, 14, 7, 8] {
        memory.record(ms(w));
    }
    // A switch planned too short misses a whole period: the slowest leads.
    assert_eq!(memory.estimate(), ms(14) + WORK_SLACK);
    for _ in 0..WORK_SAMPLES {
        memory.record(ms(5));
    }
    assert_eq!(memory.estimate(), us(5500), "old samples are forgotten");
}
