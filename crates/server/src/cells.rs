//! Cell routes: the cells whose presence is live, and the cell protocol's heartbeat and
//! reconciliation (see `api::cell`). A cell registers itself as a presence under
//! `cell/<id>` whose value is the cell as JSON.

use std::collections::HashMap;

use api::{AssignmentsRequest, Heartbeat, HeartbeatReply, List, WorkBatch, WorkItem};
use axum::Json;
use axum::extract::State;
use futures::future::join_all;
use model::{Cell, InstanceState, Lrp, Name, Presence, TaskState};
use store::{InstanceFilter, LockKind, LockRecord, LockRequest, TaskFilter};

use crate::AppState;
use crate::error::ApiError;
use crate::request::JsonBody;

/// The key prefix of cell presences.
pub(crate) const PREFIX: &str = "cell/";

/// `GET /v1/cells`
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<List<Cell>>, ApiError> {
    let records = state.store.list_locks(PREFIX, state.now()).await?;
    let items = records.iter().filter_map(decode).collect();
    Ok(Json(List { items }))
}

/// The cell a presence announces, or `None` (with a warning) when the record is not a
/// cell presence that decodes: one broken cell must not hide the others.
pub(crate) fn decode(record: &LockRecord) -> Option<Cell> {
    if record.kind != LockKind::Presence || !record.key.starts_with(PREFIX) {
        return None;
    }
    match serde_json::from_str::<Cell>(&record.value) {
        Ok(cell) => Some(cell),
        Err(e) => {
            tracing::warn!(key = %record.key, error = %e, "skipping a cell presence that does not decode");
            None
        }
    }
}

/// Largest body of the cell protocol's batched requests: a process simulating thousands
/// of cells sends them all in one heartbeat or report batch.
pub(crate) const BULK_BODY_BYTES: usize = 64 * 1024 * 1024;

/// `POST /v1/cells/heartbeat`: renews the presence of every cell listed, each under
/// `cell/<id>` with the cell as its value, for the presence TTL.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Heartbeat, BULK_BODY_BYTES>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    for (i, cell) in body.cells.iter().enumerate() {
        cell.validate()
            .map_err(|e| ApiError::from(e.within(&format!("cells[{i}]"))))?;
    }
    let now = state.now();
    let ttl_ms = state.timings.presence_ttl_ms;
    let renewals = body.cells.iter().map(|cell| {
        let request = LockRequest {
            key: format!("{PREFIX}{}", cell.id),
            owner: cell.id.to_string(),
            kind: LockKind::Presence,
            value: serde_json::to_string(cell).expect("a cell serializes to JSON"),
            ttl_ms,
            now,
        };
        state.store.acquire(request)
    });
    for result in join_all(renewals).await {
        result?;
    }
    state.hub.poke();
    Ok(Json(HeartbeatReply {
        ttl_ms,
        interval_ms: state.timings.heartbeat_interval_ms,
    }))
}

/// `POST /v1/cells/assignments`: everything assigned to the cells listed, for a cell's
/// periodic reconciliation: instances claimed by or running on them, and tasks placed on
/// them that have not completed.
pub(crate) async fn assignments(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AssignmentsRequest, BULK_BODY_BYTES>,
) -> Result<Json<WorkBatch>, ApiError> {
    let mut lrps: HashMap<Name, Option<Lrp>> = HashMap::new();
    let mut items = Vec::new();
    for cell in body.cells {
        let filter = InstanceFilter {
            cell: Some(cell.clone()),
            ..Default::default()
        };
        for instance in state.store.list_instances(&filter).await? {
            let Some(key) = instance.key else { continue };
            if !matches!(
                instance.state,
                InstanceState::Claimed | InstanceState::Running
            ) {
                continue;
            }
            if !lrps.contains_key(&instance.lrp) {
                let lrp = state.store.get_lrp(&instance.lrp).await?;
                lrps.insert(instance.lrp.clone(), lrp);
            }
            // An instance whose LRP is gone is not assigned: the cell stops it.
            if instance.presence != Presence::Ordinary {
                // A cell that comes back must not start what was replaced while it was
                // gone; if the container survived, it may keep it until convergence
                // decides between the two. An evacuating copy is only kept while it
                // runs: a draining cell never starts one again.
                items.push(WorkItem::KeepInstance {
                    cell: cell.clone(),
                    lrp: instance.lrp.clone(),
                    index: instance.index,
                    instance_id: key.instance_id,
                });
                continue;
            }
            if let Some(Some(lrp)) = lrps.get(&instance.lrp) {
                items.push(WorkItem::StartInstance {
                    cell: cell.clone(),
                    lrp: Box::new(lrp.clone()),
                    index: instance.index,
                    instance_id: key.instance_id,
                });
            }
        }
        let filter = TaskFilter {
            cell: Some(cell.clone()),
            ..Default::default()
        };
        for task in state.store.list_tasks(&filter).await? {
            if matches!(task.state, TaskState::Pending | TaskState::Running) {
                items.push(WorkItem::StartTask {
                    cell: cell.clone(),
                    task: Box::new(task),
                });
            }
        }
    }
    Ok(Json(WorkBatch { items }))
}
