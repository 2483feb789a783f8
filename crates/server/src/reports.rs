//! `POST /v1/cells/reports`: what happened on cells, applied to the instance and task
//! rows with compare-and-set.
//!
//! A report applies only while the row still says the reporting cell holds the work
//! (the instance's key names the container; the task names the cell). Otherwise the
//! answer is `Stale` and the cell stops that container or does not start that task:
//! this is how a reassigned instance never runs twice and a task starts at most once.

use api::{Report, ReportResult, Reports, ReportsReply};
use axum::Json;
use axum::extract::State;
use futures::future::join_all;
use model::{
    Instance, InstanceState, InvalidTransition, Name, Presence, Task, TaskState, TaskTransition,
    Timestamp, limits,
};
use store::{Expect, Mutation};

use crate::AppState;
use crate::cells::BULK_BODY_BYTES;
use crate::error::{ApiError, retry_raced};
use crate::request::JsonBody;

/// A task that cells rejected this many times fails instead of going back to PENDING
/// (Diego's `tasks.max_retries`).
pub(crate) const MAX_TASK_REJECTIONS: u32 = 3;

/// Applies each report on its own: one report failing its condition does not affect the
/// others. The commits go out concurrently, so the store groups them.
pub(crate) async fn reports(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Reports, BULK_BODY_BYTES>,
) -> Result<Json<ReportsReply>, ApiError> {
    let applied = join_all(
        body.reports
            .iter()
            .map(|report| retry_raced(|| apply(&state, report))),
    )
    .await;
    let results = applied.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ReportsReply { results }))
}

async fn apply(state: &AppState, report: &Report) -> Result<ReportResult, ApiError> {
    let now = state.now();
    match report {
        Report::InstanceRunning {
            lrp,
            index,
            instance_id,
            address,
            ports,
            routable,
            ..
        } => {
            let rows = state.store.get_instances(lrp, *index).await?;
            let Some(row) = holding(&rows, instance_id) else {
                return Ok(stale(format!(
                    "{lrp}/{index} is no longer assigned to {instance_id}"
                )));
            };
            let next = match row.run(instance_id, address.clone(), ports.clone(), *routable, now) {
                Ok(next) => next,
                Err(e) => return Ok(stale(e.to_string())),
            };
            let mut mutations = Vec::new();
            if next != *row {
                // A new start, or a running container whose readiness, address or
                // ports changed; the same report again writes nothing.
                mutations.push(Mutation::PutInstance {
                    instance: next,
                    expect: Expect::Generation(row.generation),
                });
            }
            if row.presence == Presence::Ordinary {
                // The handoff is over: the copy on a draining or vanished cell is no
                // longer needed (its cell is told to stop it). Until this moment both
                // stayed, so the index never had zero running copies.
                mutations.extend(
                    rows.iter()
                        .filter(|r| r.presence != Presence::Ordinary)
                        .map(delete),
                );
            }
            if !mutations.is_empty() {
                state.commit(now, mutations).await?;
            }
            Ok(ReportResult::Ok)
        }
        Report::InstanceCrashed {
            lrp,
            index,
            instance_id,
            reason,
            ..
        } => {
            let Some(row) = held(state, lrp, *index, instance_id).await? else {
                return Ok(stale(format!(
                    "{lrp}/{index} is no longer assigned to {instance_id}"
                )));
            };
            if row.presence != Presence::Ordinary {
                // An evacuating or suspect copy that crashed has nothing left to hand
                // over: the ordinary row carries the instance on.
                return delete_instance(state, &row, now).await;
            }
            let Some(desired) = state.store.get_lrp(lrp).await? else {
                return delete_instance(state, &row, now).await;
            };
            let next = row.crash(instance_id, reason, &desired.spec.crash_policy, now);
            put_instance(state, &row, next, now).await
        }
        Report::InstancePulling {
            lrp,
            index,
            instance_id,
            done_bytes,
            total_bytes,
            ..
        } => {
            state.pulls.report(
                lrp,
                api::Pulling {
                    index: *index,
                    instance_id: instance_id.clone(),
                    done_bytes: *done_bytes,
                    total_bytes: *total_bytes,
                },
            );
            Ok(ReportResult::Ok)
        }
        Report::InstanceStopped {
            lrp,
            index,
            instance_id,
            ..
        } => {
            // A container stopped on request has usually lost its row already.
            let Some(row) = held(state, lrp, *index, instance_id).await? else {
                return Ok(ReportResult::Ok);
            };
            if row.presence != Presence::Ordinary {
                return delete_instance(state, &row, now).await;
            }
            // Its container went away while still assigned: place it again.
            put_instance(state, &row, row.unclaim(now), now).await
        }
        Report::InstanceEvacuating {
            lrp,
            index,
            instance_id,
            ..
        } => evacuate(state, lrp, *index, instance_id, now).await,
        Report::InstanceEvacuatingClaimed {
            lrp,
            index,
            instance_id,
            ..
        } => {
            let Some(row) = held(state, lrp, *index, instance_id).await? else {
                return Ok(stale(format!(
                    "{lrp}/{index} is no longer assigned to {instance_id}"
                )));
            };
            if row.presence != Presence::Ordinary {
                return delete_instance(state, &row, now).await;
            }
            // Not a crash: the cell is leaving, the instance is placed elsewhere at once.
            put_instance(state, &row, row.unclaim(now), now).await
        }
        Report::TaskStarted { cell, id } => {
            let Some(task) = state.store.get_task(id).await? else {
                return Ok(stale(format!("task {id} no longer exists")));
            };
            if task.state != TaskState::Pending || task.cell_id.as_ref() != Some(cell) {
                return Ok(stale(format!(
                    "task {id} is {} on {}, not waiting to start on {cell}",
                    task.state,
                    task.cell_id.as_ref().map_or("no cell", Name::as_str)
                )));
            }
            let mut next = task.clone();
            next.state = task.state.apply(TaskTransition::Start)?;
            next.updated_at = now;
            put_task(state, &task, next, now).await
        }
        Report::TaskCompleted {
            cell,
            id,
            failed,
            failure_reason,
            result,
        } => {
            let Some(task) = state.store.get_task(id).await? else {
                return Ok(stale(format!("task {id} no longer exists")));
            };
            if task.state != TaskState::Running || task.cell_id.as_ref() != Some(cell) {
                // A completion reported twice is not an error; anything else is stale.
                return Ok(
                    if task.state != TaskState::Pending && task.cell_id.as_ref() == Some(cell) {
                        ReportResult::Ok
                    } else {
                        stale(format!("task {id} is not running on {cell}"))
                    },
                );
            }
            let mut next = completed(
                &task,
                *failed,
                failure_reason.as_deref(),
                result.as_deref(),
                now,
            )?;
            let outcome = put_task(state, &task, next.clone(), now).await?;
            next.generation = task.generation + 1;
            crate::callbacks::spawn(state, &next);
            Ok(outcome)
        }
        Report::TaskRejected { cell, id, reason } => {
            let Some(task) = state.store.get_task(id).await? else {
                return Ok(stale(format!("task {id} no longer exists")));
            };
            if task.state != TaskState::Pending || task.cell_id.as_ref() != Some(cell) {
                return Ok(stale(format!(
                    "task {id} is not waiting to start on {cell}"
                )));
            }
            let next = rejected(&task, reason, now)?;
            put_task(state, &task, next, now).await
        }
    }
}

