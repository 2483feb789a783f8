//! The control plane's timers: heartbeats, presence TTLs, leader lock, convergence.

use std::time::Duration;

/// How often things happen. The defaults detect a dead cell within the presence TTL
/// (3 s) and hand leadership over within the leader TTL (3 s); both are far shorter than
/// Diego's (15 s TTLs, 30 s convergence), because the heartbeat carries no per-cell
/// state and renewing a presence is one grouped write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// How often a cell sends its heartbeat.
    pub heartbeat_interval_ms: u64,
    /// How long a cell's presence lives without a heartbeat.
    pub presence_ttl_ms: u64,
    /// How long the leader lock lives without renewal; renewed every third of it.
    pub leader_ttl_ms: u64,
    /// How often the leader looks for expired presences (and converges at once when one
    /// expired).
    pub expiry_check_ms: u64,
    /// How often the leader converges in any case.
    pub convergence_interval_ms: u64,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            heartbeat_interval_ms: 1_000,
            presence_ttl_ms: 3_000,
            leader_ttl_ms: 3_000,
            expiry_check_ms: 250,
            convergence_interval_ms: 30_000,
        }
    }
}

impl Timings {
    pub(crate) fn leader_renewal(&self) -> Duration {
        Duration::from_millis((self.leader_ttl_ms / 3).max(1))
    }
}
