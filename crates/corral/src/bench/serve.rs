//! `corral bench serve` (hidden): the server a benchmark measures, in a process of its
//! own so that its memory is its own. It is the real server (`server::start`, default
//! timings) plus a line protocol on stdin/stdout for what a benchmark asks of it:
//!
//! - on start it prints one JSON line, [`Hello`]: the API's URL and token;
//! - `stats` answers [`ServerStats`]: the store writer's counters and the newest event;
//! - `converge` runs one convergence pass now and answers [`Converged`];
//! - end of input shuts the server down.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use server::ServerOptions;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The store: sqlite:PATH or postgres://...
    #[arg(long, value_name = "URL")]
    pub db: String,
    /// Where the server keeps its token
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// The first line the child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub api: String,
    pub token: String,
}

/// The answer to `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Write requests the store's writer answered (commits, lock renewals, expiries).
    pub requests: u64,
    /// Database transactions they took.
    pub transactions: u64,
    /// Writer time applying requests inside transactions, in ms.
    pub apply_ms: f64,
    /// Writer time committing transactions, in ms.
    pub commit_ms: f64,
    /// The newest event's sequence number: every change is one event.
    pub newest_event: u64,
}

/// The answer to `converge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Converged {
    pub ms: Option<f64>,
    pub error: Option<String>,
}

pub async fn run(args: &ServeArgs) -> Result<()> {
    let server = server::start(ServerOptions {
        listen: args.listen,
        db_url: args.db.clone(),
        data_dir: args.data_dir.clone(),
        timings: Default::default(),
    })
    .await
    .context("start the server")?;
    say(&Hello {
        api: format!("http://{}", server.addr()),
        token: server.token().to_owned(),
    })?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("read stdin")? {
        match line.trim() {
            "stats" => {
                let writer = server.store_stats();
                let newest_event = server.newest_event();
                say(&ServerStats {
                    requests: writer.requests,
                    transactions: writer.transactions,
                    apply_ms: writer.apply.as_secs_f64() * 1000.0,
                    commit_ms: writer.commit.as_secs_f64() * 1000.0,
                    newest_event,
                })?;
            }
            "converge" => {
                let answer = match server.converge_now().await {
                    Ok(took) => Converged {
                        ms: Some(took.as_secs_f64() * 1000.0),
                        error: None,
                    },
                    Err(e) => Converged {
                        ms: None,
                        error: Some(format!("{e:#}")),
                    },
                };
                say(&answer)?;
            }
            other => say(&serde_json::json!({ "error": format!("unknown command {other:?}") }))?,
        }
    }
    server.shutdown().await
}

fn say(message: &impl Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, message)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