/// `InstanceEvacuating`: a draining cell asks for a replacement of a running container,
/// and is told to keep it (`Ok`) until the replacement runs or crashed, or the index is
/// no longer wanted (`Stale`: stop it). Every resend is answered from the rows as they
/// are, so the report is idempotent.
async fn evacuate(
    state: &AppState,
    lrp: &Name,
    index: u32,
    instance_id: &str,
    now: Timestamp,
) -> Result<ReportResult, ApiError> {
    let rows = state.store.get_instances(lrp, index).await?;
    let Some(row) = holding(&rows, instance_id) else {
        // Deleted with its handoff done (the replacement ran), scaled away, or replaced
        // while the cell was gone.
        return Ok(stale(format!(
            "{lrp}/{index} is no longer assigned to {instance_id}"
        )));
    };
    let wanted = state
        .store
        .get_lrp(lrp)
        .await?
        .is_some_and(|desired| index < desired.spec.instances);
    if !wanted {
        // Nothing to hand over to: the container goes, and so does its row.
        state.commit(now, vec![delete(row)]).await?;
        return Ok(stale(format!("{lrp}/{index} is no longer wanted")));
    }
    let ordinary = rows.iter().find(|r| r.presence == Presence::Ordinary);
    match row.presence {
        Presence::Ordinary => match row.evacuate(instance_id, now) {
            Ok((evacuating, replacement)) => {
                // An index has one EVACUATING place. A copy an earlier drain left there
                // gives way: this container serves until the replacement runs.
                let mut mutations: Vec<Mutation> = rows
                    .iter()
                    .filter(|r| r.presence == Presence::Evacuating)
                    .map(delete)
                    .collect();
                mutations.push(Mutation::PutInstance {
                    instance: evacuating,
                    expect: Expect::Absent,
                });
                mutations.push(Mutation::PutInstance {
                    instance: replacement,
                    expect: Expect::Generation(row.generation),
                });
                state.commit(now, mutations).await?;
                Ok(ReportResult::Ok)
            }
            // Claimed but not known to run: nothing routes to it, so there is nothing to
            // keep serving; it is placed elsewhere at once, and the cell stops it.
            Err(_) => match row.unclaim(now) {
                Ok(next) => {
                    let mutation = Mutation::PutInstance {
                        instance: next,
                        expect: Expect::Generation(row.generation),
                    };
                    state.commit(now, vec![mutation]).await?;
                    Ok(stale(format!(
                        "{lrp}/{index} was not running here; it is placed elsewhere"
                    )))
                }
                Err(e) => Ok(stale(e.to_string())),
            },
        },
        Presence::Evacuating => match ordinary.map(|o| o.state) {
            // The commit that saw the replacement run deleted this copy already; a
            // replacement that got there another way ends the handoff just the same.
            Some(InstanceState::Running) => {
                state.commit(now, vec![delete(row)]).await?;
                Ok(stale(format!("the replacement of {lrp}/{index} runs")))
            }
            // Diego's rule: a replacement that crashed (and waits out its backoff)
            // cannot take over, and the draining cell does not wait for it.
            Some(InstanceState::Crashed) => {
                state.commit(now, vec![delete(row)]).await?;
                Ok(stale(format!("the replacement of {lrp}/{index} crashed")))
            }
            // Still being placed or starting (or about to be recreated by convergence).
            _ => Ok(ReportResult::Ok),
        },
        // Its cell vanished for a while and is back: convergence promotes the copy back
        // to ordinary, and the next resend hands it over. Until then, keep it.
        Presence::Suspect => Ok(ReportResult::Ok),
    }
}

