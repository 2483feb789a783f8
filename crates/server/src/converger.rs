//! The converger, run by the leader: on a timer, and at once when a cell's presence
//! expires, it reads desired and actual state, asks the pure `converge` core what to
//! correct, and applies each action as a fenced compare-and-set commit. A row that moved
//! since the read makes its action fail; the next pass decides again from fresh state.
//!
//! Also here: the expiry sweep (Locket's "burglar") that deletes presences whose TTL
//! passed, so that a dead cell is noticed within one sweep of its TTL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge::{Action, Config, Input};
use futures::future::join_all;
use model::{Instance, Name, Presence, Task, TaskTransition, Timestamp};
use store::{Commit, Expect, Fence, InstanceFilter, LrpFilter, Mutation, StoreError, TaskFilter};
use tokio::sync::Notify;

use crate::AppState;
use crate::cells::{self, PREFIX};

/// Commits in flight at once while applying a pass.
const CHUNK: usize = 10_000;
/// Events the log keeps. A reader whose cursor falls behind the oldest kept event is
/// told to resynchronise (`resync`); everyone else resumes where they were.
const EVENTS_KEPT: u64 = 1_000_000;

/// Converges now and then every `convergence_interval_ms`, or sooner when `trigger`
/// fires. Returns only when the store fails or the fence is lost.
pub(crate) async fn run(
    state: AppState,
    fence: Fence,
    trigger: Arc<Notify>,
) -> Result<(), StoreError> {
    let interval = Duration::from_millis(state.timings.convergence_interval_ms);
    loop {
        pass(&state, &fence).await?;
        tokio::select! {
            _ = trigger.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Deletes expired locks and presences every `expiry_check_ms`; when a cell's presence
/// expired, wakes the converger so its instances are replaced at once.
pub(crate) async fn expire(state: AppState, trigger: Arc<Notify>) -> Result<(), StoreError> {
    let period = Duration::from_millis(state.timings.expiry_check_ms.max(1));
    loop {
        tokio::time::sleep(period).await;
        let expired = state.store.expire_locks(state.now()).await?;
        if expired.iter().any(|record| record.key.starts_with(PREFIX)) {
            for record in &expired {
                tracing::warn!(cell = %record.key.trim_start_matches(PREFIX), "cell presence expired");
            }
            state.hub.poke();
            trigger.notify_one();
        }
    }
}

/// One convergence pass.
pub(crate) async fn pass(state: &AppState, fence: &Fence) -> Result<(), StoreError> {
    let started = Instant::now();
    let store = &state.store;
    let now = state.now();
    // Instances before LRPs: the two reads are not one snapshot, and an instance row
    // made by a scale-up between them must not look extra against the LRP as it was
    // before (it would be retired). Read in this order, a row seen was wanted by an
    // LRP read no earlier; a row a scale-down removes in between is already gone, so
    // its retirement only races.
    let instances = store.list_instances(&InstanceFilter::default()).await?;
    let lrps = store.list_lrps(&LrpFilter::default()).await?;
    let tasks = store.list_tasks(&TaskFilter::default()).await?;
    let domains = store.list_domains().await?;
    let live_cells: BTreeSet<Name> = store
        .list_locks(PREFIX, now)
        .await?
        .iter()
        .filter_map(cells::decode)
        .map(|cell| cell.id)
        .collect();
    let read = started.elapsed();
    let config = Config::default();
    let actions = converge::converge(&Input {
        lrps: &lrps,
        instances: &instances,
        tasks: &tasks,
        live_cells: &live_cells,
        domains: &domains,
        now,
        config: &config,
    });
    let decided = started.elapsed();

    let rows: HashMap<(&Name, u32, Presence), &Instance> = instances
        .iter()
        .map(|i| ((&i.lrp, i.index, i.presence), i))
        .collect();
    let task_rows: HashMap<&Name, &Task> = tasks.iter().map(|t| (&t.id, t)).collect();
    for action in &actions {
        if let Action::ResendCallback { id, .. } = action
            && let Some(task) = task_rows.get(id)
        {
            crate::callbacks::spawn(state, task);
        }
    }
    let commits: Vec<Vec<Mutation>> = actions
        .iter()
        .filter_map(|action| mutations(action, &rows, &task_rows, now))
        .collect();
    let mut applied = 0;
    let mut raced = 0;
    for chunk in commits.chunks(CHUNK) {
        let results = join_all(chunk.iter().map(|mutations| {
            let commit = Commit::new(now, mutations.clone()).fenced(fence.clone());
            store.commit(commit)
        }))
        .await;
        for result in results {
            match result {
                Ok(committed) => {
                    applied += 1;
                    state.hub.committed(&committed);
                }
                Err(e @ (StoreError::Fenced { .. } | StoreError::Unavailable(_))) => {
                    return Err(e);
                }
                Err(e) => {
                    raced += 1;
                    tracing::debug!(error = %e, "a convergence action raced a newer write");
                }
            }
        }
    }
    state.metrics.converged(started.elapsed(), &actions);
    state.metrics.states(
        instances.iter().map(|i| i.state),
        tasks.iter().map(|t| t.state),
    );
    let pruned = store.prune_events(EVENTS_KEPT).await?;
    if pruned > 0 {
        tracing::debug!(pruned, "pruned the event log");
    }
    let level = if applied > 0 {
        tracing::Level::INFO
    } else {
        tracing::Level::DEBUG
    };
    if level == tracing::Level::INFO {
        tracing::info!(
            lrps = lrps.len(),
            instances = instances.len(),
            tasks = tasks.len(),
            actions = actions.len(),
            applied,
            raced,
            read_ms = read.as_millis() as u64,
            decide_ms = (decided - read).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "converged"
        );
    } else {
        tracing::debug!(
            instances = instances.len(),
            total_ms = started.elapsed().as_millis() as u64,
            "converged: nothing to do"
        );
    }
    Ok(())
}

/// The commit that applies `action`, or `None` for actions that write nothing here:
/// re-sending a callback (sent above; the task is resolved once it got through) and
/// pruning a domain (the store keeps expired domains, which only ever read as stale).
fn mutations(
    action: &Action,
    rows: &HashMap<(&Name, u32, Presence), &Instance>,
    tasks: &HashMap<&Name, &Task>,
    now: Timestamp,
) -> Option<Vec<Mutation>> {
    let row =
        |lrp: &Name, index: u32, presence: Presence| rows.get(&(lrp, index, presence)).copied();
    let put = |instance: Instance, generation: u64| Mutation::PutInstance {
        instance,
        expect: Expect::Generation(generation),
    };
    let put_task = |task: Task, generation: u64| Mutation::PutTask {
        task: Box::new(task),
        expect: Expect::Generation(generation),
    };
    let delete =
        |lrp: &Name, index: u32, presence: Presence, generation: u64| Mutation::DeleteInstance {
            lrp: lrp.clone(),
            index,
            presence,
            expect: generation,
        };
    Some(match action {
        Action::PruneDomain { .. } | Action::ResendCallback { .. } => return None,
        Action::CreateInstance { lrp, index, domain } => vec![Mutation::PutInstance {
            instance: Instance::unclaimed(lrp.clone(), *index, domain.clone(), now),
            expect: Expect::Absent,
        }],
        Action::Auction {
            lrp,
            index,
            generation,
            ..
        }
        | Action::Unclaim {
            lrp,
            index,
            generation,
        } => {
            // Back to UNCLAIMED with the old placement error cleared: that is what
            // queues it for the scheduler again.
            let mut next = row(lrp, *index, Presence::Ordinary)?.unclaim(now).ok()?;
            next.placement_error = None;
            vec![put(next, *generation)]
        }
        Action::RetireInstance {
            lrp,
            index,
            presence,
            generation,
            ..
        }
        | Action::RemoveInstance {
            lrp,
            index,
            presence,
            generation,
            ..
        } => vec![delete(lrp, *index, *presence, *generation)],
        Action::MarkSuspect {
            lrp,
            index,
            generation,
        } => {
            let ordinary = row(lrp, *index, Presence::Ordinary)?;
            let mut suspect = ordinary.clone();
            suspect.presence = Presence::Suspect;
            let mut replacement =
                Instance::unclaimed(lrp.clone(), *index, ordinary.domain.clone(), now);
            replacement.crash_count = ordinary.crash_count;
            vec![
                delete(lrp, *index, Presence::Ordinary, *generation),
                Mutation::PutInstance {
                    instance: suspect,
                    expect: Expect::Absent,
                },
                Mutation::PutInstance {
                    instance: replacement,
                    expect: Expect::Absent,
                },
            ]
        }
        Action::PromoteSuspect {
            lrp,
            index,
            suspect_generation,
            replacement,
        } => {
            let suspect = row(lrp, *index, Presence::Suspect)?;
            let mut promoted = suspect.clone();
            promoted.presence = Presence::Ordinary;
            let mut out = Vec::new();
            if let Some((presence, generation)) = replacement {
                out.push(delete(lrp, *index, *presence, *generation));
            }
            out.push(delete(lrp, *index, Presence::Suspect, *suspect_generation));
            out.push(Mutation::PutInstance {
                instance: promoted,
                expect: Expect::Absent,
            });
            out
        }
        Action::FailTask {
            id,
            generation,
            reason,
        } => {
            let task = tasks.get(id)?;
            vec![put_task(
                task.failed_with(reason.as_str(), now).ok()?,
                *generation,
            )]
        }
        Action::AuctionTask { id, generation } => {
            let mut next = Task::clone(tasks.get(id)?);
            next.cell_id = None;
            next.updated_at = now;
            vec![put_task(next, *generation)]
        }
        Action::KickTask { id, generation } => {
            let mut next = Task::clone(tasks.get(id)?);
            next.state = next.state.apply(TaskTransition::Unresolve).ok()?;
            next.updated_at = now;
            vec![put_task(next, *generation)]
        }
        Action::DeleteTask { id, generation } => vec![Mutation::DeleteTask {
            id: id.clone(),
            expect: *generation,
        }],
    })
}
