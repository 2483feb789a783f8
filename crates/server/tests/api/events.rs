//! The event stream: live events, resuming from a cursor, topic filters, cells and
//! resync.

use serde_json::json;
use store::{LockKind, Store};

use crate::cells::{announce, cell};
use crate::harness::{Api, EventReader, Sse, lrp, task};

/// The next `n` events as (id, kind).
async fn take(reader: &mut EventReader, n: usize) -> Vec<(Option<u64>, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let e = reader.next().await;
        got.push((e.id, e.event));
    }
    got
}

fn kinds(ids: std::ops::RangeInclusive<u64>, kinds: &[&str]) -> Vec<(Option<u64>, String)> {
    ids.zip(kinds)
        .map(|(i, k)| (Some(i), (*k).to_owned()))
        .collect()
}

#[tokio::test]
async fn new_events_arrive_as_they_are_committed() {
    let api = Api::new();
    // Before the subscription: not shown to a tailing reader.
    api.call("POST", "/v1/tasks", Some(task("old"))).await;

    let mut events = api.events("/v1/events", &[]).await;
    api.call("POST", "/v1/lrps", Some(lrp("web", 2))).await;

    let created: Sse = events.next().await;
    assert_eq!(
        (created.id, created.event.as_str()),
        (Some(2), "lrp_created")
    );
    assert_eq!(created.data["seq"], 2);
    assert_eq!(created.data["kind"], "lrp_created");
    assert_eq!(created.data["data"]["name"], "web");
    assert_eq!(created.data["data"]["instances"], 2);
    assert!(created.data["at"].as_u64().unwrap() > 0);
    let instance = events.next().await;
    assert_eq!(instance.event, "instance_created");
    assert_eq!(
        (
            &instance.data["data"]["index"],
            &instance.data["data"]["state"]
        ),
        (&json!(0), &json!("UNCLAIMED"))
    );
    assert_eq!(events.next().await.id, Some(4));

    api.call("DELETE", "/v1/lrps/web", None).await;
    assert_eq!(
        take(&mut events, 3).await,
        kinds(
            5..=7,
            &["instance_removed", "instance_removed", "lrp_removed"]
        )
    );
    let removed = api.store.events_after(6, 1).await.unwrap();
    let data: serde_json::Value = serde_json::from_str(removed[0].data.get()).unwrap();
    assert_eq!(data, json!({"name": "web"}));
}

#[tokio::test]
async fn resuming_gets_exactly_the_later_events() {
    for (path, headers) in [
        ("/v1/events", vec![("last-event-id", "2")]),
        ("/v1/events?after=2", vec![]),
        // The header wins: it is what a reconnecting browser sends.
        ("/v1/events?after=0", vec![("last-event-id", "2")]),
    ] {
        let api = Api::new();
        api.call("POST", "/v1/lrps", Some(lrp("web", 2))).await; // 1-3
        api.call("POST", "/v1/tasks", Some(task("t"))).await; // 4

        let mut events = api.events(path, &headers).await;
        let later = kinds(3..=4, &["instance_created", "task_created"]);
        assert_eq!(take(&mut events, 2).await, later, "{path} {headers:?}");
        // Nothing else is pending: the next event is the next write.
        api.call("PUT", "/v1/domains/d", Some(json!({"ttl_seconds": 0})))
            .await;
        assert_eq!(
            take(&mut events, 1).await,
            kinds(5..=5, &["domain_changed"])
        );

        let mut all = api.events("/v1/events?after=0", &[]).await;
        assert_eq!(take(&mut all, 1).await, kinds(1..=1, &["lrp_created"]));
    }
}

#[tokio::test]
async fn topics_filter_the_stream() {
    let api = Api::new();
    api.call("POST", "/v1/lrps", Some(lrp("web", 1))).await; // 1-2
    api.call("POST", "/v1/tasks", Some(task("t"))).await; // 3
    api.call("PUT", "/v1/domains/d", Some(json!({"ttl_seconds": 0})))
        .await; // 4
    api.call("POST", "/v1/tasks/t/cancel", None).await; // 5

    let cases: &[(&str, &[(u64, &str)])] = &[
        ("task", &[(3, "task_created"), (5, "task_changed")]),
        (
            "instance,domain",
            &[(2, "instance_created"), (4, "domain_changed")],
        ),
        ("lrp", &[(1, "lrp_created")]),
    ];
    for (topics, expect) in cases {
        let mut events = api
            .events(&format!("/v1/events?after=0&topics={topics}"), &[])
            .await;
        let expect: Vec<_> = expect
            .iter()
            .map(|(i, k)| (Some(*i), (*k).to_owned()))
            .collect();
        assert_eq!(take(&mut events, expect.len()).await, expect, "{topics}");
    }
}

