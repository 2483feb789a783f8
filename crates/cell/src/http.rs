//! The cell's HTTP endpoint: `POST /v1/work` (the scheduler pushes work),
//! `POST /v1/drain` (start an evacuation), `GET /v1/state`,
//! `GET /v1/containers/{id}/output` and `GET /v1/logs` (see `api::LogTail`).
//! `GET /v1/usage` (`api::CellUsage`) and `GET /metrics` (Prometheus text) are in
//! `usage.rs` and `metrics.rs`; `GET /v1/containers/{id}/exec` (a WebSocket) in
//! `exec.rs`. Everything but `/v1/ping` needs the bearer token when the cell has one.

use std::sync::Arc;

use api::WorkBatch;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::agent::Agent;
use crate::logs::Owner;

/// Work batches carry whole LRPs; the limit is far above one request's worth.
const MAX_WORK_BYTES: usize = 64 * 1024 * 1024;

pub(crate) async fn serve(listener: TcpListener, agent: Arc<Agent>) {
    let app = Router::new()
        .route("/v1/work", post(work))
        .route("/v1/drain", post(drain))
        .route("/v1/state", get(state))
        .route("/v1/containers/{id}/output", get(output))
        .route("/v1/containers/{id}/exec", get(crate::exec::exec))
        .route("/v1/logs", get(logs))
        .route("/v1/usage", get(crate::usage::serve))
        .route("/metrics", get(crate::metrics::serve))
        .layer(middleware::from_fn_with_state(agent.clone(), authorize))
        .route("/v1/ping", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_WORK_BYTES))
        .with_state(agent);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the cell's HTTP endpoint failed: {e}");
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
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
        .and_then(api::bearer_token);
    match given {
        Some(t) if api::same_token(t, token) => next.run(request).await,
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
    match agent.logs.text(&id) {
        Some(text) => text.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no container {id} on this cell"),
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    lrp: Option<String>,
    task: Option<String>,
    tail: Option<usize>,
    since: Option<u64>,
    #[serde(default)]
    follow: bool,
}

/// How often a follower with nothing to read gets a blank line, so that a reader can
/// tell a quiet log from a dead connection.
const LOG_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /v1/logs?lrp=NAME|task=ID`: with `tail=N` (default 100) the newest lines kept
/// and the cursor after them (`api::LogTail`); with `since=CURSOR&follow=true` the lines
/// from the cursor on and then each new one, as newline-delimited JSON.
async fn logs(State(agent): State<Arc<Agent>>, query: Query<LogQuery>) -> Response {
    let Query(query) = query;
    let owner = match (&query.lrp, &query.task) {
        (Some(lrp), None) => model::Name::parse("lrp", lrp).map(Owner::Lrp),
        (None, Some(task)) => model::Name::parse("task", task).map(Owner::Task),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "name exactly one of lrp=NAME or task=ID",
            );
        }
    };
    let owner = match owner {
        Ok(owner) => owner,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if !query.follow {
        let n = query.tail.unwrap_or(100).min(api::MAX_LOG_TAIL);
        let (entries, next) = agent.logs.tail(&owner, n);
        return Json(api::LogTail { entries, next }).into_response();
    }
    let (backlog, live) = agent.logs.follow(&owner, query.since.unwrap_or(0));
    let state = Follow {
        owner,
        // The live feed repeats nothing of the backlog.
        last: backlog.last().map_or(0, |l| l.seq),
        backlog: backlog.into_iter().map(|l| l.entry).collect(),
        live,
    };
    let lines = futures::stream::unfold(state, |mut state| async move {
        let entry = state.next().await?;
        let line = match entry {
            Some(entry) => {
                let mut line = serde_json::to_vec(&entry).unwrap_or_default();
                line.push(b'\n');
                line
            }
            None => b"\n".to_vec(),
        };
        Some((Ok::<_, std::convert::Infallible>(line), state))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

/// One follower of a log.
struct Follow {
    owner: Owner,
    backlog: std::collections::VecDeque<api::LogEntry>,
    /// The sequence number of the last line sent.
    last: u64,
    live: tokio::sync::broadcast::Receiver<Arc<crate::logs::Line>>,
}

impl Follow {
    /// The next entry, `Some(None)` for a keep-alive, `None` when the cell stops.
    async fn next(&mut self) -> Option<Option<api::LogEntry>> {
        use tokio::sync::broadcast::error::RecvError;
        if let Some(entry) = self.backlog.pop_front() {
            return Some(Some(entry));
        }
        loop {
            match tokio::time::timeout(LOG_KEEPALIVE, self.live.recv()).await {
                Err(_) => return Some(None),
                Ok(Ok(line)) if *line.owner == self.owner && line.seq > self.last => {
                    self.last = line.seq;
                    return Some(Some(line.entry.clone()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(n))) => {
                    return Some(Some(api::LogEntry {
                        at: crate::logs::now_millis(),
                        source: api::LogSource::Cell,
                        index: None,
                        text: format!(
                            "this reader fell behind the cell's log: up to {n} lines were skipped"
                        ),
                    }));
                }
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    }
}
