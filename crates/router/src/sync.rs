//! Following the server: the routing table from a listing and the event stream.
//!
//! One pass: subscribe to the `lrp` and `instance` events (the server has answered, so
//! no later change is missed), list the LRPs and each one's instances, build the table
//! and publish it, then apply the stream's events in order, publishing after each
//! batch. Events committed between the subscription and the listing arrive too; the
//! table's ordering rules ([`routes::Table`]) make them harmless. A `resync` event
//! (the server no longer has events this reader missed), a lost stream or a failed
//! listing starts a new pass; meanwhile the last table keeps routing.

use std::time::Duration;

use api::EventMessage;
use client::{Client, ClientError};
use futures::{FutureExt, StreamExt, TryStreamExt};
use model::{Instance, Lrp, Name, Presence};
use routes::{Change, Table};
use serde::Deserialize;
use tokio::sync::watch;

use crate::proxy::Shared;
use crate::table::Builder;

/// The topics the router follows.
const TOPICS: &[&str] = &["lrp", "instance"];
/// Instance listings in flight at once during a resync.
const LISTINGS: usize = 8;
/// Most events applied before a table is published, so a long burst still shows.
const BATCH: usize = 1024;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Publishes tables to the proxy and tells the TCP side.
pub(crate) struct Publisher {
    shared: std::sync::Arc<Shared>,
    builder: Builder,
    published: watch::Sender<()>,
}

impl Publisher {
    pub fn new(shared: std::sync::Arc<Shared>, published: watch::Sender<()>) -> Publisher {
        Publisher {
            shared,
            builder: Builder::default(),
            published,
        }
    }

    /// Publishes the table; `changed_at` holds the event timestamps (milliseconds since
    /// the Unix epoch) of the changes it is the first to hold.
    fn publish(&mut self, table: &Table, changed_at: &[u64]) {
        let live = self.builder.build(table.routing());
        tracing::debug!(
            hostnames = live.http.len(),
            tcp_ports = live.tcp.len(),
            "routing table published"
        );
        self.shared.table.store(live);
        self.published.send_replace(());
        let now = now_ms();
        self.shared.metrics.published(
            changed_at
                .iter()
                .map(|at| Duration::from_millis(now.saturating_sub(*at))),
        );
    }
}

/// Follows the server until the task is aborted.
pub(crate) async fn follow(client: Client, mut publisher: Publisher) {
    let mut retry = FIRST_RETRY;
    loop {
        match pass(&client, &mut publisher, &mut retry).await {
            Ok(why) => tracing::info!("{why}: loading the routing table again"),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot follow the server; routing with the table as it is, trying again in {retry:?}"
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// One pass: subscribe, list, then follow the stream until it ends; why it ended.
async fn pass(
    client: &Client,
    publisher: &mut Publisher,
    retry: &mut Duration,
) -> Result<&'static str, ClientError> {
    let mut events = client.subscribe(None, TOPICS).await?;
    let mut table = list(client).await?;
    publisher.publish(&table, &[]);
    tracing::info!(
        lrps = table.lrps().count(),
        instances = table.instances().count(),
        hostnames = table.routing().http().len(),
        "routing table loaded from {}",
        client.api_url()
    );
    *retry = FIRST_RETRY;
    // When each change of a batch happened, for the propagation latency.
    let mut changed_at: Vec<u64> = Vec::new();
    loop {
        let Some(first) = events.next().await else {
            return Ok("the server closed the event stream");
        };
        let mut changed = false;
        changed_at.clear();
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(event) = next {
            let event = event?;
            if event.kind == "resync" {
                return Ok("the server says events were missed");
            }
            if let Some(change) = change(&event)
                && table.apply(event.seq, change)
            {
                changed = true;
                changed_at.push(event.at);
            }
            applied += 1;
            // Whatever else has arrived joins this batch; nothing is waited for.
            next = if applied < BATCH {
                events.next().now_or_never().flatten()
            } else {
                None
            };
        }
        // Events come in order: tombstones guard against nothing any more.
        table.forget_removed();
        if changed {
            publisher.publish(&table, &changed_at);
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch, as event timestamps are.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every LRP and every instance row, as the server has them now.
async fn list(client: &Client) -> Result<Table, ClientError> {
    let lrps = client.lrps(None).await?;
    let names: Vec<Name> = lrps.iter().map(|l| l.spec.name.clone()).collect();
    let instances: Vec<Vec<Instance>> = futures::stream::iter(names)
        .map(|name| async move {
            match client.instances(name.as_str()).await {
                // Removed since the LRPs were listed: its removal is in the stream.
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                other => other,
            }
        })
        .buffer_unordered(LISTINGS)
        .try_collect()
        .await?;
    Ok(Table::rebuild(lrps, instances.into_iter().flatten()))
}

/// The change an event reports, if it is one the table follows and it decodes.
fn change(event: &EventMessage) -> Option<Change> {
    #[derive(Deserialize)]
    struct LrpRemoved {
        name: Name,
    }
    #[derive(Deserialize)]
    struct InstanceRemoved {
        lrp: Name,
        index: u32,
        presence: Presence,
    }
    let data = event.data.get();
    let decoded = match event.kind.as_str() {
        "lrp_created" | "lrp_changed" => {
            serde_json::from_str::<Box<Lrp>>(data).map(Change::LrpUpserted)
        }
        "lrp_removed" => {
            serde_json::from_str::<LrpRemoved>(data).map(|r| Change::LrpRemoved { name: r.name })
        }
        "instance_created" | "instance_changed" => {
            serde_json::from_str::<Instance>(data).map(Change::InstanceUpserted)
        }
        "instance_removed" => {
            serde_json::from_str::<InstanceRemoved>(data).map(|r| Change::InstanceRemoved {
                lrp: r.lrp,
                index: r.index,
                presence: r.presence,
            })
        }
        _ => return None,
    };
    match decoded {
        Ok(change) => Some(change),
        Err(e) => {
            tracing::warn!(seq = event.seq, kind = %event.kind, error = %e, "skipping an event that does not decode");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> EventMessage {
        EventMessage {
            seq: 1,
            kind: kind.to_owned(),
            at: 0,
            data: serde_json::value::RawValue::from_string(data.to_owned()).unwrap(),
        }
    }

    #[test]
    fn removals_decode_from_their_keys() {
        assert_eq!(
            change(&event("lrp_removed", r#"{"name":"web"}"#)),
            Some(Change::LrpRemoved {
                name: Name::parse("n", "web").unwrap()
            })
        );
        assert_eq!(
            change(&event(
                "instance_removed",
                r#"{"lrp":"web","index":2,"presence":"EVACUATING"}"#
            )),
            Some(Change::InstanceRemoved {
                lrp: Name::parse("n", "web").unwrap(),
                index: 2,
                presence: Presence::Evacuating,
            })
        );
        assert_eq!(change(&event("task_created", "{}")), None);
        assert_eq!(change(&event("instance_changed", "{}")), None);
    }
}
