//! Task routes: submit, list, get, cancel and delete one-off tasks. Every change is a
//! compare-and-set on the task's generation, which is what keeps a task from running
//! twice or being deleted while it runs.

use api::{List, TaskCreate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use model::{Name, Task, TaskState};
use serde::Deserialize;
use store::{Expect, Mutation, TaskFilter};

use crate::error::{ApiError, empty, retry_raced};
use crate::request::{JsonBody, QueryParams, path_name, query_name};
use crate::{AppState, stored_generation};

/// Why a cancelled task failed, as Diego says it.
pub(crate) const CANCELLED: &str = "task was cancelled";

/// `POST /v1/tasks`: a PENDING task, under the id given or a new UUID.
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TaskCreate>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let (id, spec) = body.into_spec()?;
    crate::request::check_image(&spec.rootfs)?;
    let id = match id {
        Some(id) => id,
        // Version 7 UUIDs sort by creation time, which keeps ids and listings in order.
        None => Name::parse("id", &uuid::Uuid::now_v7().to_string())?,
    };
    let now = state.now();
    let mut task = Task::new(id, spec, now);
    let committed = state
        .commit(
            now,
            vec![Mutation::PutTask {
                task: Box::new(task.clone()),
                expect: Expect::Absent,
            }],
        )
        .await?;
    task.generation = stored_generation(&committed, 0, Expect::Absent);
    Ok((StatusCode::CREATED, Json(task.redacted())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    domain: Option<String>,
    state: Option<String>,
    cell: Option<String>,
}

/// `GET /v1/tasks?domain=&state=&cell=`
pub(crate) async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<Task>>, ApiError> {
    let filter = TaskFilter {
        domain: query_name("domain", query.domain.as_deref())?,
        state: query.state.as_deref().map(parse_state).transpose()?,
        cell: query_name("cell", query.cell.as_deref())?,
    };
    let items = state.store.list_tasks(&filter).await?;
    Ok(Json(List {
        items: items.iter().map(Task::redacted).collect(),
    }))
}

const STATES: [TaskState; 4] = [
    TaskState::Pending,
    TaskState::Running,
    TaskState::Completed,
    TaskState::Resolving,
];

fn parse_state(value: &str) -> Result<TaskState, ApiError> {
    STATES
        .into_iter()
        .find(|s| s.to_string().eq_ignore_ascii_case(value))
        .ok_or_else(|| {
            ApiError::bad_request(
                "state",
                format!(
                    "state must be one of PENDING, RUNNING, COMPLETED, RESOLVING (got {value:?})"
                ),
            )
        })
}

/// `GET /v1/tasks/{id}`
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    let id = path_name("task", &id)?;
    Ok(Json(find(&state, &id).await?.redacted()))
}

/// `POST /v1/tasks/{id}/cancel`: a PENDING or RUNNING task completes as failed.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    let id = path_name("task", &id)?;
    retry_raced(|| async {
        let task = find(&state, &id).await?;
        if !matches!(task.state, TaskState::Pending | TaskState::Running) {
            return Err(ApiError::conflict(format!(
                "task {id} is already {}",
                task.state
            )));
        }
        let now = state.now();
        let mut next = task.failed_with(CANCELLED, now)?;
        let expect = Expect::Generation(task.generation);
        let committed = state
            .commit(
                now,
                vec![Mutation::PutTask {
                    task: Box::new(next.clone()),
                    expect,
                }],
            )
            .await?;
        next.generation = stored_generation(&committed, 0, expect);
        crate::callbacks::spawn(&state, &next);
        Ok(Json(next.redacted()))
    })
    .await
}

/// `DELETE /v1/tasks/{id}`: only a finished (COMPLETED or RESOLVING) task.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_name("task", &id)?;
    retry_raced(|| async {
        let task = find(&state, &id).await?;
        if !task.state.deletable() {
            return Err(ApiError::conflict(format!(
                "task is {}; cancel it first",
                task.state
            )));
        }
        let delete = Mutation::DeleteTask {
            id: id.clone(),
            expect: task.generation,
        };
        state.commit(state.now(), vec![delete]).await
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn find(state: &AppState, id: &Name) -> Result<Task, ApiError> {
    state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task with id {id}")))
}
