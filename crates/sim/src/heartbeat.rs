//! Heartbeats: one request renews the presence of every cell of the fleet (or of up to
//! `cells_per_request` of them, for fleets larger than that, sent together), as often as
//! the server's reply asks.

use std::sync::Arc;
use std::time::Duration;

use api::Heartbeat;
use client::Client;
use model::Cell;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
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
    let heartbeats: Arc<[Heartbeat]> = cells
        .chunks(cells_per_request)
        .map(|chunk| Heartbeat {
            cells: chunk.to_vec(),
        })
        .collect();
    let mut interval = FIRST_INTERVAL;
    let mut failing = false;
    let mut next = Instant::now();
    loop {
        // Every cell's heartbeat is due once per interval, however long the server
        // takes to answer: the requests of a pass go out together, and the next pass
        // is timed from the start of this one. Sending them one after another and
        // then sleeping a whole interval made the period the interval plus the time
        // to answer every request, so a busy server saw the cells of a large fleet
        // less often than their TTL and let them expire.
        let mut requests = JoinSet::new();
        for i in 0..heartbeats.len() {
            let (client, heartbeats) = (client.clone(), heartbeats.clone());
            requests.spawn(async move { client.heartbeat(&heartbeats[i]).await });
        }
        let answered = async {
            let mut answers = Vec::with_capacity(heartbeats.len());
            while let Some(answer) = requests.join_next().await {
                answers.extend(answer.ok());
            }
            answers
        };
        let answers = tokio::select! {
            answers = answered => answers,
            () = crate::stopped(&mut stopping) => return,
        };
        for answer in answers {
            match answer {
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
                    // Once per failing streak: a server that is down would otherwise
                    // fill the log every second.
                    if !failing {
                        warn!(%error, "heartbeat failed; retrying every {interval:?}");
                        failing = true;
                    }
                }
            }
        }
        // A pass that took longer than the interval is followed at once by the next,
        // not by a burst of the ones missed.
        next = (next + interval).max(Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = crate::stopped(&mut stopping) => return,
        }
    }
}
