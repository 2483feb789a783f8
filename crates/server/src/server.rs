//! A running server: opens the store, loads or creates the API token, binds the
//! listener and serves the API until shut down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use store::sql::SqlStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::SystemClock;
use crate::{AppState, Timings, auth, leader, router};

/// How long a graceful shutdown waits for requests in flight before it cuts them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `corral server` is started with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen; port 0 picks a free port (see [`Server::addr`]).
    pub listen: SocketAddr,
    /// `sqlite:PATH` or a `postgres://` URL.
    pub db_url: String,
    /// Holds the API token (`token`, mode 0600); created with mode 0700.
    pub data_dir: PathBuf,
    /// Heartbeat, presence and leader timers, and the convergence interval.
    pub timings: Timings,
}

/// A server that is serving. Dropping it leaves it running in the background; call
/// [`Server::shutdown`] to stop it.
pub struct Server {
    addr: SocketAddr,
    token_path: PathBuf,
    token: String,
    state: AppState,
    store: SqlStore,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
    /// Competes for the leader lock and, while it holds it, schedules and converges.
    leading: JoinHandle<()>,
    owner: String,
}

/// Opens the store (running its migrations), loads or creates the token, binds and
/// starts serving.
pub async fn start(options: ServerOptions) -> anyhow::Result<Server> {
    let (token_path, token) = auth::load_or_create_token(&options.data_dir)?;
    let store = SqlStore::connect(&options.db_url)
        .await
        .with_context(|| format!("open the store at {}", redact(&options.db_url)))?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listen on {}", options.listen))?;
    let addr = listener
        .local_addr()
        .context("read the address listened on")?;
    let mut state = AppState::new(
        Arc::new(store.clone()),
        token.clone(),
        Arc::new(SystemClock),
    );
    state.timings = Arc::new(options.timings.clone());
    let app = router(state.clone());
    let owner = format!("server-{}", uuid::Uuid::new_v4());
    let leading = tokio::spawn(leader::run(state.clone(), owner.clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // Either a shutdown request or a dropped sender stops the server.
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, token = %token_path.display(), "serving the API");
    Ok(Server {
        addr,
        token_path,
        token,
        state,
        store,
        stop,
        serving,
        leading,
        owner,
    })
}

/// Leaves the token out, so that no log line can carry it.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("token_path", &self.token_path)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Runs one convergence pass now, the same pass the leader's converger runs on its
    /// timer (fenced with this server's leader lock), and returns how long it took:
    /// reading desired and actual state, deciding, and applying what it decided. For
    /// benchmarks and diagnostics; fails unless this server holds the leader lock.
    pub async fn converge_now(&self) -> anyhow::Result<Duration> {
        let now = self.state.now();
        let lock = self
            .state
            .store
            .list_locks(leader::LOCK, now)
            .await?
            .into_iter()
            .find(|record| record.key == leader::LOCK && record.owner == self.owner)
            .context("this server does not hold the leader lock (yet)")?;
        let fence = store::Fence {
            key: lock.key,
            token: lock.fence,
        };
        let started = std::time::Instant::now();
        crate::converger::pass(&self.state, &fence).await?;
        Ok(started.elapsed())
    }

    /// What the store's group-commit writer has done since the server started: write
    /// requests, transactions and where their time went. For benchmarks.
    pub fn store_stats(&self) -> store::sql::WriterStats {
        self.store.stats()
    }

    /// The highest event sequence number this server's own commits have reached (0
    /// before its first): every change is one event, so this counts the changes it made.
    /// Free to read, unlike the store's event bounds. For benchmarks.
    pub fn newest_event(&self) -> u64 {
        *self.state.hub.subscribe().borrow()
    }

    /// Stops accepting connections, ends the event streams, lets requests in flight
    /// finish (for up to 10 s) and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Server {
            state,
            store,
            stop,
            mut serving,
            leading,
            owner,
            ..
        } = self;
        // Stop leading first and hand the lock back, so that a standby server takes
        // over at once rather than after the lock's TTL.
        leading.abort();
        let _ = leading.await;
        if let Err(e) = state.store.release(leader::LOCK, &owner).await {
            tracing::warn!(error = %e, "could not release the leader lock");
        }
        state.hub.close();
        let _ = stop.send(());
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
            Ok(joined) => flatten(joined),
            Err(_) => {
                tracing::warn!("requests still in flight after the grace period; cutting them off");
                serving.abort();
                Ok(())
            }
        };
        store.close().await;
        tracing::info!("server stopped");
        served
    }

    /// Serves until the service stops by itself (it fails), then closes the store.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Server {
            store,
            stop,
            serving,
            leading,
            ..
        } = self;
        let served = flatten(serving.await);
        leading.abort();
        // Held until here: dropping it would stop the server.
        drop(stop);
        store.close().await;
        served
    }
}

fn flatten(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined
        .context("the HTTP service task failed")?
        .context("serve the API")
}

/// The database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://corral:secret@db:5432/corral"),
            "postgres://***@db:5432/corral"
        );
        assert_eq!(
            redact("sqlite:/var/lib/corral/db"),
            "sqlite:/var/lib/corral/db"
        );
    }
}
