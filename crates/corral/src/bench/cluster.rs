//! What the container benchmarks (`start`, `router`, `image`) run against: a server on
//! SQLite in the run's directory and one real cell (agent and runtime helper), in this
//! process, started and stopped the same way for each.

use std::path::Path;

use anyhow::{Context, Result};
use client::Client;
use server::{Server, ServerOptions, Timings};
use tokio::task::JoinHandle;

use crate::cell_cmd::{self, CellRunArgs, RunningCell};
use crate::cli::Global;
use crate::config::ProcessEnv;

/// The server and the cell of one run.
pub(super) struct Cluster {
    pub server: Server,
    pub cell: RunningCell,
    /// `http://` URL of the API.
    pub api: String,
    pub token: String,
    runner: JoinHandle<()>,
}

impl Cluster {
    /// Starts the server (its database and data under `dir`), then the cell `cell_args`
    /// describes; the server is shut down again when the cell cannot start.
    pub async fn start(dir: &Path, cell_args: &CellRunArgs) -> Result<Cluster> {
        let server = server::start(ServerOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            db_url: format!("sqlite:{}", dir.join("corral.db").display()),
            data_dir: dir.join("server"),
            timings: Timings::default(),
        })
        .await
        .context("start the server")?;
        let api = format!("http://{}", server.addr());
        let token = server.token().to_owned();
        let cell = match cell_cmd::prepare(
            cell_args,
            &Global::default(),
            &ProcessEnv,
            Some((api.clone(), Some(token.clone()))),
        )
        .await
        {
            Ok(cell) => cell,
            Err(e) => {
                let _ = server.shutdown().await;
                return Err(e.context("start the cell"));
            }
        };
        let agent = cell.agent.clone();
        let runner = tokio::spawn(async move {
            if let Err(e) = agent.run(std::future::pending()).await {
                eprintln!("The cell stopped: {e:#}");
            }
        });
        Ok(Cluster {
            server,
            cell,
            api,
            token,
            runner,
        })
    }

    /// A client of the API with the server's token.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.api, Some(self.token.clone()))?)
    }

    /// Stops the cell (its runtime helper destroys the containers) and the server.
    pub async fn stop(self) -> Result<()> {
        self.runner.abort();
        self.cell.agent.stopping();
        if let Err(e) = self.cell.runtime.shutdown().await {
            eprintln!("Could not stop the cell's containers: {e:#}");
        }
        self.server.shutdown().await.context("shut the server down")
    }
}

/// Waits until the cell `id` has joined, for at most `within`.
pub(super) async fn until_cell_joined(
    client: &Client,
    id: &str,
    within: std::time::Duration,
) -> Result<()> {
    let started = std::time::Instant::now();
    while !client
        .cells()
        .await
        .unwrap_or_default()
        .iter()
        .any(|c| c.id.as_str() == id)
    {
        if started.elapsed() > within {
            anyhow::bail!("the cell did not join within {within:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
