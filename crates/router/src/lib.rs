//! Corral's router: HTTP by hostname and TCP by port to the instances of LRPs, with the
//! routing table kept from the server's event stream.
//!
//! - [`sync`] follows the server: subscribe to the `lrp` and `instance` events, list
//!   the LRPs and their instances, then apply the stream's events to a
//!   [`routes::Table`]; after a reconnect or a `resync` event, all over again. Each
//!   batch of changes publishes a new [`table::Live`] with one atomic swap, so requests
//!   in flight and open connections keep the table they started with.
//! - [`proxy`] serves HTTP/1.1 and HTTP/2 (prior knowledge, no TLS) on hyper, routes by
//!   `Host`, balances over the endpoints, retries idempotent requests without a body on
//!   another endpoint when a backend cannot be reached or breaks off before its answer
//!   is complete (answers of up to 64 KiB to such requests are read whole before they
//!   are passed on, when another endpoint is left to try), passes upgrades (WebSocket)
//!   through, and adds `X-Forwarded-For/Proto/Host` and `X-Request-Id`. Upstream
//!   connections are pooled and kept alive.
//! - [`tcp`] listens on the external ports of TCP routes within the range it is given
//!   and splices each connection to an endpoint.
//!
//! Answers of its own, each with a one-line text body naming the problem: 404 for a
//! host no LRP is routed at, 503 when the LRPs routed there have no running instance,
//! 502 when no endpoint could be reached, and 503 for everything until the first table
//! is loaded. `GET /healthz` on a host that is not routed (an IP address, `localhost`,
//! no `Host`) is the router's own health: 200 once the table has been loaded from the
//! server, 503 before.

#![forbid(unsafe_code)]

mod body;
mod headers;
mod metrics;
mod proxy;
mod sync;
mod table;
mod tcp;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use client::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How requests are spread over the endpoints of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight from this router (ties in turn).
    LeastRequest,
}

/// What a router serves and how.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Where HTTP is served (port 0 picks a free one).
    pub http: SocketAddr,
    /// External ports of TCP routes to listen on (on the HTTP address's IP); none when
    /// `None`.
    pub tcp_ports: Option<RangeInclusive<u16>>,
    pub balance: Balance,
}

/// A router that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running router: its HTTP listener, its TCP listeners and the task that follows
/// the server. Dropping it stops them; connections already open end on their own.
#[derive(Debug)]
pub struct Router {
    http_addr: SocketAddr,
    state: Arc<proxy::Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Router {
    /// Binds the HTTP address and starts following the server at `client`. Routing
    /// starts once the table is loaded; until then every request gets a 503 that
    /// says so.
    pub async fn start(client: Client, options: RouterOptions) -> Result<Router, RouterError> {
        let listener =
            TcpListener::bind(options.http)
                .await
                .map_err(|source| RouterError::Listen {
                    addr: options.http,
                    source,
                })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| RouterError::Listen {
                addr: options.http,
                source,
            })?;
        let (published, changes) = watch::channel(());
        let state = Arc::new(proxy::Shared::new(options.balance, client.token()));
        let mut tasks = vec![
            tokio::spawn(sync::follow(
                client,
                sync::Publisher::new(state.clone(), published),
            )),
            tokio::spawn(proxy::serve(listener, state.clone())),
        ];
        if let Some(ports) = options.tcp_ports {
            tasks.push(tokio::spawn(tcp::serve(
                http_addr.ip(),
                ports,
                state.clone(),
                changes,
            )));
        }
        tracing::info!(http = %http_addr, balance = ?options.balance, "router started");
        Ok(Router {
            http_addr,
            state,
            tasks,
        })
    }

    /// The address HTTP is served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Whether the routing table has been loaded from the server.
    pub fn synced(&self) -> bool {
        self.state.table.load().synced
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
