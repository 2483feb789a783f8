//! A typed async client of Corral's HTTP API (`/v1`), for the CLI, cells and routers.
//!
//! Every route has one method that sends the API's wire types and returns the model
//! types the server answers with. Errors say what a caller can act on: the server
//! refused the request ([`ClientError::Api`], with its code and the field at fault), the
//! server could not be reached ([`ClientError::Transport`], naming the address tried),
//! or it answered something the API does not promise ([`ClientError::Decode`]).

#![forbid(unsafe_code)]

mod cells;
mod error;
mod events;
mod exec;
mod logs;
pub mod sse;

use std::time::Duration;

use api::{
    DomainUpsert, ErrorBody, ErrorCode, ErrorDetail, List, LrpCreate, LrpPatch, LrpStatus,
    TaskCreate,
};
use model::{Cell, Domain, Instance, Lrp, Task, TaskState};
use reqwest::{Method, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use events::EventStream;
pub use exec::{ExecIn, ExecOutput, ExecSession};
pub use logs::LogsOf;

/// How long a connection attempt may take. Short, so that a wrong address fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one ordinary request may take, start to end. The event stream has none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an unexpected response body an error message quotes.
const QUOTED_BODY_CHARS: usize = 300;

/// A client of one Corral API. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// Shows the URL but never the token, so that logging a client leaks no secret.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Which tasks `GET /v1/tasks` returns; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub state: Option<TaskState>,
    pub cell: Option<String>,
}