#[tokio::test]
async fn cell_presences_show_as_cells_and_other_locks_not_at_all() {
    let api = Api::new();
    let mut events = api.events("/v1/events?topics=cell", &[]).await;
    // Written straight to the store, as another server would: the poll finds them.
    announce(&api, "leader", LockKind::Lock, "server-1", 10_000).await;
    announce(&api, "router/r1", LockKind::Presence, "{}", 10_000).await;
    announce(
        &api,
        "cell/c1",
        LockKind::Presence,
        &cell("c1").to_string(),
        1_000,
    )
    .await;

    let appeared = events.next().await;
    assert_eq!(appeared.event, "cell_appeared");
    assert_eq!(appeared.data["kind"], "cell_appeared");
    assert_eq!(appeared.data["data"]["id"], "c1");
    assert_eq!(appeared.data["data"]["capacity"]["containers"], 100);

    api.clock.advance(1_000);
    let now = server::Clock::now(api.clock.as_ref());
    api.store.expire_locks(now).await.unwrap();
    let expired = events.next().await;
    assert_eq!(expired.event, "cell_expired");
    assert_eq!(expired.data["data"]["id"], "c1");
}

#[tokio::test]
async fn a_cursor_older_than_the_log_gets_a_resync_first() {
    let api = Api::new();
    api.call("POST", "/v1/lrps", Some(lrp("web", 3))).await; // 1-4
    api.store.prune_events(2).await.unwrap(); // keeps 3-4

    let mut events = api.events("/v1/events?after=1", &[]).await;
    let resync = events.next().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.id, Some(2));
    assert_eq!(resync.data["kind"], "resync");
    assert_eq!(
        take(&mut events, 2).await,
        kinds(3..=4, &["instance_created", "instance_created"])
    );

    // A cursor at the edge of what is kept missed nothing.
    let mut events = api.events("/v1/events?after=2", &[]).await;
    assert_eq!(
        take(&mut events, 1).await,
        kinds(3..=3, &["instance_created"])
    );

    // A cursor from the future (the log was reset): resync, then what comes next.
    let mut events = api.events("/v1/events", &[("last-event-id", "99")]).await;
    let resync = events.next().await;
    assert_eq!((resync.event.as_str(), resync.id), ("resync", Some(4)));
    api.call("POST", "/v1/tasks", Some(task("t"))).await;
    assert_eq!(take(&mut events, 1).await, kinds(5..=5, &["task_created"]));
}

#[tokio::test]
async fn events_committed_by_another_server_arrive_by_polling() {
    let api = Api::new();
    let other = api.beside();
    let mut events = api.events("/v1/events", &[]).await;
    api.call("POST", "/v1/tasks", Some(task("here"))).await;
    assert_eq!(take(&mut events, 1).await, kinds(1..=1, &["task_created"]));

    // The reader is polled first and waits; then the other server writes.
    let (event, created) = tokio::join!(
        events.next(),
        other.call("POST", "/v1/tasks", Some(task("there")))
    );
    assert_eq!(created.status, 201);
    assert_eq!(
        (event.id, event.data["data"]["id"].as_str()),
        (Some(2), Some("there"))
    );
}

#[tokio::test]
async fn a_reader_that_does_not_read_blocks_no_writer() {
    let api = Api::new();
    let mut stalled = api.events("/v1/events?after=0", &[]).await;
    for i in 0..300 {
        let created = api
            .call("POST", "/v1/tasks", Some(task(&format!("t{i}"))))
            .await;
        assert_eq!(created.status, 201);
    }
    // It reads at its own pace, from where it is, and misses nothing.
    for seq in 1..=300 {
        assert_eq!(stalled.next().await.id, Some(seq));
    }
}
