//! LRPs: create, read, scale, change and delete, with their instance rows.

use serde_json::{Value, json};
use store::Store;

use crate::harness::{Api, START, lrp};

/// The (index, presence, state) of every instance row of `name`.
async fn instances(api: &Api, name: &str) -> Vec<(u64, String, String)> {
    let reply = api.get(&format!("/v1/lrps/{name}/instances")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["index"].as_u64().unwrap(),
                i["presence"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn unclaimed(indices: std::ops::Range<u64>) -> Vec<(u64, String, String)> {
    indices
        .map(|i| (i, "ORDINARY".to_owned(), "UNCLAIMED".to_owned()))
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn create_get_list_delete() {
    let api = Api::new();
    let created = api.call("POST", "/v1/lrps", Some(lrp("web", 3))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["name"], "web");
    assert_eq!(created.body["generation"], 1);
    assert_eq!(created.body["domain"], "default");
    assert_eq!(created.body["created_at"], START.as_millis());
    assert_eq!(instances(&api, "web").await, unclaimed(0..3));

    // One commit: the LRP and its three instances, as four events.
    assert_eq!(api.bounds().await, Some((1, 4)));

    let got = api.get("/v1/lrps/web").await;
    assert_eq!((got.status.as_u16(), &got.body), (200, &created.body));

    let other = json!({"name": "api", "domain": "cf", "action": {"run": {"path": "a"}}});
    assert_eq!(api.call("POST", "/v1/lrps", Some(other)).await.status, 201);
    assert_eq!(names(&api.get("/v1/lrps").await.body), ["api", "web"]);
    assert_eq!(names(&api.get("/v1/lrps?domain=cf").await.body), ["api"]);
    assert_eq!(
        names(&api.get("/v1/lrps?domain=none").await.body),
        Vec::<&str>::new()
    );

    let status = api.get("/v1/lrps/web/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(
        (
            &status.body["unclaimed"],
            &status.body["running"],
            &status.body["lrp"]["name"]
        ),
        (&json!(3), &json!(0), &json!("web"))
    );

    let deleted = api.call("DELETE", "/v1/lrps/web", None).await;
    assert_eq!(
        (deleted.status.as_u16(), &deleted.body),
        (204, &Value::Null)
    );
    assert_eq!(
        api.get("/v1/lrps/web").await.error(),
        (404, Some("not_found"), None)
    );
    assert_eq!(api.get("/v1/lrps/web/instances").await.status, 404);
    assert_eq!(api.get("/v1/lrps/web/status").await.status, 404);
    let rows = api
        .store
        .list_instances(&store::InstanceFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only api's instance is left: {rows:?}");
    assert_eq!(api.call("DELETE", "/v1/lrps/web", None).await.status, 404);
}

#[tokio::test]
async fn creating_twice_conflicts_and_writes_nothing() {
    let api = Api::new();
    assert_eq!(
        api.call("POST", "/v1/lrps", Some(lrp("web", 2)))
            .await
            .status,
        201
    );
    let before = api.bounds().await;
    let again = api.call("POST", "/v1/lrps", Some(lrp("web", 5))).await;
    assert_eq!(again.error(), (409, Some("conflict"), None));
    assert!(again.message().contains("web"), "{}", again.body);
    assert_eq!(api.bounds().await, before);
    assert_eq!(instances(&api, "web").await, unclaimed(0..2));
}

#[tokio::test]
async fn scaling_creates_and_deletes_instance_rows() {
    let api = Api::new();
    api.call("POST", "/v1/lrps", Some(lrp("web", 2))).await;

    api.clock.advance(1000);
    let up = api
        .call("PATCH", "/v1/lrps/web", Some(json!({"instances": 5})))
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(
        (&up.body["instances"], &up.body["generation"]),
        (&json!(5), &json!(2))
    );
    assert_eq!(up.body["updated_at"], START.as_millis() + 1000);
    assert_eq!(instances(&api, "web").await, unclaimed(0..5));

    // An evacuating copy of index 3 goes too when the LRP scales below it.
    let mut evacuating: model::Instance =
        serde_json::from_value(api.get("/v1/lrps/web/instances").await.body["items"][3].clone())
            .unwrap();
    evacuating.presence = model::Presence::Evacuating;
    evacuating.state = model::InstanceState::Running;
    evacuating.key = Some(model::InstanceKey {
        instance_id: "i-3".into(),
        cell_id: model::Name::parse("cell", "c1").unwrap(),
    });
    api.store
        .commit(store::Commit::new(
            START,
            vec![store::Mutation::PutInstance {
                instance: evacuating,
                expect: store::Expect::Absent,
            }],
        ))
        .await
        .unwrap();
    assert_eq!(instances(&api, "web").await.len(), 6);

    let down = api
        .call("PATCH", "/v1/lrps/web", Some(json!({"instances": 1})))
        .await;
    assert_eq!(
        (down.status.as_u16(), &down.body["generation"]),
        (200, &json!(3))
    );
    assert_eq!(instances(&api, "web").await, unclaimed(0..1));

    let status = api.get("/v1/lrps/web/status").await.body;
    assert_eq!(
        (&status["unclaimed"], &status["lrp"]["instances"]),
        (&json!(1), &json!(1))
    );

    let zero = api
        .call("PATCH", "/v1/lrps/web", Some(json!({"instances": 0})))
        .await;
    assert_eq!(zero.status, 200);
    assert_eq!(instances(&api, "web").await, vec![]);
}

#[tokio::test]
async fn patch_checks_the_generation_given() {
    let api = Api::new();
    api.call("POST", "/v1/lrps", Some(lrp("web", 1))).await;
    api.call("PATCH", "/v1/lrps/web", Some(json!({"annotation": "v2"})))
        .await;

    let before = api.bounds().await;
    let stale = api
        .call(
            "PATCH",
            "/v1/lrps/web",
            Some(json!({"generation": 1, "instances": 4})),
        )
        .await;
    assert_eq!(stale.error(), (409, Some("conflict"), None));
    assert!(
        stale.message().contains("generation 2") && stale.message().contains('1'),
        "names both generations: {}",
        stale.message()
    );
    assert_eq!(api.bounds().await, before, "nothing written");
    assert_eq!(instances(&api, "web").await, unclaimed(0..1));

    let fresh = api
        .call(
            "PATCH",
            "/v1/lrps/web",
            Some(json!({"generation": 2, "instances": 2})),
        )
        .await;
    assert_eq!(
        (fresh.status.as_u16(), &fresh.body["generation"]),
        (200, &json!(3))
    );
    assert_eq!(fresh.body["annotation"], "v2");
}

#[tokio::test]
async fn patch_changes_routes_and_annotation_only_when_valid() {
    let api = Api::new();
    let mut body = lrp("web", 1);
    body["ports"] = json!([8080]);
    api.call("POST", "/v1/lrps", Some(body)).await;

    let routes = json!({"routes": {"http": [{"hostname": "web.example.test", "port": 8080}]}});
    let routed = api.call("PATCH", "/v1/lrps/web", Some(routes)).await;
    assert_eq!(routed.status, 200, "{}", routed.body);
    assert_eq!(
        routed.body["routes"]["http"][0]["hostname"],
        "web.example.test"
    );

    let before = api.bounds().await;
    let bad_port = json!({"routes": {"http": [{"hostname": "web.example.test", "port": 9}]}});
    let refused = api.call("PATCH", "/v1/lrps/web", Some(bad_port)).await;
    assert_eq!(
        refused.error(),
        (422, Some("invalid"), Some("routes.http[0].port"))
    );
    let big = json!({"annotation": "x".repeat(10 * 1024 + 1)});
    let refused = api.call("PATCH", "/v1/lrps/web", Some(big)).await;
    assert_eq!(refused.error(), (422, Some("invalid"), Some("annotation")));
    assert_eq!(api.bounds().await, before);

    // A patch that changes nothing writes nothing.
    let same = api
        .call("PATCH", "/v1/lrps/web", Some(json!({"instances": 1})))
        .await;
    assert_eq!(
        (same.status.as_u16(), &same.body["generation"]),
        (200, &json!(2))
    );
    assert_eq!(api.bounds().await, before);

    let missing = api
        .call("PATCH", "/v1/lrps/nope", Some(json!({"instances": 1})))
        .await;
    assert_eq!(missing.error(), (404, Some("not_found"), None));
}
