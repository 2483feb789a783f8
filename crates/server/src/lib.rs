//! Corral's control plane service: the HTTP/JSON API under `/v1`, its Server-Sent
//! Events stream and OpenAPI document, and the lifecycle of a running server.
//!
//! Handlers are thin: parse the request into model types (errors name the field), read
//! what the change depends on, make one atomic commit of compare-and-set mutations, and
//! answer with the rows as stored. The store decides nothing; the model validates; this
//! crate only connects the two to HTTP.
//!
//! Every route is declared once, in `routes()`; the router is built from that table and
//! a test checks the OpenAPI document against it.

#![forbid(unsafe_code)]

mod auth;
mod callbacks;
mod cells;
mod clock;
mod control;
mod converger;
mod domains;
mod error;
mod events;
mod exec;
mod leader;
mod logs;
mod lrps;
mod metrics;
mod openapi;
mod pulls;
mod reports;
mod request;
mod scheduler;
mod server;
mod tasks;
mod timings;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use model::{Generation, Timestamp};
use store::{Commit, Committed, Expect, Mutation, Store};

pub use clock::{Clock, ManualClock, SystemClock};
pub use control::SteppedControlPlane;
pub use server::{Server, ServerOptions, start};
pub use timings::Timings;

use crate::error::{ApiError, json_errors};
use crate::events::Hub;

/// The API as a router over `store`, for tests and for embedding. Requests need
/// `Authorization: Bearer <token>` except health and the OpenAPI document.
pub fn app(store: Arc<dyn Store>, token: String, clock: Arc<dyn Clock>) -> Router {
    router(AppState::new(store, token, clock))
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub token: Arc<str>,
    pub hub: Arc<Hub>,
    pub timings: Arc<Timings>,
    /// For completion callbacks.
    pub http: reqwest::Client,
    /// Image pulls cells report, for status.
    pub pulls: Arc<pulls::Pulls>,
    /// What `GET /metrics` exposes.
    pub metrics: Arc<metrics::Metrics>,
}

/// Leaves the token out, so that no log line can carry it.
impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, token: String, clock: Arc<dyn Clock>) -> AppState {
        AppState {
            store,
            clock,
            token: token.into(),
            hub: Arc::new(Hub::new()),
            timings: Arc::new(Timings::default()),
            http: reqwest::Client::new(),
            pulls: Arc::default(),
            metrics: Arc::default(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Commits `mutations` atomically at `now` and wakes the event streams.
    pub async fn commit(
        &self,
        now: Timestamp,
        mutations: Vec<Mutation>,
    ) -> Result<Committed, ApiError> {
        let committed = self.store.commit(Commit::new(now, mutations)).await?;
        self.hub.committed(&committed);
        Ok(committed)
    }
}

/// The generation the store gave the row of the `index`th mutation of a commit made
/// under `expect`. The store reports it; the fallback is what its contract promises.
pub(crate) fn stored_generation(committed: &Committed, index: usize, expect: Expect) -> Generation {
    committed
        .generations
        .get(index)
        .copied()
        .unwrap_or(match expect {
            Expect::Absent => 1,
            Expect::Generation(g) => g + 1,
        })
}

/// An HTTP method a route answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    /// The lowercase name OpenAPI uses as the operation's key.
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the OpenAPI test"))]
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// One route of the API.
#[derive(Debug)]
pub(crate) struct Route {
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the OpenAPI test"))]
    pub verb: Verb,
    pub path: &'static str,
    /// Served without a token.
    pub public: bool,
    pub handler: MethodRouter<AppState>,
}

fn route<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    Route {
        verb,
        path,
        public: false,
        handler: on(verb.filter(), handler),
    }
}

/// A route of the cell protocol, whose batches may be far larger than a user's request.
fn bulk(mut route: Route) -> Route {
    route.handler = route
        .handler
        .layer(DefaultBodyLimit::max(cells::BULK_BODY_BYTES));
    route
}

fn public(mut route: Route) -> Route {
    route.public = true;
    route
}

/// Every route of the API: the one list the router and the OpenAPI test read.
pub(crate) fn routes() -> Vec<Route> {
    use Verb::*;
    vec![
        public(route(Get, "/v1/health", health)),
        public(route(Get, "/v1/openapi.json", openapi::serve)),
        route(Post, "/v1/lrps", lrps::create),
        route(Get, "/v1/lrps", lrps::list),
        route(Get, "/v1/lrps/{name}", lrps::get),
        route(Patch, "/v1/lrps/{name}", lrps::patch),
        route(Delete, "/v1/lrps/{name}", lrps::delete),
        route(Get, "/v1/lrps/{name}/instances", lrps::instances),
        route(Get, "/v1/instances", lrps::all_instances),
        route(Get, "/v1/lrps/{name}/status", lrps::status),
        route(
            Get,
            "/v1/lrps/{name}/instances/{index}/exec",
            exec::lrp_instance,
        ),
        route(Get, "/v1/lrps/{name}/logs", logs::lrp),
        route(Post, "/v1/tasks", tasks::create),
        route(Get, "/v1/tasks", tasks::list),
        route(Get, "/v1/tasks/{id}", tasks::get),
        route(Delete, "/v1/tasks/{id}", tasks::delete),
        route(Post, "/v1/tasks/{id}/cancel", tasks::cancel),
        route(Get, "/v1/tasks/{id}/logs", logs::task),
        route(Get, "/v1/tasks/{id}/exec", exec::task),
        route(Get, "/v1/cells", cells::list),
        bulk(route(Post, "/v1/cells/heartbeat", cells::heartbeat)),
        bulk(route(Post, "/v1/cells/assignments", cells::assignments)),
        bulk(route(Post, "/v1/cells/reports", reports::reports)),
        route(Put, "/v1/domains/{name}", domains::upsert),
        route(Get, "/v1/domains", domains::list),
        route(Get, "/v1/events", events::stream),
        route(Get, "/metrics", metrics::serve),
    ]
}

pub(crate) fn router(state: AppState) -> Router {
    let mut open = Router::new();
    let mut guarded = Router::new();
    for route in routes() {
        if route.public {
            open = open.route(route.path, route.handler);
        } else {
            guarded = guarded.route(route.path, route.handler);
        }
    }
    let guarded = guarded.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    open.merge(guarded)
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_request,
        ))
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// One log line per request.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Health checks and the cell protocol's steady heartbeats and reports would drown
    // what people do; they are there at debug level.
    if path == "/v1/health" || path.starts_with("/v1/cells/") {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    response
}
