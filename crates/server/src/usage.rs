//! What instances' containers use, for `GET /v1/lrps/{name}/status?usage=true`: asked of
//! the cells that hold them (`GET {cell}/v1/usage`), which sample their containers'
//! cgroups. The server keeps none of it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use api::{CellUsage, InstanceUsage, Workload};
use model::{Cell, Instance, InstanceState, Name};

use crate::{AppState, cells};

/// Longest wait for one cell: a status must not hang on a cell that is going away.
const CELL_TIMEOUT: Duration = Duration::from_secs(1);

/// The usage of `instances` that run or start on a cell, from each cell that answers
/// in time; instances on cells that do not answer are left out.
pub(crate) async fn of(state: &AppState, instances: &[Instance]) -> Vec<InstanceUsage> {
    let placed: BTreeSet<&Name> = instances
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Running | InstanceState::Claimed))
        .filter_map(|i| i.key.as_ref().map(|k| &k.cell_id))
        .collect();
    if placed.is_empty() {
        return Vec::new();
    }
    let cells: HashMap<Name, Cell> = match state.store.list_locks(cells::PREFIX, state.now()).await
    {
        Ok(records) => records
            .iter()
            .filter_map(cells::decode)
            .map(|c| (c.id.clone(), c))
            .collect(),
        Err(e) => {
            tracing::debug!("listing cells for usage: {e}");
            return Vec::new();
        }
    };
    let asks = placed
        .iter()
        .filter_map(|id| cells.get(*id))
        .map(|cell| ask(state, cell));
    let answers = futures::future::join_all(asks).await;
    let mut usage = Vec::new();
    for answer in answers.into_iter().flatten() {
        for container in answer.containers.into_values() {
            let Workload::Instance {
                index, instance_id, ..
            } = &container.workload
            else {
                continue;
            };
            let ours = instances.iter().any(|i| {
                i.index == *index
                    && i.key
                        .as_ref()
                        .is_some_and(|k| &k.instance_id == instance_id)
            });
            if ours {
                usage.push(InstanceUsage {
                    index: *index,
                    instance_id: instance_id.clone(),
                    cpu_percent: container.cpu_percent,
                    memory_bytes: container.memory_bytes,
                    disk_bytes: container.disk_bytes,
                });
            }
        }
    }
    usage.sort_by_key(|u| u.index);
    usage
}

async fn ask(state: &AppState, cell: &Cell) -> Option<CellUsage> {
    let url = format!("{}/v1/usage", cell.address.trim_end_matches('/'));
    let response = state
        .http
        .get(&url)
        .bearer_auth(&*state.token)
        .timeout(CELL_TIMEOUT)
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => response.json().await.ok(),
        Ok(response) => {
            tracing::debug!(cell = %cell.id, status = %response.status(), "usage refused");
            None
        }
        Err(e) => {
            tracing::debug!(cell = %cell.id, "usage: {}", e.without_url());
            None
        }
    }
}
