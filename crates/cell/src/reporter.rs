//! Sends reports to the server in order, batching whatever queued up while the previous
//! batch was in flight, and retrying until the server answers.

use std::time::Duration;

use api::{Report, ReportResult, Reports};
use client::Client;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

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
        match deliver(&client, &batch).await {
            Ok(results) => {
                for ((_, tx), result) in batch.drain(..).zip(results) {
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                }
            }
            // Refused for good: one report of the batch is at fault. Each is sent
            // alone, so the others still get through and only that one is dropped
            // (whoever waits for it gets no answer); the queue never stalls on it.
            Err(refused) => {
                for (report, tx) in batch.drain(..) {
                    let single = [(report, None)];
                    match deliver(&client, &single).await {
                        Ok(mut results) => {
                            if let (Some(tx), Some(result)) = (tx, results.pop()) {
                                let _ = tx.send(result);
                            }
                        }
                        Err(e) => {
                            error!(report = ?single[0].0, error = %e, "the server refuses a report; it is dropped");
                        }
                    }
                }
                if !refused.is_empty() {
                    warn!("{refused}");
                }
            }
        }
    }
}

/// Sends `batch` until the server answers. A refusal that sending again cannot change
/// (a 4xx other than 408 or 429: the request itself is at fault) is returned.
async fn deliver(client: &Client, batch: &[Queued]) -> Result<Vec<ReportResult>, String> {
    let reports = Reports {
        reports: batch.iter().map(|(r, _)| r.clone()).collect(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.report(&reports).await {
            Ok(reply) => return Ok(reply.results),
            Err(e)
                if e.status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429) =>
            {
                return Err(if batch.len() > 1 {
                    format!(
                        "the server refused a batch of {} reports ({e}); sending them one by one",
                        batch.len()
                    )
                } else {
                    e.to_string()
                });
            }
            Err(e) => {
                warn!(
                    "sending {} reports failed, retrying: {e}",
                    reports.reports.len()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use api::ReportsReply;
    use axum::Json;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use model::Name;

    use super::*;

    fn stopped(instance_id: &str) -> Report {
        Report::InstanceStopped {
            cell: Name::parse("cell", "c").unwrap(),
            lrp: Name::parse("lrp", "web").unwrap(),
            index: 0,
            instance_id: instance_id.to_owned(),
        }
    }

    /// A server that refuses any batch holding the report about `bad` (422), answers
    /// the rest, and records what it applied.
    async fn server(applied: Arc<Mutex<Vec<String>>>) -> String {
        let app = axum::Router::new().route(
            "/v1/cells/reports",
            axum::routing::post(move |Json(body): Json<Reports>| {
                let applied = applied.clone();
                async move {
                    let ids: Vec<String> = body
                        .reports
                        .iter()
                        .map(|r| match r {
                            Report::InstanceStopped { instance_id, .. } => instance_id.clone(),
                            _ => String::new(),
                        })
                        .collect();
                    if ids.iter().any(|id| id == "bad") {
                        return (StatusCode::UNPROCESSABLE_ENTITY, "no").into_response();
                    }
                    let results = vec![ReportResult::Ok; ids.len()];
                    applied.lock().unwrap().extend(ids);
                    Json(ReportsReply { results }).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_report_does_not_stall_the_others() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let url = server(applied.clone()).await;
        let reporter = Reporter::start(Client::new(&url, None).expect("an http:// URL"));
        reporter.send(stopped("first"));
        reporter.send(stopped("bad"));
        let answer = tokio::time::timeout(Duration::from_secs(20), reporter.ask(stopped("after")))
            .await
            .expect("the report after the refused one is answered");
        assert_eq!(answer, Some(ReportResult::Ok));
        let applied = applied.lock().unwrap().clone();
        assert!(applied.contains(&"first".to_owned()) && applied.contains(&"after".to_owned()));
        assert!(!applied.contains(&"bad".to_owned()));
    }
}
