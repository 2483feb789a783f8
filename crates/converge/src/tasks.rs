//! Task convergence: PENDING tasks that were never placed, RUNNING tasks whose cell
//! vanished, resolvers that went quiet and completed tasks nobody collected.
//!
//! Nothing here ever moves a task back to PENDING or RUNNING: a task's only way to run
//! is the cell's single PENDING -> RUNNING compare-and-set, so it runs at most once.

use model::{Task, TaskState};

use crate::{Action, Context, Input, TaskFailure};

pub(crate) fn converge_tasks(input: &Input, cx: &Context, out: &mut Vec<Action>) {
    for task in input.tasks {
        if let Some(action) = converge_task(input, cx, task) {
            out.push(action);
        }
    }
}

fn converge_task(input: &Input, cx: &Context, task: &Task) -> Option<Action> {
    let config = input.config;
    let older_than = |at, limit| input.now.millis_since(at) > limit;
    let id = task.id.clone();
    let generation = task.generation;
    match task.state {
        TaskState::Pending => {
            if older_than(task.created_at, config.expire_pending_task_ms) {
                Some(Action::FailTask {
                    id,
                    generation,
                    reason: TaskFailure::NotStartedInTime,
                })
            } else if older_than(task.updated_at, config.stale_unclaimed_ms) {
                // Placement bumps `updated_at` (a rejection does too), so a task that
                // has sat untouched this long lost its auction: ask again. A duplicate
                // request is harmless, as only one cell can win the start.
                Some(Action::AuctionTask { id, generation })
            } else {
                None
            }
        }
        TaskState::Running => {
            // A RUNNING task with no cell recorded can never be completed by one, so it
            // is treated like a task whose cell vanished. It is failed, not retried: it
            // may have run already.
            let live = task.cell_id.as_ref().is_some_and(|cell| cx.is_live(cell));
            (!live).then_some(Action::FailTask {
                id,
                generation,
                reason: TaskFailure::CellDisappeared,
            })
        }
        TaskState::Resolving => older_than(task.updated_at, config.kick_resolving_ms)
            .then_some(Action::KickTask { id, generation }),
        TaskState::Completed => {
            // A COMPLETED task always has `first_completed_at`; should a row lack it,
            // `updated_at` is the best guess of when it completed.
            let completed_at = task.first_completed_at.unwrap_or(task.updated_at);
            if older_than(completed_at, config.delete_completed_ms) {
                Some(Action::DeleteTask { id, generation })
            } else if task.spec.completion_callback_url.is_some()
                && older_than(task.updated_at, config.resend_callback_ms)
            {
                Some(Action::ResendCallback { id, generation })
            } else {
                None
            }
        }
    }
}
