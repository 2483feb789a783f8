//! The HTTP side: HTTP/1.1 and HTTP/2 (prior knowledge) on hyper, each request routed
//! by its host to an endpoint of the current table and proxied over a pooled
//! keep-alive connection.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::Level;

use crate::Balance;
use crate::body::{InFlight, ResponseBody, UpstreamBody};
use crate::headers::{self, X_REQUEST_ID};
use crate::metrics::{self, RouterMetrics};
use crate::table::{Live, MAX_TRIES, Pool, Tried};

/// How long connecting to an endpoint may take before the request tries another.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The answer to every request before the first table is loaded.
const NOT_LOADED: &str = "not ready: the routing table has not been loaded from the server yet\n";

/// What every connection shares: the table, the upstream pool and the settings.
pub(crate) struct Shared {
    pub table: ArcSwap<Live>,
    pub balance: Balance,
    pub metrics: RouterMetrics,
    /// The bearer token `GET /metrics` asks for, when the router has one.
    metrics_auth: Option<String>,
    client: Client<HttpConnector, UpstreamBody>,
    server: auto::Builder<TokioExecutor>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("balance", &self.balance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(balance: Balance, token: Option<&str>) -> Shared {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // The request's own Host goes upstream, never the endpoint's address.
            .set_host(false)
            .build(connector);
        let mut server = auto::Builder::new(TokioExecutor::new());
        // A client that never finishes its request head does not hold a connection
        // for ever.
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        server.http2().timer(TokioTimer::new());
        Shared {
            table: ArcSwap::from_pointee(Live::default()),
            balance,
            metrics: RouterMetrics::default(),
            metrics_auth: token.map(str::to_owned),
            client,
            server,
        }
    }
}

/// Accepts connections until the task is aborted, serving each on a task of its own.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: let some connections end.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            shared: shared.clone(),
            remote,
            client_ip: HeaderValue::try_from(remote.ip().to_string())
                .expect("an IP address is a header value"),
        });
        let connection = shared
            .server
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(conn.handle(request).await) }
                }),
            )
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// One client connection.
struct Conn {
    shared: Arc<Shared>,
    remote: SocketAddr,
    /// The client's IP as `X-Forwarded-For` adds it.
    client_ip: HeaderValue,
}

/// What the access log says about a request besides its method, host and path.
struct Outcome {
    status: StatusCode,
    /// The instance and endpoint that answered (kept only for the access log).
    upstream: Option<(Arc<str>, SocketAddr)>,
    tries: usize,
}

