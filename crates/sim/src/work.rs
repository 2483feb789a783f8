//! The fleet's HTTP server: `POST /v1/work`, where the scheduler pushes work for any of
//! the fleet's cells. It answers as soon as the batch is queued; the fleet's loop does
//! the work.

use api::WorkBatch;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::error;

/// Work batches can be large (every StartInstance carries its LRP), so the limit is
/// far above the API's own.
const MAX_WORK_BYTES: usize = 256 * 1024 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    work: mpsc::Sender<WorkBatch>,
    mut stopping: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/v1/work", post(accept))
        .layer(DefaultBodyLimit::max(MAX_WORK_BYTES))
        .with_state(work);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::stopped(&mut stopping).await })
        .await;
    if let Err(e) = served {
        error!(error = %e, "the simulated cells' work endpoint failed");
    }
}

/// Queues the batch for the fleet's loop. Waiting for room in the queue is what slows
/// down a pusher that outruns the fleet.
async fn accept(
    State(work): State<mpsc::Sender<WorkBatch>>,
    Json(batch): Json<WorkBatch>,
) -> Result<Json<serde_json::Value>, (StatusCode, &'static str)> {
    let accepted = batch.items.len();
    work.send(batch).await.map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the simulated cells are stopping",
        )
    })?;
    Ok(Json(serde_json::json!({ "accepted": accepted })))
}
