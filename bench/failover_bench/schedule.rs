//! When the failovers start and how they are asked for: the schedule of
//! the waits between them (`--schedule`, `--seed`), and whether each one
//! asks leasegate for promotion timing (`--timing`).
//!
//! Why a schedule matters: a Kvrocks replica becomes master only at the
//! next tick of its replication thread's 100 ms timer. With a fixed wait
//! after each failover's reply (which itself comes just after a tick), every
//! failover lands at the same phase of that tick, the same case every time.
//! The random schedule adds a uniform 0..=`--phase-jitter-ms` to each wait,
//! from a small seeded PRNG, so the failovers sample the phases an
//! operator's would, and a run can be repeated with its seed.

use crate::args::{Args, Flow, ScheduleKind, TimingMode};

/// splitmix64 (Steele, Lea, Flood 2014; the reference generator of
/// `java.util.SplittableRandom` and xoshiro's seeding): one 64-bit state,
/// every seed good, enough for drawing waits.
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (the high half of a 64×64-bit product: its bias
    /// is below 2⁻⁴⁰ for any `max` used here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        let span = u128::from(max) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

/// A seed from the clock (and the process id, so two runs started in the
/// same nanosecond differ), when `--seed` is not given.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // One splitmix64 step spreads the clock's low-entropy bits over the seed.
    SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// The waits before the failovers.
pub struct Schedule {
    kind: ScheduleKind,
    jitter_ms: u64,
    rng: SplitMix64,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, jitter_ms: u64, seed: u64) -> Schedule {
        Schedule {
            kind,
            jitter_ms,
            rng: SplitMix64::new(seed),
        }
    }

    pub fn of(args: &Args) -> Schedule {
        Schedule::new(args.schedule, args.phase_jitter_ms, args.seed())
    }

    /// The wait before the next failover: `base_ms` (the interval, or the
    /// warm-up before the first), plus the random part (random schedule).
    pub fn wait_ms(&mut self, base_ms: u64) -> u64 {
        base_ms + self.extra_ms()
    }

    /// The random part of the next wait (0 for the fixed schedule).
    pub fn extra_ms(&mut self) -> u64 {
        match self.kind {
            ScheduleKind::Fixed => 0,
            ScheduleKind::Random if self.jitter_ms == 0 => 0,
            ScheduleKind::Random => self.rng.up_to(self.jitter_ms),
        }
    }
}

/// `promotion_timing` of failover `n` (1-based): `None` where the field
/// does not apply (`--flow controller`).
pub fn timing_for(mode: TimingMode, flow: Flow, n: usize) -> Option<bool> {
    if flow == Flow::Upgrade {
        return None;
    }
    Some(match mode {
        TimingMode::On => true,
        TimingMode::Off => false,
        // In pairs (1 and 2 with, 3 and 4 without, …): failovers go there
        // and back, so each mode has both directions (a hand-over to the
        // other leasegate costs more than one home).
        TimingMode::Alternate => (n.saturating_sub(1) / 2) % 2 == 0,
    })
}

/// The schedule in words, for the report's header.
pub fn describe(args: &Args) -> String {
    match args.schedule {
        ScheduleKind::Fixed => format!(
            "fixed: the first failover {} ms (the warm-up) after the load's start, then each exactly {} ms \
             after the previous one's reply",
            args.warmup_ms, args.interval_ms
        ),
        ScheduleKind::Random if args.phase_jitter_ms == 0 => format!(
            "random with 0 ms of jitter (as fixed): {} ms after each failover's reply",
            args.interval_ms
        ),
        ScheduleKind::Random => format!(
            "random: the first failover {} ms (the warm-up) after the load's start, then each {} ms after \
             the previous one's reply, every wait plus a uniform random 0–{} ms (splitmix64)",
            args.warmup_ms, args.interval_ms, args.phase_jitter_ms
        ),
    }
}

/// The timing mode in words, for the report's header.
pub fn describe_timing(args: &Args) -> &'static str {
    if args.flow == Flow::Controller {
        if args.config_a.is_none() || args.config_b.is_none() {
            return "n/a (the controller runs the failovers; without --config-a/--config-b the \
                    leasegates' `pause.promotion_timing` is not set)";
        }
        return match args.timing {
            TimingMode::On => "on (the leasegates' `pause.promotion_timing: true`: the controller's `CLIENT PAUSE` timed)",
            TimingMode::Off => "off (`pause.promotion_timing: false`: the controller's `CLIENT PAUSE` begins at once)",
            TimingMode::Alternate => {
                "alternate in pairs (failovers 1–2, 5–6, … with the leasegates' `pause.promotion_timing: true`, \
                 3–4, 7–8, … with `false`, set and reloaded before each: each mode both ways)"
            }
        };
    }
    if args.flow == Flow::Upgrade {
        return "n/a (upgrades, no failover)";
    }
    match args.timing {
        TimingMode::On => "on (every failover with `promotion_timing`)",
        TimingMode::Off => "off (every failover with `promotion_timing: false`: pause at once)",
        TimingMode::Alternate => {
            "alternate in pairs (failovers 1–2, 5–6, … with `promotion_timing`, 3–4, 7–8, … without: each mode both ways)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_and_repeats_per_seed() {
        // The reference implementation's first outputs for seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..100).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn random_waits_repeat_per_seed_and_stay_in_range() {
        let waits = |seed| {
            let mut s = Schedule::new(ScheduleKind::Random, 1000, seed);
            (0..200).map(|_| s.wait_ms(1000)).collect::<Vec<_>>()
        };
        let a = waits(7);
        assert_eq!(a, waits(7));
        assert_ne!(a, waits(8));
        assert!(a.iter().all(|w| (1000..=2000).contains(w)), "{a:?}");
        // Spread over the range (200 draws: both quarters at the ends hit).
        assert!(a.iter().any(|&w| w < 1250) && a.iter().any(|&w| w > 1750));
        // Both ends can be drawn.
        let mut r = SplitMix64::new(1);
        let small: Vec<u64> = (0..200).map(|_| r.up_to(1)).collect();
        assert!(small.contains(&0) && small.contains(&1));
        assert!((0..100).all(|_| r.up_to(0) == 0));
        // The widest range: no overflow.
        let _ = r.up_to(u64::MAX);
    }

    #[test]
    fn fixed_and_jitterless_schedules_wait_exactly_the_interval() {
        let mut fixed = Schedule::new(ScheduleKind::Fixed, 1000, 7);
        let mut none = Schedule::new(ScheduleKind::Random, 0, 7);
        for _ in 0..10 {
            assert_eq!(fixed.wait_ms(1000), 1000);
            assert_eq!(none.wait_ms(250), 250);
        }
    }

    #[test]
    fn alternate_starts_with_timing_and_controller_flow_has_none() {
        let modes: Vec<Option<bool>> = (1..=6)
            .map(|n| timing_for(TimingMode::Alternate, Flow::Leasegate, n))
            .collect();
        let (on, off) = (Some(true), Some(false));
        assert_eq!(modes, [on, on, off, off, on, on]);
        assert_eq!(timing_for(TimingMode::On, Flow::Leasegate, 2), Some(true));
        assert_eq!(timing_for(TimingMode::Off, Flow::Leasegate, 1), Some(false));
        assert_eq!(timing_for(TimingMode::On, Flow::Controller, 1), Some(true));
        assert_eq!(timing_for(TimingMode::On, Flow::Upgrade, 1), None);
    }
}