/// The deletion of `row` as it was read.
fn delete(row: &Instance) -> Mutation {
    Mutation::DeleteInstance {
        lrp: row.lrp.clone(),
        index: row.index,
        presence: row.presence,
        expect: row.generation,
    }
}

/// The row of `lrp/index` (any presence) whose container is `instance_id`.
async fn held(
    state: &AppState,
    lrp: &Name,
    index: u32,
    instance_id: &str,
) -> Result<Option<Instance>, ApiError> {
    let rows = state.store.get_instances(lrp, index).await?;
    Ok(holding(&rows, instance_id).cloned())
}

fn holding<'a>(rows: &'a [Instance], instance_id: &str) -> Option<&'a Instance> {
    rows.iter().find(|row| {
        row.key
            .as_ref()
            .is_some_and(|k| k.instance_id == instance_id)
    })
}

/// A task that finished on its cell. A result over the size limit fails the task rather
/// than being cut, as in Diego: a truncated result would be silently wrong.
pub(crate) fn completed(
    task: &Task,
    failed: bool,
    failure_reason: Option<&str>,
    result: Option<&str>,
    now: Timestamp,
) -> Result<Task, InvalidTransition> {
    if let Some(result) = result.filter(|r| r.len() > limits::TASK_RESULT_BYTES) {
        return task.failed_with(
            &format!(
                "the result file is {} bytes, more than the limit of {}",
                result.len(),
                limits::TASK_RESULT_BYTES
            ),
            now,
        );
    }
    if failed {
        return task.failed_with(failure_reason.unwrap_or("the task failed"), now);
    }
    let mut next = task.clone();
    next.state = task.state.apply(TaskTransition::Complete)?;
    next.result = result.map(str::to_owned);
    next.updated_at = now;
    next.first_completed_at.get_or_insert(now);
    Ok(next)
}

/// A task a cell could not start: back to PENDING for another placement, or failed once
/// cells have refused it [`MAX_TASK_REJECTIONS`] times.
pub(crate) fn rejected(
    task: &Task,
    reason: &str,
    now: Timestamp,
) -> Result<Task, InvalidTransition> {
    let count = task.rejection_count.saturating_add(1);
    if count >= MAX_TASK_REJECTIONS {
        let mut failed = task.failed_with(
            &format!("could not be placed after {count} attempts: {reason}"),
            now,
        )?;
        failed.rejection_count = count;
        failed.rejection_reason = Some(reason.to_owned());
        return Ok(failed);
    }
    let mut next = task.clone();
    next.state = task.state.apply(TaskTransition::Reject)?;
    next.cell_id = None;
    next.rejection_count = count;
    next.rejection_reason = Some(reason.to_owned());
    next.updated_at = now;
    Ok(next)
}

fn stale(message: String) -> ReportResult {
    ReportResult::Stale { message }
}

async fn put_instance(
    state: &AppState,
    row: &Instance,
    next: Result<Instance, InvalidTransition>,
    now: Timestamp,
) -> Result<ReportResult, ApiError> {
    let next = match next {
        Ok(next) => next,
        Err(e) => return Ok(stale(e.to_string())),
    };
    let mutation = Mutation::PutInstance {
        instance: next,
        expect: Expect::Generation(row.generation),
    };
    state.commit(now, vec![mutation]).await?;
    Ok(ReportResult::Ok)
}

async fn delete_instance(
    state: &AppState,
    row: &Instance,
    now: Timestamp,
) -> Result<ReportResult, ApiError> {
    state.commit(now, vec![delete(row)]).await?;
    Ok(ReportResult::Ok)
}

async fn put_task(
    state: &AppState,
    row: &Task,
    next: Task,
    now: Timestamp,
) -> Result<ReportResult, ApiError> {
    let mutation = Mutation::PutTask {
        task: Box::new(next),
        expect: Expect::Generation(row.generation),
    };
    state.commit(now, vec![mutation]).await?;
    Ok(ReportResult::Ok)
}
