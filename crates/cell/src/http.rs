//! The cell's HTTP endpoint: `POST /v1/work` (the scheduler pushes work),
//! `POST /v1/drain` (start an evacuation), `GET /v1/state` and
//! `GET /v1/containers/{id}/output`. Everything but `/v1/ping` needs the bearer token
//! when the cell has one.

use std::sync::Arc;

use api::WorkBatch;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::agent::Agent;

/// Work batches carry whole LRPs; the limit is far above one request's worth.
const MAX_WORK_BYTES: usize = 64 * 1024 * 1024;

pub(crate) async fn serve(listener: TcpListener, agent: Arc<Agent>) {
    let app = Router::new()
        .route("/v1/work", post(work))
        .route("/v1/drain", post(drain))
        .route("/v1/state", get(state))
        .route("/v1/containers/{id}/output", get(output))
        .layer(middleware::from_fn_with_state(agent.clone(), authorize))
        .route("/v1/ping", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_WORK_BYTES))
        .with_state(agent);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the cell's HTTP endpoint failed: {e}");
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message } }))).into_response()
}

async fn authorize(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    let Some(token) = &agent.config.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if t == token => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong bearer token"),
        None => error(StatusCode::UNAUTHORIZED, "missing bearer token"),
    }
}

async fn work(State(agent): State<Arc<Agent>>, Json(batch): Json<WorkBatch>) -> Response {
    let accepted = batch.items.len();
    for item in batch.items {
        agent.apply(item);
    }
    Json(json!({ "accepted": accepted })).into_response()
}

async fn drain(State(agent): State<Arc<Agent>>) -> Response {
    let started = !*agent.evacuating.borrow();
    let draining = agent.clone();
    tokio::spawn(async move { draining.request_drain() });
    (
        StatusCode::ACCEPTED,
        Json(json!({ "evacuating": true, "started": started, "containers": agent.held_count() })),
    )
        .into_response()
}

async fn state(State(agent): State<Arc<Agent>>) -> Response {
    Json(json!({
        "cell": agent.cell(),
        "backend": agent.runtime.backend(),
        "containers": agent.held_count(),
    }))
    .into_response()
}

async fn output(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    match agent.output_tail(&id) {
        Some(bytes) => bytes.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no container {id} on this cell"),
        ),
    }
}
