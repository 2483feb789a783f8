//! Cell routes: the cells whose presence is live. A cell registers itself as a presence
//! under `cell/<id>` whose value is the cell as JSON.

use api::List;
use axum::Json;
use axum::extract::State;
use model::Cell;
use store::{LockKind, LockRecord};

use crate::AppState;
use crate::error::ApiError;

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