impl Conn {
    async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let arrived = Instant::now();
        let started = tracing::enabled!(target: "access", Level::INFO).then_some(arrived);
        let logged = started.map(|_| {
            let path = request.uri().path_and_query().cloned();
            (request.method().clone(), path)
        });
        // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
        let host = match request.headers().get(HOST) {
            Some(host) => Some(host.clone()),
            None => request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::try_from(a.as_str()).ok()),
        };
        let host_text = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let (pool, synced) = {
            let table = self.shared.table.load();
            (table.http.lookup(host_text).cloned(), table.synced)
        };
        let (response, outcome) = match (&pool, &host) {
            (Some(pool), Some(host)) if !pool.backends.is_empty() => {
                self.proxy(request, host, pool, started.is_some()).await
            }
            (Some(pool), _) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no instance of LRP{} {} is running\n",
                    if pool.lrps.contains(',') { "s" } else { "" },
                    pool.lrps
                ),
            ),
            (None, _) if request.uri().path() == "/healthz" => self.health(),
            (None, _) if request.uri().path() == "/metrics" => self.metrics(&request),
            (None, _) if !synced => local(StatusCode::SERVICE_UNAVAILABLE, NOT_LOADED.to_owned()),
            (None, Some(_)) => local(
                StatusCode::NOT_FOUND,
                format!(
                    "no route for {}: no LRP has this hostname\n",
                    routes::normalize_host(host_text).as_deref().unwrap_or("")
                ),
            ),
            (None, None) => local(
                StatusCode::NOT_FOUND,
                "no route: the request names no host, and routes are by hostname\n".to_owned(),
            ),
        };
        let stats = match &pool {
            Some(pool) => &pool.stats,
            None => &self.shared.metrics.unrouted,
        };
        stats.observe(outcome.status, arrived.elapsed());
        if let (Some(started), Some((method, path))) = (started, logged) {
            tracing::info!(
                target: "access",
                client = %self.remote,
                method = %method,
                host = %host_text,
                path = %path.as_ref().map_or("", |p| p.as_str()),
                status = outcome.status.as_u16(),
                upstream = %outcome.upstream.as_ref().map_or_else(
                    || "-".to_owned(),
                    |(instance, addr)| format!("{instance} {addr}"),
                ),
                tries = outcome.tries,
                us = started.elapsed().as_micros() as u64,
                request_id = %response
                    .headers()
                    .get(X_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
            );
        }
        response
    }

    /// The pool of the current table that serves `host`.
    fn pool(&self, host: &str) -> Option<Arc<Pool>> {
        self.shared.table.load().http.lookup(host).cloned()
    }

    /// Sends the request to an endpoint of `pool`; an idempotent request without a
    /// body goes to another endpoint when one cannot be reached.
    async fn proxy(
        &self,
        mut request: Request<Incoming>,
        host: &HeaderValue,
        first: &Arc<Pool>,
        logged: bool,
    ) -> (Response<ResponseBody>, Outcome) {
        // The pool routed by, until a retry takes the table as it is then.
        let mut current: Option<Arc<Pool>> = None;
        let shared = &self.shared;
        let upgrade =
            request.version() == Version::HTTP_11 && headers::is_upgrade(request.headers());
        let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let request_id = match request.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = headers::request_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let (parts, body) = request.into_parts();
        let mut header_map = parts.headers;
        // Room for the forwarding headers, so adding them does not grow the map twice.
        header_map.reserve(4);
        headers::strip_hop_by_hop(&mut header_map, upgrade);
        if !header_map.contains_key(HOST) {
            header_map.insert(HOST, host.clone());
        }
        headers::add_forwarded(&mut header_map, &self.client_ip, host);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let method = parts.method;
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let retryable = idempotent && body.is_end_stream();
        // A body can be sent once: a request with one is not tried again.
        let mut incoming = (!retryable).then_some(body);
        let mut headers = Some(header_map);
        let mut tried = Tried::default();
        let mut failure = None;
        loop {
            let pool = current.as_ref().unwrap_or(first);
            let Some(backend) = pool.pick(shared.balance, &tried) else {
                break;
            };
            tried.push(backend.addr);
            // Headers are copied only when another try may need them.
            let again = retryable && pool.backends.len() > tried.len() && tried.len() < MAX_TRIES;
            let this_try = match (&mut headers, again) {
                (Some(h), true) => h.clone(),
                (h, false) => match h.take() {
                    Some(h) => h,
                    None => break,
                },
                (None, true) => break,
            };
            let upstream = upstream_request(
                &method,
                upstream_uri(&backend.authority, &path),
                this_try,
                match incoming.take() {
                    Some(body) => UpstreamBody::Incoming(body),
                    None => UpstreamBody::Empty,
                },
            );
            let mut in_flight = (shared.balance == Balance::LeastRequest)
                .then(|| InFlight::start(&backend.in_flight));
            let answer = match shared.client.request(upstream).await {
                Err(e) => Err(innermost(&e)),
                // A small answer to a request that may go elsewhere is read whole before
                // the client sees any of it, so a backend that dies while answering
                // costs a try, not a broken response (nginx buffers answers too).
                Ok(response) if again && client_upgrade.is_none() && small(&response) => {
                    let (parts, mut body) = response.into_parts();
                    match read_whole(&mut body).await {
                        Ok(whole) => Ok(finish(
                            Response::from_parts(parts, ResponseBody::Local(Some(whole))),
                            &request_id,
                        )),
                        Err(e) => Err(format!(
                            "the connection broke during the answer ({})",
                            innermost(&e)
                        )),
                    }
                }
                Ok(response) => Ok(respond(
                    response,
                    client_upgrade.take(),
                    in_flight.take(),
                    &request_id,
                )),
            };
            match answer {
                Ok(response) => {
                    let outcome = Outcome {
                        status: response.status(),
                        upstream: logged.then(|| (backend.instance.clone(), backend.addr)),
                        tries: tried.len(),
                    };
                    return (response, outcome);
                }
                Err(reason) => {
                    tracing::debug!(
                        instance = %backend.instance,
                        addr = %backend.addr,
                        error = %reason,
                        retry = again,
                        "an endpoint failed"
                    );
                    failure = Some(format!(
                        "cannot reach instance {} at {}: {reason}",
                        backend.instance, backend.addr
                    ));
                    if !again {
                        break;
                    }
                    // The next try picks from the table as it is now: the endpoint
                    // that failed may have left it already.
                    if let Some(now) = host.to_str().ok().and_then(|h| self.pool(h)) {
                        current = Some(now);
                    }
                }
            }
        }
        let message = match failure {
            Some(failure) => format!("bad gateway: {failure}\n"),
            None => "bad gateway: no endpoint left to try\n".to_owned(),
        };
        let (response, mut outcome) = local(StatusCode::BAD_GATEWAY, message);
        outcome.tries = tried.len();
        (response, outcome)
    }

    /// `GET /metrics` on a host nothing is routed at: the router's metrics, for the
    /// bearer token the router follows the server with (when it has one).
    fn metrics<B>(&self, request: &Request<B>) -> (Response<ResponseBody>, Outcome) {
        if let Some(expected) = &self.shared.metrics_auth {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(api::bearer_token);
            if !given.is_some_and(|given| api::same_token(given, expected)) {
                return local(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: /metrics needs the API token as `Authorization: Bearer TOKEN`\n"
                        .to_owned(),
                );
            }
        }
        let text = self.shared.metrics.encode(&self.shared.table.load());
        let (mut response, outcome) = local(StatusCode::OK, text);
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        (response, outcome)
    }

    /// `GET /healthz` on a host nothing is routed at: the router's own health.
    fn health(&self) -> (Response<ResponseBody>, Outcome) {
        let table = self.shared.table.load();
        if table.synced {
            local(
                StatusCode::OK,
                format!(
                    "ok: routing {} hostnames and {} TCP ports\n",
                    table.http.len(),
                    table.tcp.len()
                ),
            )
        } else {
            local(StatusCode::SERVICE_UNAVAILABLE, NOT_LOADED.to_owned())
        }
    }
}

