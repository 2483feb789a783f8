//! Completion callbacks: when a task with a `completion_callback_url` completes, the
//! server POSTs the outcome there, and once the receiver has it, resolves and deletes
//! the task (as Diego's BBS does).
//!
//! Delivery is retried a few times on failures that say nothing was received (the
//! connection failed or timed out, or the receiver answered 503 or 504). Any other
//! answer counts as received. A callback that never got through is sent again by
//! convergence (`ResendCallback`), so a server that dies mid-delivery loses nothing.

use std::time::Duration;

use model::{Name, Task, TaskState, TaskTransition};
use serde::Serialize;
use store::{Expect, Mutation};

use crate::AppState;

/// Attempts per delivery (Diego's `MAX_CB_RETRIES`).
const ATTEMPTS: u32 = 3;
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body POSTed to the callback URL.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    task_id: &'a Name,
    failed: bool,
    failure_reason: Option<&'a str>,
    result: Option<&'a str>,
    annotation: &'a str,
    created_at: u64,
}

/// Sends the callback of `task` in the background, if it has one and is completed.
pub(crate) fn spawn(state: &AppState, task: &Task) {
    if task.state != TaskState::Completed || task.spec.completion_callback_url.is_none() {
        return;
    }
    let state = state.clone();
    let task = task.clone();
    tokio::spawn(async move { deliver(&state, &task).await });
}

async fn deliver(state: &AppState, task: &Task) {
    let Some(url) = task.spec.completion_callback_url.as_deref() else {
        return;
    };
    let outcome = Outcome {
        task_id: &task.id,
        failed: task.failed,
        failure_reason: task.failure_reason.as_deref(),
        result: task.result.as_deref(),
        annotation: &task.spec.annotation,
        created_at: task.created_at.as_millis(),
    };
    for attempt in 1..=ATTEMPTS {
        let sent = state
            .http
            .post(url)
            .timeout(TIMEOUT)
            .json(&outcome)
            .send()
            .await;
        match sent {
            Ok(response) if !matches!(response.status().as_u16(), 503 | 504) => {
                tracing::debug!(task = %task.id, %url, status = %response.status(), "completion callback delivered");
                resolve(state, &task.id).await;
                return;
            }
            Ok(response) => {
                tracing::debug!(task = %task.id, %url, attempt, status = %response.status(), "completion callback not taken; retrying");
            }
            Err(e) => {
                tracing::debug!(task = %task.id, %url, attempt, error = %e, "completion callback failed; retrying");
            }
        }
    }
    tracing::warn!(task = %task.id, %url, "completion callback not delivered; convergence will send it again");
}

/// The receiver has the outcome: the task moves to RESOLVING and is deleted, in one
/// commit. If someone else resolved or deleted it meanwhile, there is nothing to do.
async fn resolve(state: &AppState, id: &Name) {
    let Ok(Some(task)) = state.store.get_task(id).await else {
        return;
    };
    let Ok(resolving) = task.state.apply(TaskTransition::Resolve) else {
        return;
    };
    let mut next = task.clone();
    next.state = resolving;
    next.updated_at = state.now();
    let mutations = vec![
        Mutation::PutTask {
            task: Box::new(next),
            expect: Expect::Generation(task.generation),
        },
        Mutation::DeleteTask {
            id: id.clone(),
            expect: task.generation + 1,
        },
    ];
    if let Err(e) = state.commit(state.now(), mutations).await {
        tracing::debug!(task = %id, error = %e.message, "task not resolved after its callback");
    }
}
