//! Corral's converger core: compares desired state (LRPs, tasks) with actual state
//! (instance rows, live cells, domains) at an instant and returns the corrective actions.
//!
//! This crate is pure: no IO, no clock, no randomness, no async. The converger shell in
//! `server` loads a snapshot, calls [`converge`], and applies each [`Action`] as a
//! compare-and-set on the generation it names, so an action computed from a snapshot
//! that has since moved on simply fails and is decided again on the next pass.
//!
//! The rules are Diego's LRP and task convergence (`bbs: db/sqldb/lrp_convergence.go`,
//! `task_convergence.go`); where Corral differs, the code says why. One pass is a single
//! walk over the rows with hash lookups, so its cost grows linearly with the number of
//! instances: the design budget is a whole pass, IO included, within 2 s at 1,000,000
//! instances.

#![forbid(unsafe_code)]

mod action;
mod lrps;
mod tasks;

use std::collections::{BTreeSet, HashMap, HashSet};

use model::{Domain, Instance, Lrp, Name, Task, Timestamp};
use serde::{Deserialize, Serialize};

pub use action::{Action, AuctionReason, RemoveReason, RetireReason, TaskFailure};

/// The converger's time limits, in milliseconds. The defaults are Diego's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// An UNCLAIMED instance (or a PENDING task) not placed within this long is
    /// auctioned again: its placement was lost or failed (Diego: 30 s).
    pub stale_unclaimed_ms: u64,
    /// A PENDING task not started within this long fails (Diego: 30 min).
    pub expire_pending_task_ms: u64,
    /// A RESOLVING task whose resolver was silent this long goes back to COMPLETED
    /// (Diego's kick_task_duration: 30 s).
    pub kick_resolving_ms: u64,
    /// A COMPLETED task is deleted this long after it first completed, resolved or not
    /// (Diego: 120 s).
    pub delete_completed_ms: u64,
    /// A COMPLETED task with a callback URL gets its callback again after this long
    /// (Diego: 30 s).
    pub resend_callback_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            stale_unclaimed_ms: 30_000,
            expire_pending_task_ms: 30 * 60_000,
            kick_resolving_ms: 30_000,
            delete_completed_ms: 120_000,
            resend_callback_ms: 30_000,
        }
    }
}

/// A consistent snapshot of everything convergence looks at.
///
/// Rows are identified as the store keys them: LRPs and tasks by name, instance rows by
/// (lrp, index, presence), domains by name. The store guarantees that these keys are
/// unique, and convergence relies on it. Should a snapshot repeat an LRP, or an
/// instance key at a wanted index, the first row is the one used; the others are not
/// acted on.
///
/// The pass is fastest when instance rows come grouped by LRP (as `ORDER BY lrp, index`
/// gives them), but any order gives the same actions.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub lrps: &'a [Lrp],
    pub instances: &'a [Instance],
    pub tasks: &'a [Task],
    /// Cells whose presence has not expired.
    pub live_cells: &'a BTreeSet<Name>,
    /// Every known domain. An LRP whose domain is missing here is treated as stale.
    pub domains: &'a [Domain],
    pub now: Timestamp,
    pub config: &'a Config,
}

/// One convergence pass: the actions that move actual state towards desired state.
///
/// The output is sorted (domains, then instance rows by lrp, index and presence, then
/// tasks by id) and holds at most one action per row, so the same snapshot gives the
/// same list whatever the order of the input slices.
pub fn converge(input: &Input) -> Vec<Action> {
    let cx = Context::new(input);
    let mut out = Vec::new();
    let mut pruned = BTreeSet::new();
    for domain in input.domains {
        if !cx.is_fresh(&domain.name) && pruned.insert(&domain.name) {
            out.push(Action::PruneDomain {
                name: domain.name.clone(),
            });
        }
    }
    lrps::converge_lrps(input, &cx, &mut out);
    tasks::converge_tasks(input, &cx, &mut out);
    out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    out
}

/// Lookups built once per pass.
struct Context<'a> {
    /// Live cells by name. The snapshot's `BTreeSet` would cost a dozen string
    /// comparisons per lookup; a pass looks up the cell of nearly every instance.
    live: HashSet<&'a str>,
    /// Whether each known domain is fresh at `now`.
    fresh: HashMap<&'a str, bool>,
}

impl<'a> Context<'a> {
    fn new(input: &Input<'a>) -> Context<'a> {
        let live = input.live_cells.iter().map(Name::as_str).collect();
        let mut fresh: HashMap<&str, bool> = HashMap::with_capacity(input.domains.len());
        for domain in input.domains {
            // Or-ing keeps the answer independent of the order of repeated rows.
            *fresh.entry(domain.name.as_str()).or_default() |= domain.is_fresh(input.now);
        }
        Context { live, fresh }
    }

    fn is_fresh(&self, domain: &Name) -> bool {
        self.fresh.get(domain.as_str()).copied().unwrap_or(false)
    }

    fn is_live(&self, cell: &Name) -> bool {
        self.live.contains(cell.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_diegos_and_fill_gaps() {
        let config: Config = serde_json::from_str(r#"{"stale_unclaimed_ms": 10000}"#).unwrap();
        assert_eq!(
            config,
            Config {
                stale_unclaimed_ms: 10_000,
                expire_pending_task_ms: 1_800_000,
                kick_resolving_ms: 30_000,
                delete_completed_ms: 120_000,
                resend_callback_ms: 30_000,
            }
        );
        assert!(serde_json::from_str::<Config>(r#"{"stale_ms": 1}"#).is_err());
    }
}
