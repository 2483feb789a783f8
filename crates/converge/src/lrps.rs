//! LRP convergence: instance rows against the LRPs that want them, the live cells and
//! the domains.
//!
//! The rows are sorted into one slot per wanted (lrp, index) in a single pass; rows
//! outside every slot (extra indices, deleted LRPs) and EVACUATING rows are decided on
//! their own as they go by. Then each slot is decided from its ORDINARY and SUSPECT rows.

use std::collections::HashMap;

use model::{Instance, InstanceState, Lrp, Presence, Restart};

use crate::{Action, AuctionReason, Context, Input, RemoveReason, RetireReason};

/// What the first pass saw of one row, so that deciding a slot reads the row itself
/// only when it acts on it or needs its times: with a million rows in no particular
/// order, a second random visit to each would cost more than everything else.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The row's position in `Input::instances`. Four bytes rather than eight keep a
    /// slot at 16 bytes: the slots of a million instances are written in the rows'
    /// order, which need not be the slots' order, so their size is what the pass waits
    /// on.
    row: u32,
    state: InstanceState,
    cell: CellSeen,
}

/// Where a row's cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellSeen {
    /// The row names no cell.
    None,
    Live,
    Gone,
}

/// The ORDINARY and SUSPECT rows of one wanted (lrp, index).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    ordinary: Option<Place>,
    suspect: Option<Place>,
}

/// What the row pass needs of one LRP, kept apart from the (large) LRP rows themselves
/// so that rows in no particular order do not drag every LRP through the cache.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    /// The LRP's position in `Input::lrps`.
    lrp: usize,
    /// Where its slots start.
    offset: usize,
    instances: u32,
    /// Whether its domain is fresh, so that extra rows may be retired.
    fresh: bool,
}

pub(crate) fn converge_lrps(input: &Input, cx: &Context, out: &mut Vec<Action>) {
    // The slots of an LRP are `slots[offset..offset + instances]`: one flat vector
    // instead of a map keyed by (name, index) keeps the million-row pass to one hash
    // lookup per row for its LRP (and usually none: see `last` below) and one for its
    // cell.
    let mut by_name: HashMap<&str, Wanted> = HashMap::with_capacity(input.lrps.len());
    let mut total = 0usize;
    for (i, lrp) in input.lrps.iter().enumerate() {
        by_name.entry(lrp.spec.name.as_str()).or_insert_with(|| {
            let wanted = Wanted {
                lrp: i,
                offset: total,
                instances: lrp.spec.instances,
                fresh: cx.is_fresh(&lrp.spec.domain),
            };
            total += lrp.spec.instances as usize;
            wanted
        });
    }
    let mut slots = vec![Slot::default(); total];

    // The store returns rows grouped by LRP, so the previous row's lookup is usually
    // the answer for this one.
    let mut last: Option<(&str, Option<Wanted>)> = None;
    for (row, instance) in input.instances.iter().enumerate() {
        let name = instance.lrp.as_str();
        let found = match last {
            Some((last_name, found)) if last_name == name => found,
            _ => {
                let found = by_name.get(name).copied();
                last = Some((name, found));
                found
            }
        };
        let cell = match &instance.key {
            None => CellSeen::None,
            Some(key) if cx.is_live(&key.cell_id) => CellSeen::Live,
            Some(_) => CellSeen::Gone,
        };
        if instance.presence == Presence::Evacuating {
            // The draining cell hands its EVACUATING rows over and removes them itself;
            // convergence steps in only when that cell is gone, whatever the LRP.
            if cell != CellSeen::Live {
                out.push(remove(instance, RemoveReason::EvacuatingCellGone));
            }
            continue;
        }
        match found {
            Some(wanted) if instance.index < wanted.instances => {
                let slot = &mut slots[wanted.offset + instance.index as usize];
                let place = match instance.presence {
                    Presence::Suspect => &mut slot.suspect,
                    _ => &mut slot.ordinary,
                };
                if place.is_none() {
                    *place = Some(Place {
                        row: u32::try_from(row)
                            .expect("fewer than 2^32 instance rows fit in memory"),
                        state: instance.state,
                        cell,
                    });
                }
            }
            Some(wanted) => {
                if wanted.fresh {
                    out.push(unwanted(instance, RetireReason::Extra));
                }
            }
            // With no LRP to go by, the row's own domain says whether the deletion
            // could be a client that merely has not synced yet.
            None => {
                if cx.is_fresh(&instance.domain) {
                    out.push(unwanted(instance, RetireReason::Orphaned));
                }
            }
        }
    }

    for (i, lrp) in input.lrps.iter().enumerate() {
        let Some(wanted) = by_name.get(lrp.spec.name.as_str()).filter(|w| w.lrp == i) else {
            // A repeated LRP row: the first one with this name decides.
            continue;
        };
        let slots = &slots[wanted.offset..wanted.offset + wanted.instances as usize];
        for (index, slot) in (0u32..).zip(slots) {
            converge_index(input, lrp, index, *slot, out);
        }
    }
}

