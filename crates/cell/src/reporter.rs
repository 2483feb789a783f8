//! Sends reports to the server in order, batching whatever queued up while the previous
//! batch was in flight, and retrying until the server answers.

use std::time::Duration;

use api::{Report, ReportResult, Reports};
use client::Client;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// A report and who wants its result.
pub(crate) type Queued = (Report, Option<oneshot::Sender<ReportResult>>);

#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Reporter {
    pub(crate) fn start(client: Client) -> Reporter {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, rx));
        Reporter { queue }
    }

    /// Queues a report whose result nobody waits for.
    pub(crate) fn send(&self, report: Report) {
        let _ = self.queue.send((report, None));
    }

    /// Sends a report and waits for its result (`None` if the agent is stopping).
    pub(crate) async fn ask(&self, report: Report) -> Option<ReportResult> {
        let (tx, rx) = oneshot::channel();
        self.queue.send((report, Some(tx))).ok()?;
        rx.await.ok()
    }
}

async fn send_loop(client: Client, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(item) => batch.push(item),
                None => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            batch.push(item);
        }
        let reports = Reports {
            reports: batch.iter().map(|(r, _)| r.clone()).collect(),
        };
        let mut backoff = Duration::from_millis(100);
        let results = loop {
            match client.report(&reports).await {
                Ok(reply) => break reply.results,
                Err(e) => {
                    warn!(
                        "sending {} reports failed, retrying: {e}",
                        reports.reports.len()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        for ((_, tx), result) in batch.drain(..).zip(results) {
            if let Some(tx) = tx {
                let _ = tx.send(result);
            }
        }
    }
}
