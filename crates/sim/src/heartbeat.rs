//! Heartbeats: one request renews the presence of every cell of the fleet (or of up to
//! `cells_per_request` of them, for fleets larger than that), as often as the server's
//! reply asks.

use std::sync::Arc;
use std::time::Duration;

use api::Heartbeat;
use client::Client;
use model::Cell;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::stats::{self, Counters};

/// The interval before the server has named one.
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest interval honoured, whatever the server says.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

pub(crate) async fn run(
    client: Client,
    cells: Vec<Cell>,
    cells_per_request: usize,
    stats: Arc<Counters>,
    mut stopping: watch::Receiver<bool>,
) {
    let heartbeats: Vec<Heartbeat> = cells
        .chunks(cells_per_request)
        .map(|chunk| Heartbeat {
            cells: chunk.to_vec(),
        })
        .collect();
    let mut interval = FIRST_INTERVAL;
    let mut failing = false;
    loop {
        let pass = async {
            for heartbeat in &heartbeats {
                match client.heartbeat(heartbeat).await {
                    Ok(reply) => {
                        stats::add(&stats.heartbeats, 1);
                        interval = Duration::from_millis(reply.interval_ms).max(MIN_INTERVAL);
                        if failing {
                            info!("heartbeats are accepted again");
                            failing = false;
                        }
                    }
                    Err(error) => {
                        stats::add(&stats.heartbeat_errors, 1);
                        // Once per failing streak: a server that is down would
                        // otherwise fill the log every second.
                        if !failing {
                            warn!(%error, "heartbeat failed; retrying every {interval:?}");
                            failing = true;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = pass => {}
            () = crate::stopped(&mut stopping) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = crate::stopped(&mut stopping) => return,
        }
    }
}