/// Decides one wanted index from its ORDINARY row and its SUSPECT row, if any. At most
/// one action per row.
fn converge_index(input: &Input, lrp: &Lrp, index: u32, slot: Slot, out: &mut Vec<Action>) {
    let row = |place: Place| &input.instances[place.row as usize];
    let Slot { ordinary, suspect } = slot;
    if let Some(suspect) = suspect {
        // A replacement RUNNING on a vanished cell is no better than none: the suspect,
        // if its cell is back, is the copy to keep.
        let replacement_runs =
            ordinary.is_some_and(|o| o.state == InstanceState::Running && o.cell == CellSeen::Live);
        if replacement_runs {
            // Whether or not the suspect's cell is back, the index is served: drop
            // the suspect (its cell, if live, stops the container it no longer finds).
            out.push(remove(row(suspect), RemoveReason::SuspectReplaced));
            return;
        }
        if suspect.cell == CellSeen::Live {
            // The cell is back before the replacement runs: keep the container that
            // already serves, and drop the replacement (the shell's transaction
            // deletes it and promotes the suspect together).
            out.push(Action::PromoteSuspect {
                lrp: lrp.spec.name.clone(),
                index,
                suspect_generation: row(suspect).generation,
                replacement: ordinary.map(|o| (row(o).presence, row(o).generation)),
            });
            return;
        }
        // The suspect's cell is still gone and nothing replaces it yet: keep it, it
        // may still be serving behind a partition, and see to the replacement below.
    }

    let Some(place) = ordinary else {
        out.push(Action::CreateInstance {
            lrp: lrp.spec.name.clone(),
            index,
            domain: lrp.spec.domain.clone(),
        });
        return;
    };
    let auction = |ordinary: &Instance, reason| Action::Auction {
        lrp: lrp.spec.name.clone(),
        index,
        generation: ordinary.generation,
        reason,
    };
    match place.state {
        InstanceState::Unclaimed => {
            let ordinary = row(place);
            if input.now.millis_since(ordinary.since) > input.config.stale_unclaimed_ms {
                out.push(auction(ordinary, AuctionReason::StaleUnclaimed));
            }
        }
        InstanceState::Crashed => {
            // `since` is when it crashed; the wait is over once the full backoff has
            // passed (at exactly 30 s for a 30 s backoff).
            let ordinary = row(place);
            let due = match lrp.spec.crash_policy.restart(ordinary.crash_count) {
                Restart::Now => true,
                Restart::AfterMillis(wait) => input.now.millis_since(ordinary.since) >= wait,
                Restart::Never => false,
            };
            if due {
                out.push(auction(ordinary, AuctionReason::CrashBackoffOver));
            }
        }
        InstanceState::Claimed | InstanceState::Running => {
            if place.cell != CellSeen::Gone {
                return;
            }
            // Only a RUNNING instance becomes SUSPECT: it may serve traffic behind a
            // partition, and keeping its row keeps it routable and lets it be promoted
            // back if the cell returns first. A CLAIMED one serves nothing yet, so it is
            // simply unclaimed (as Diego does); so is a replacement when a SUSPECT row
            // already holds the index, since there is only one SUSPECT place per index.
            let generation = row(place).generation;
            if place.state == InstanceState::Running && suspect.is_none() {
                out.push(Action::MarkSuspect {
                    lrp: lrp.spec.name.clone(),
                    index,
                    generation,
                });
            } else {
                out.push(Action::Unclaim {
                    lrp: lrp.spec.name.clone(),
                    index,
                    generation,
                });
            }
        }
    }
}

/// The action for a row that no LRP wants (the caller checked the domain is fresh): an
/// ORDINARY row is retired, which stops its container; a SUSPECT one is only deleted,
/// as its cell is either gone or will stop a container it no longer finds.
fn unwanted(instance: &Instance, reason: RetireReason) -> Action {
    match instance.presence {
        Presence::Ordinary => Action::RetireInstance {
            lrp: instance.lrp.clone(),
            index: instance.index,
            presence: instance.presence,
            generation: instance.generation,
            reason,
        },
        _ => remove(
            instance,
            match reason {
                RetireReason::Extra => RemoveReason::Extra,
                RetireReason::Orphaned => RemoveReason::Orphaned,
            },
        ),
    }
}

fn remove(instance: &Instance, reason: RemoveReason) -> Action {
    Action::RemoveInstance {
        lrp: instance.lrp.clone(),
        index: instance.index,
        presence: instance.presence,
        generation: instance.generation,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_small() {
        // A slot per wanted instance: at a million instances every byte here is a
        // megabyte written in random order.
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }
}
