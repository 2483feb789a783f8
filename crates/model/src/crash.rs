//! The crash policy: when a crashed instance is started again.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, limits};

/// Per-LRP restart policy. The defaults are Diego's (`bbs: models/restart_calculator.go`):
/// the crash count is raised before the policy is asked, so crashes 1 and 2 restart at
/// once; crash 3 waits 30 s, and each further crash doubles the wait up to 16 min; from
/// crash 200 on the instance stays CRASHED. An instance that ran for 5 min before
/// crashing starts over at count 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashPolicy {
    /// Crash counts below this restart immediately.
    pub immediate_restarts: u32,
    /// The first backoff, doubled per further crash.
    pub min_backoff_ms: u64,
    /// The longest backoff.
    pub max_backoff_ms: u64,
    /// Running this long before a crash resets the count.
    pub reset_after_ms: u64,
    /// From this crash count on, the instance is not restarted.
    pub max_restarts: u32,
}

impl Default for CrashPolicy {
    fn default() -> CrashPolicy {
        CrashPolicy {
            immediate_restarts: 3,
            min_backoff_ms: 30_000,
            max_backoff_ms: 16 * 60_000,
            reset_after_ms: 5 * 60_000,
            max_restarts: 200,
        }
    }
}

/// What to do with an instance after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Now,
    AfterMillis(u64),
    Never,
}

impl CrashPolicy {
    /// The crash count after a crash, given the count before it and how long the
    /// instance had been running (`None` if it never reached RUNNING).
    pub fn next_crash_count(&self, previous: u32, ran_for_ms: Option<u64>) -> u32 {
        match ran_for_ms {
            Some(ran) if ran >= self.reset_after_ms => 1,
            _ => previous.saturating_add(1),
        }
    }

    /// When an instance whose crash count is `count` (already raised) may start again.
    pub fn restart(&self, count: u32) -> Restart {
        if count < self.immediate_restarts {
            Restart::Now
        } else if count < self.max_restarts {
            // The doubling is capped where it would exceed the maximum anyway, so the
            // shift never overflows whatever the policy says.
            let doublings = (count - self.immediate_restarts).min(32);
            let backoff = self.min_backoff_ms.saturating_mul(1u64 << doublings);
            Restart::AfterMillis(backoff.min(self.max_backoff_ms))
        } else {
            Restart::Never
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.min_backoff_ms > self.max_backoff_ms {
            return Err(ValidationError::new(
                "min_backoff_ms",
                "must not be larger than max_backoff_ms",
            ));
        }
        for (field, value) in [
            ("min_backoff_ms", self.min_backoff_ms),
            ("max_backoff_ms", self.max_backoff_ms),
            ("reset_after_ms", self.reset_after_ms),
        ] {
            if value > limits::TIMEOUT_MS {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {}", limits::TIMEOUT_MS),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diego_schedule() {
        let policy = CrashPolicy::default();
        let s = 1000;
        let cases = [
            (0, Restart::Now),
            (1, Restart::Now),
            (2, Restart::Now),
            (3, Restart::AfterMillis(30 * s)),
            (4, Restart::AfterMillis(60 * s)),
            (5, Restart::AfterMillis(120 * s)),
            (6, Restart::AfterMillis(240 * s)),
            (7, Restart::AfterMillis(480 * s)),
            (8, Restart::AfterMillis(960 * s)),
            (40, Restart::AfterMillis(960 * s)),
            (199, Restart::AfterMillis(960 * s)),
            (200, Restart::Never),
            (u32::MAX, Restart::Never),
        ];
        for (count, expect) in cases {
            assert_eq!(policy.restart(count), expect, "count {count}");
        }
    }

    #[test]
    fn long_runs_reset_the_count() {
        let policy = CrashPolicy::default();
        assert_eq!(policy.next_crash_count(7, None), 8);
        assert_eq!(policy.next_crash_count(7, Some(299_999)), 8);
        assert_eq!(policy.next_crash_count(7, Some(300_000)), 1);
        assert_eq!(policy.next_crash_count(u32::MAX, None), u32::MAX);
    }

    #[test]
    fn extreme_policies_do_not_overflow() {
        let policy = CrashPolicy {
            immediate_restarts: 0,
            max_restarts: u32::MAX,
            ..CrashPolicy::default()
        };
        assert_eq!(policy.restart(u32::MAX - 1), Restart::AfterMillis(960_000));
    }
}
