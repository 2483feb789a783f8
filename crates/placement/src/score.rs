//! Diego's score in scaled integers.
//!
//! Diego computes `mean(used fractions after placing) + 0.25 x starting + 1000 x same`
//! in floating point. Here each used fraction `used / total` is `used x (SCALE / total)`
//! with the division done once per capacity, so a cell's score is a linear function of
//! its usage with integer weights that depend only on its total capacity. That is what
//! lets the snapshot keep cells ordered by their current score: among cells with the
//! same totals, placing the same work adds the same amount to each score, so the order
//! after the placement is the order before it, exactly, with no rounding to break ties
//! differently. `SCALE` has the factors 2^40, 3^4, 5^4 and 7^2, so the weights are exact
//! for totals such as 1024, 1000, 250 or 4096, and precise to better than 1 part in 2^20
//! for any total below 2^40 MB. Every sum stays below 2^128 for any u64 usage.

use crate::cell::Capacity;

/// One used fraction of 1.0.
const SCALE: u128 = (1 << 40) * 81 * 625 * 49;

/// 1.0 of Diego's score: the mean of three fractions is their sum over 3.
const UNIT: u128 = 3 * SCALE;

/// Diego's `starting_container_weight`: 0.25 per container still starting.
pub(crate) const STARTING: u128 = UNIT / 4;

/// Diego's `LocalityOffset`: 1000 per instance of the same LRP, or per task for tasks.
pub(crate) const LOCALITY: u128 = 1000 * UNIT;

/// A score; lower wins. Ties go to the cell whose id sorts first.
pub(crate) type Score = u128;

/// How much one MB of memory, one MB of disk and one container add to the score of a
/// cell with some total capacity. A total of zero adds nothing: such a cell cannot
/// take work that needs the resource anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weights {
    memory: u128,
    disk: u128,
    containers: u128,
}

impl Weights {
    pub(crate) fn new(total: Capacity) -> Weights {
        let per = |total: u64| {
            if total == 0 {
                0
            } else {
                SCALE / u128::from(total)
            }
        };
        Weights {
            memory: per(total.memory_mb),
            disk: per(total.disk_mb),
            containers: per(total.containers.into()),
        }
    }

    /// The resource score of a cell using this much, with `starting` containers not yet
    /// started.
    pub(crate) fn score(
        &self,
        memory_mb: u128,
        disk_mb: u128,
        containers: u128,
        starting: u32,
    ) -> Score {
        let fractions = memory_mb
            .saturating_mul(self.memory)
            .saturating_add(disk_mb.saturating_mul(self.disk))
            .saturating_add(containers.saturating_mul(self.containers));
        fractions.saturating_add(u128::from(starting) * STARTING)
    }

    /// What placing a container of this size adds to a cell's resource score.
    pub(crate) fn delta(&self, memory_mb: u64, disk_mb: u64) -> Score {
        self.score(memory_mb.into(), disk_mb.into(), 1, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_diegos_formula() {
        let total = Capacity {
            memory_mb: 1024,
            disk_mb: 4000,
            containers: 250,
        };
        let weights = Weights::new(total);
        // 512/1024, 1000/4000, 25/250 used, 2 starting: (0.5 + 0.25 + 0.1) / 3 + 0.5.
        let score = weights.score(512, 1000, 25, 2);
        let expected = (0.5 + 0.25 + 0.1) / 3.0 + 0.5;
        assert!((score as f64 / UNIT as f64 - expected).abs() < 1e-12);
        assert_eq!(weights.score(1024, 4000, 250, 0), UNIT);
        assert_eq!(
            weights.score(100, 10, 1, 0) + weights.delta(28, 990),
            weights.score(128, 1000, 2, 0)
        );
        assert_eq!(Weights::new(Capacity::default()).score(5, 5, 5, 0), 0);
    }
}
