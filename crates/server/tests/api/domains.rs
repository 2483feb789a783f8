//! Domains: upsert with a TTL or forever, and list.

use serde_json::json;

use crate::harness::{Api, START};

#[tokio::test]
async fn upsert_and_list() {
    let api = Api::new();
    let fresh = api
        .call("PUT", "/v1/domains/cf", Some(json!({"ttl_seconds": 60})))
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(
        fresh.body,
        json!({"name": "cf", "expires_at": START.as_millis() + 60_000})
    );

    let forever = api
        .call(
            "PUT",
            "/v1/domains/default",
            Some(json!({"ttl_seconds": 0})),
        )
        .await;
    assert_eq!(forever.body, json!({"name": "default"}));

    api.clock.advance(10_000);
    let renewed = api
        .call("PUT", "/v1/domains/cf", Some(json!({"ttl_seconds": 60})))
        .await;
    assert_eq!(renewed.body["expires_at"], START.as_millis() + 70_000);

    let list = api.get("/v1/domains").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"], json!([renewed.body, forever.body]));
}