impl Client {
    /// A client of the API at `api_url` (`http://host:port`, optionally with a path
    /// prefix; a bare `host:port` is taken as `http://`). `token` is sent as a bearer
    /// token on every request but the health check.
    pub fn new(api_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: api_url.to_owned(),
            reason: reason.to_owned(),
        };
        let with_scheme = if api_url.contains("://") {
            api_url.to_owned()
        } else {
            format!("http://{api_url}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("must be an http:// or https:// URL"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("must not hold credentials: pass a token instead"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport(format!("set up the HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// The API URL as given, normalized: what error messages name.
    pub fn api_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The bearer token this client sends, if any (the router asks for the same one on
    /// its `/metrics`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `GET /v1/health`: succeeds when the server is up. Sends no token.
    pub async fn health(&self) -> Result<(), ClientError> {
        let url = self.url(&["health"], &[])?;
        let request = self.http.get(url).timeout(REQUEST_TIMEOUT);
        let response = self.send("GET /v1/health", request).await?;
        let _: serde_json::Value = self.decode("/v1/health", response).await?;
        Ok(())
    }

    /// `POST /v1/lrps`.
    pub async fn create_lrp(&self, create: &LrpCreate) -> Result<Lrp, ClientError> {
        self.call(Method::POST, &["lrps"], &[], Some(create)).await
    }

    /// `GET /v1/lrps`, in one domain or all.
    pub async fn lrps(&self, domain: Option<&str>) -> Result<Vec<Lrp>, ClientError> {
        let query: Vec<_> = domain
            .map(|d| ("domain", d.to_owned()))
            .into_iter()
            .collect();
        let list: List<Lrp> = self
            .call(Method::GET, &["lrps"], &query, None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// `GET /v1/lrps/{name}`.
    pub async fn lrp(&self, name: &str) -> Result<Lrp, ClientError> {
        self.call(Method::GET, &["lrps", name], &[], None::<&()>)
            .await
    }

    /// `PATCH /v1/lrps/{name}`: a [`ClientError::Api`] with code `conflict` when
    /// `patch.generation` is set and the LRP has moved past it.
    pub async fn update_lrp(&self, name: &str, patch: &LrpPatch) -> Result<Lrp, ClientError> {
        self.call(Method::PATCH, &["lrps", name], &[], Some(patch))
            .await
    }

    /// `DELETE /v1/lrps/{name}`.
    pub async fn delete_lrp(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["lrps", name]).await
    }

    /// `GET /v1/lrps/{name}/instances`.
    pub async fn instances(&self, name: &str) -> Result<Vec<Instance>, ClientError> {
        let list: List<Instance> = self
            .call(Method::GET, &["lrps", name, "instances"], &[], None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// `GET /v1/instances[?cell=ID]`: the instances of every LRP, or of those on one cell.
    pub async fn all_instances(&self, cell: Option<&str>) -> Result<Vec<Instance>, ClientError> {
        let query: Vec<_> = cell.map(|c| ("cell", c.to_owned())).into_iter().collect();
        let list: List<Instance> = self
            .call(Method::GET, &["instances"], &query, None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// `GET /v1/lrps/{name}/status`: the LRP, its instances and counts by state.
    pub async fn lrp_status(&self, name: &str) -> Result<LrpStatus, ClientError> {
        self.call(Method::GET, &["lrps", name, "status"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/lrps/{name}/status?usage=true`: with what each placed instance's
    /// container uses, as its cell last sampled it.
    pub async fn lrp_status_with_usage(&self, name: &str) -> Result<LrpStatus, ClientError> {
        let query = [("usage", "true".to_owned())];
        self.call(Method::GET, &["lrps", name, "status"], &query, None::<&()>)
            .await
    }

    /// `POST /v1/tasks`.
    pub async fn create_task(&self, create: &TaskCreate) -> Result<Task, ClientError> {
        self.call(Method::POST, &["tasks"], &[], Some(create)).await
    }

    /// `GET /v1/tasks`, filtered.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, ClientError> {
        let mut query = Vec::new();
        if let Some(domain) = &filter.domain {
            query.push(("domain", domain.clone()));
        }
        if let Some(state) = filter.state {
            query.push(("state", state.to_string()));
        }
        if let Some(cell) = &filter.cell {
            query.push(("cell", cell.clone()));
        }
        let list: List<Task> = self
            .call(Method::GET, &["tasks"], &query, None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::GET, &["tasks", id], &[], None::<&()>)
            .await
    }

    /// `POST /v1/tasks/{id}/cancel`: the task, completed as failed.
    pub async fn cancel_task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::POST, &["tasks", id, "cancel"], &[], None::<&()>)
            .await
    }

    /// `DELETE /v1/tasks/{id}`: a `conflict` unless the task has completed.
    pub async fn delete_task(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["tasks", id]).await
    }

    /// `GET /v1/cells`.
    pub async fn cells(&self) -> Result<Vec<Cell>, ClientError> {
        let list: List<Cell> = self.call(Method::GET, &["cells"], &[], None::<&()>).await?;
        Ok(list.items)
    }

    /// `PUT /v1/domains/{name}`: keeps the domain fresh for the TTL.
    pub async fn upsert_domain(
        &self,
        name: &str,
        upsert: &DomainUpsert,
    ) -> Result<Domain, ClientError> {
        self.call(Method::PUT, &["domains", name], &[], Some(upsert))
            .await
    }

    /// `GET /v1/domains`.
    pub async fn domains(&self) -> Result<Vec<Domain>, ClientError> {
        let list: List<Domain> = self
            .call(Method::GET, &["domains"], &[], None::<&()>)
            .await?;
        Ok(list.items)
    }

    /// `GET /v1/events`: the events after `after` (all kept events when `None`), of the
    /// given topics (all when empty), then new ones as they happen. The stream ends
    /// when the server closes it and after the first error. An event of kind `resync`
    /// means the cursor was older than what the server keeps.
    pub fn events(&self, after: Option<u64>, topics: &[&str]) -> EventStream {
        EventStream::new(self.clone(), events_query(after, topics))
    }

    /// `GET /v1/events` like [`Client::events`], but returns only once the server has
    /// answered: from then on no event is missed, so a reader that lists state after
    /// this and then applies the stream's events misses no change (the router's
    /// resync).
    pub async fn subscribe(
        &self,
        after: Option<u64>,
        topics: &[&str],
    ) -> Result<EventStream, ClientError> {
        EventStream::connected(self.clone(), events_query(after, topics)).await
    }

    /// The URL of `/v1/<segments...>?<query>`. Segments are percent-encoded, so a name
    /// from a user cannot reach another route.
    pub(crate) fn url(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot hold a path".to_owned(),
            })?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends a request with a JSON body (or none) and decodes the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query)?;
        let route = format!("{method} {}", url.path());
        let mut request = self.authorized(method, url).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(&route, request).await?;
        self.decode(&route, response).await
    }

    /// Sends a request whose success has no body (`204`).
    async fn call_empty(&self, method: Method, segments: &[&str]) -> Result<(), ClientError> {
        let url = self.url(segments, &[])?;
        let route = format!("{method} {}", url.path());
        let request = self.authorized(method, url).timeout(REQUEST_TIMEOUT);
        self.send(&route, request).await?;
        Ok(())
    }

    pub(crate) fn authorized(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and turns a non-success answer into an error.
    pub(crate) async fn send(
        &self,
        route: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.refusal(route, response).await)
        }
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        route: &str,
        response: Response,
    ) -> Result<T, ClientError> {
        let body = response.bytes().await.map_err(|e| self.transport(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Decode(format!(
                "the answer to {route} from {} is not what the API promises: {e}",
                self.api_url()
            ))
        })
    }

    /// The error for a non-success answer: the server's error envelope when it sent
    /// one. Otherwise (a proxy's error page, an older server without the route) an
    /// [`ClientError::Api`] error is still made for the statuses the API uses, so that
    /// callers can act on the code, and a [`ClientError::Decode`] for any other.
    async fn refusal(&self, route: &str, response: Response) -> ClientError {
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return self.transport(&e),
        };
        if let Ok(envelope) = serde_json::from_slice::<ErrorBody>(&body) {
            return ClientError::Api {
                status: status.as_u16(),
                error: envelope.error,
            };
        }
        let text: String = String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(QUOTED_BODY_CHARS)
            .collect();
        let message = if text.is_empty() {
            format!("the server answered {status} to {route}")
        } else {
            format!("the server answered {status} to {route}: {text}")
        };
        match code_of_status(status.as_u16()) {
            Some(code) => ClientError::Api {
                status: status.as_u16(),
                error: ErrorDetail {
                    code,
                    message,
                    field: None,
                },
            },
            None => ClientError::Decode(message),
        }
    }

    /// A transport error that names the server and the innermost cause, which is the
    /// one a user understands ("Connection refused"), not reqwest's outer wrapping.
    pub(crate) fn transport(&self, error: &reqwest::Error) -> ClientError {
        if error.is_timeout() {
            return ClientError::Transport(format!(
                "the Corral API at {} did not answer in time",
                self.api_url()
            ));
        }
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        ClientError::Transport(format!(
            "cannot reach the Corral API at {} ({cause})",
            self.api_url()
        ))
    }
}

/// The query of `GET /v1/events`.
fn events_query(after: Option<u64>, topics: &[&str]) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(after) = after {
        query.push(("after", after.to_string()));
    }
    if !topics.is_empty() {
        query.push(("topics", topics.join(",")));
    }
    query
}

fn code_of_status(status: u16) -> Option<ErrorCode> {
    [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Invalid,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ]
    .into_iter()
    .find(|code| code.status() == status)
}
