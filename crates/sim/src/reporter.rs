//! The reporter: one task that collects the reports of every cell in the fleet and
//! sends them in batches, one request at a time so that the server applies them in the
//! order they happened. The outcome of each batch goes back to the fleet's loop, which
//! acts on `Stale` answers and on accepted `TaskStarted` reports.

use std::sync::Arc;
use std::time::Duration;

use api::{Report, Reports};
use client::{Client, ClientError};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::fleet::Event;
use crate::stats::{self, Counters};

/// The first wait before resending a batch the server could not take, doubled on each
/// failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the last flush on shutdown may take.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

pub(crate) struct Reporter {
    pub(crate) client: Client,
    /// Most reports in one request.
    pub(crate) batch: usize,
    /// How long a report may wait for others to share its request.
    pub(crate) delay: Duration,
    pub(crate) stats: Arc<Counters>,
    pub(crate) outcomes: mpsc::UnboundedSender<Event>,
}

impl Reporter {
    /// Runs until the fleet's loop is gone (it holds the other end of `reports`), then
    /// flushes what is left once.
    pub(crate) async fn run(
        self,
        mut reports: mpsc::UnboundedReceiver<Report>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut queue: Vec<Report> = Vec::new();
        let mut open = true;
        while open {
            if queue.is_empty() {
                match reports.recv().await {
                    Some(report) => queue.push(report),
                    None => break,
                }
            }
            // Let others join the batch for a moment, unless it is full already.
            let deadline = Instant::now() + self.delay;
            while queue.len() < self.batch {
                match reports.try_recv() {
                    Ok(report) => {
                        queue.push(report);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                tokio::select! {
                    report = reports.recv() => match report {
                        Some(report) => queue.push(report),
                        None => {
                            open = false;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            let take = queue.len().min(self.batch);
            let batch: Vec<Report> = queue.drain(..take).collect();
            if *stopping.borrow() {
                self.flush_once(batch).await;
            } else {
                self.send(batch, &mut stopping).await;
            }
        }
        for batch in queue.chunks(self.batch) {
            self.flush_once(batch.to_vec()).await;
        }
    }

    /// Sends one batch, retrying while the server is unreachable or unavailable, and
    /// hands the outcome to the fleet's loop. A batch the server refuses (a 4xx) is
    /// dropped: sending it again would be refused again, and would hold up every later
    /// report.
    async fn send(&self, batch: Vec<Report>, stopping: &mut watch::Receiver<bool>) {
        let reports = Reports { reports: batch };
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            match self.client.report(&reports).await {
                Ok(reply) => {
                    if failures > 0 {
                        info!("reports are accepted again");
                    }
                    return self.answered(reports.reports, Some(reply.results));
                }
                Err(error) if retryable(&error) && !*stopping.borrow() => {
                    if failures == 0 {
                        warn!(%error, count = reports.reports.len(), "sending reports failed; retrying");
                    }
                    failures += 1;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = crate::stopped(stopping) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    error!(%error, count = reports.reports.len(), "the server refused reports: dropping them");
                    return self.dropped(reports.reports);
                }
            }
        }
    }

    /// On shutdown: one try, bounded in time.
    async fn flush_once(&self, batch: Vec<Report>) {
        let reports = Reports { reports: batch };
        match tokio::time::timeout(FINAL_FLUSH, self.client.report(&reports)).await {
            Ok(Ok(reply)) => self.answered(reports.reports, Some(reply.results)),
            Ok(Err(error)) => {
                warn!(%error, count = reports.reports.len(), "the last reports could not be sent");
                self.dropped(reports.reports);
            }
            Err(_) => {
                warn!(
                    count = reports.reports.len(),
                    "the last reports were not answered in time"
                );
                self.dropped(reports.reports);
            }
        }
    }

    fn answered(&self, reports: Vec<Report>, results: Option<Vec<api::ReportResult>>) {
        let count = reports.len() as u64;
        stats::add(&self.stats.reports_sent, count);
        stats::add(&self.stats.report_batches, 1);
        self.tell(reports, results);
    }

    fn dropped(&self, reports: Vec<Report>) {
        stats::add(&self.stats.reports_dropped, reports.len() as u64);
        self.tell(reports, None);
    }

    fn tell(&self, reports: Vec<Report>, results: Option<Vec<api::ReportResult>>) {
        // The fleet's loop is gone on shutdown; then nobody needs the outcome.
        let _ = self.outcomes.send(Event::Reported {
            reports,
            results,
            at: Instant::now(),
        });
    }
}

/// Whether sending again may succeed: the server was unreachable or said it is
/// unavailable, rather than refusing these reports.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) => true,
        ClientError::Api { status, .. } => *status >= 500 || *status == 429,
        ClientError::Decode(_) | ClientError::InvalidUrl { .. } => false,
    }
}
