//! A small seeded random number generator (SplitMix64), so that a fleet's start
//! latencies and injected crashes follow from its seed and a run can be repeated.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: tiny, fast and good enough to draw latencies and crash decisions. Not
/// for anything that needs to be unpredictable.
#[derive(Debug, Clone)]
pub(crate) struct SimRng {
    state: u64,
}

impl SimRng {
    pub(crate) fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`, without the bias of a plain modulo.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        let span = u128::from(max) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }

    /// True with probability `p` (0 is never, 1 is always).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// A seed for a fleet that was not given one: different on every run, and printed so
/// that a run can be repeated.
pub(crate) fn seed_from_clock() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    SimRng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let draw = |seed| {
            let mut rng = SimRng::new(seed);
            (0..5).map(|_| rng.up_to(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn draws_stay_in_range_and_chances_hold_roughly() {
        let mut rng = SimRng::new(42);
        assert!((0..10_000).all(|_| rng.up_to(9) <= 9));
        assert!((0..100).all(|_| rng.up_to(0) == 0));
        let hits = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!(
            (2_000..3_000).contains(&hits),
            "{hits} of 10000 at p = 0.25"
        );
        assert!((0..1000).all(|_| rng.chance(1.0)));
        assert!((0..1000).all(|_| !rng.chance(0.0)));
    }
}
