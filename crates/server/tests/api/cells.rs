//! Cells: live cell presences, decoded; the rest skipped.

use serde_json::json;
use store::{LockKind, LockRequest, Store};

use server::Clock;

use crate::harness::Api;

pub fn cell(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "address": format!("http://{id}:1800"),
        "zone": "z1",
        "capacity": {"memory_mb": 4096, "disk_mb": 8192, "containers": 100},
    })
}

pub async fn announce(api: &Api, key: &str, kind: LockKind, value: &str, ttl_ms: u64) {
    api.store
        .acquire(LockRequest {
            key: key.to_owned(),
            owner: key.to_owned(),
            kind,
            value: value.to_owned(),
            ttl_ms,
            now: api.clock.now(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn lists_live_cells_only() {
    let api = Api::new();
    announce(
        &api,
        "cell/c1",
        LockKind::Presence,
        &cell("c1").to_string(),
        10_000,
    )
    .await;
    announce(
        &api,
        "cell/c2",
        LockKind::Presence,
        &cell("c2").to_string(),
        1_000,
    )
    .await;
    announce(&api, "cell/broken", LockKind::Presence, "not json", 10_000).await;
    announce(&api, "leader", LockKind::Lock, "server-1", 10_000).await;

    let ids = |body: &serde_json::Value| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let list = api.get("/v1/cells").await;
    assert_eq!(list.status, 200);
    assert_eq!(ids(&list.body), ["c1", "c2"]);
    let c1 = &list.body["items"][0];
    assert_eq!(
        (&c1["address"], &c1["zone"], &c1["capacity"]["containers"]),
        (&json!("http://c1:1800"), &json!("z1"), &json!(100))
    );

    // c2's TTL passes.
    api.clock.advance(1_000);
    assert_eq!(ids(&api.get("/v1/cells").await.body), ["c1"]);
}