fn upstream_uri(authority: &http::uri::Authority, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("a scheme, an authority and a path make a URI")
}

fn upstream_request(
    method: &Method,
    uri: Uri,
    headers: HeaderMap,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    // Endpoints speak HTTP/1.1, whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// The backend's response as the client gets it. A switch of protocols joins the two
/// upgraded connections once both sides have switched.
fn respond(
    mut response: Response<Incoming>,
    client_upgrade: Option<OnUpgrade>,
    in_flight: Option<InFlight>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    match client_upgrade {
        Some(client) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client, upstream));
            add_request_id(response.headers_mut(), request_id);
            response.map(|body| ResponseBody::Upstream { body, in_flight })
        }
        _ => finish(
            response.map(|body| ResponseBody::Upstream { body, in_flight }),
            request_id,
        ),
    }
}

/// A backend's response without its hop-by-hop headers, with the request's id.
fn finish(
    mut response: Response<ResponseBody>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    headers::strip_hop_by_hop(response.headers_mut(), false);
    add_request_id(response.headers_mut(), request_id);
    response
}

fn add_request_id(headers: &mut HeaderMap, request_id: &HeaderValue) {
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id.clone());
    }
}

/// Largest answer read whole before it is passed on.
const BUFFERED: u64 = 64 * 1024;

/// Whether an answer is small enough to read whole: its length is known and at most
/// [`BUFFERED`].
fn small(response: &Response<Incoming>) -> bool {
    response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= BUFFERED)
}

/// The body's bytes, in one piece. A body of one frame (most of them) is not copied.
async fn read_whole(body: &mut Incoming) -> Result<Bytes, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match (&mut first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(first), None) => {
                let mut both = BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }
    Ok(match joined {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Copies bytes both ways between an upgraded client connection and its backend until
/// either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "an upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "an upgraded connection ended with an error");
    }
}

/// A response of the router's own: a status and a line of text.
fn local(status: StatusCode, text: String) -> (Response<ResponseBody>, Outcome) {
    let mut response = Response::new(ResponseBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let outcome = Outcome {
        status,
        upstream: None,
        tries: 0,
    };
    (response, outcome)
}

/// The innermost cause of an error: the one that says what happened ("Connection
/// refused"), not the layers that passed it on.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
