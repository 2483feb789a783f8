//! Tasks: submit, list and filter, cancel, and the rules for deleting.

use model::{Name, Task, TaskState};
use serde_json::{Value, json};
use store::{Commit, Expect, Mutation, Store};

use crate::harness::{Api, START, task};

fn ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect()
}

/// Moves a task as a cell would: straight in the store.
async fn set_state(api: &Api, id: &str, state: TaskState, cell: Option<&str>) {
    let name = Name::parse("id", id).unwrap();
    let mut row: Task = api.store.get_task(&name).await.unwrap().unwrap();
    let expect = Expect::Generation(row.generation);
    row.state = state;
    row.cell_id = cell.map(|c| Name::parse("cell", c).unwrap());
    api.store
        .commit(Commit::new(
            START,
            vec![Mutation::PutTask {
                task: Box::new(row),
                expect,
            }],
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn create_get_and_conflict() {
    let api = Api::new();
    let created = api.call("POST", "/v1/tasks", Some(task("t1"))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        (
            &created.body["id"],
            &created.body["state"],
            &created.body["generation"]
        ),
        (&json!("t1"), &json!("PENDING"), &json!(1))
    );
    assert_eq!(created.body["created_at"], START.as_millis());
    assert_eq!(api.get("/v1/tasks/t1").await.body, created.body);

    let before = api.bounds().await;
    let again = api.call("POST", "/v1/tasks", Some(task("t1"))).await;
    assert_eq!(again.error(), (409, Some("conflict"), None));
    assert_eq!(api.bounds().await, before);

    let generated = api
        .call(
            "POST",
            "/v1/tasks",
            Some(json!({"action": {"run": {"path": "true"}}})),
        )
        .await;
    assert_eq!(generated.status, 201);
    let id = generated.body["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID: {id}");
    assert_eq!(api.get(&format!("/v1/tasks/{id}")).await.status, 200);
}

#[tokio::test]
async fn list_filters() {
    let api = Api::new();
    api.call("POST", "/v1/tasks", Some(task("a"))).await;
    api.clock.advance(1);
    let mut b = task("b");
    b["domain"] = json!("cf");
    api.call("POST", "/v1/tasks", Some(b)).await;
    api.clock.advance(1);
    api.call("POST", "/v1/tasks", Some(task("c"))).await;
    set_state(&api, "c", TaskState::Running, Some("cell-1")).await;

    let cases: &[(&str, &[&str])] = &[
        ("/v1/tasks", &["a", "b", "c"]),
        ("/v1/tasks?domain=cf", &["b"]),
        ("/v1/tasks?domain=default", &["a", "c"]),
        ("/v1/tasks?state=PENDING", &["a", "b"]),
        ("/v1/tasks?state=running", &["c"]),
        ("/v1/tasks?state=COMPLETED", &[]),
        ("/v1/tasks?cell=cell-1", &["c"]),
        ("/v1/tasks?cell=cell-2", &[]),
        ("/v1/tasks?domain=default&state=PENDING", &["a"]),
    ];
    for (path, expect) in cases {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(ids(&reply.body), *expect, "{path}");
    }
}

#[tokio::test]
async fn cancel_completes_as_failed_once() {
    let api = Api::new();
    api.call("POST", "/v1/tasks", Some(task("p"))).await;
    api.call("POST", "/v1/tasks", Some(task("r"))).await;
    set_state(&api, "r", TaskState::Running, Some("cell-1")).await;

    api.clock.advance(500);
    for id in ["p", "r"] {
        let cancelled = api
            .call("POST", &format!("/v1/tasks/{id}/cancel"), None)
            .await;
        assert_eq!(cancelled.status, 200, "{id}: {}", cancelled.body);
        let t = &cancelled.body;
        assert_eq!(
            (&t["state"], &t["failed"], &t["failure_reason"]),
            (
                &json!("COMPLETED"),
                &json!(true),
                &json!("task was cancelled")
            ),
            "{id}"
        );
        assert_eq!(t["first_completed_at"], START.as_millis() + 500);
        assert_eq!(api.get(&format!("/v1/tasks/{id}")).await.body, *t);

        let before = api.bounds().await;
        let again = api
            .call("POST", &format!("/v1/tasks/{id}/cancel"), None)
            .await;
        assert_eq!(again.error(), (409, Some("conflict"), None), "{id}");
        assert!(again.message().contains("COMPLETED"), "{}", again.body);
        assert_eq!(api.bounds().await, before);
    }
    assert_eq!(
        api.call("POST", "/v1/tasks/none/cancel", None)
            .await
            .error(),
        (404, Some("not_found"), None)
    );
}

#[tokio::test]
async fn only_finished_tasks_are_deleted() {
    let api = Api::new();
    api.call("POST", "/v1/tasks", Some(task("t"))).await;

    let pending = api.call("DELETE", "/v1/tasks/t", None).await;
    assert_eq!(pending.error(), (409, Some("conflict"), None));
    assert_eq!(pending.message(), "task is PENDING; cancel it first");

    set_state(&api, "t", TaskState::Running, Some("cell-1")).await;
    let running = api.call("DELETE", "/v1/tasks/t", None).await;
    assert_eq!(running.message(), "task is RUNNING; cancel it first");
    assert_eq!(api.get("/v1/tasks/t").await.status, 200);

    api.call("POST", "/v1/tasks/t/cancel", None).await;
    let deleted = api.call("DELETE", "/v1/tasks/t", None).await;
    assert_eq!(
        (deleted.status.as_u16(), &deleted.body),
        (204, &Value::Null)
    );
    assert_eq!(api.get("/v1/tasks/t").await.status, 404);
    assert_eq!(api.call("DELETE", "/v1/tasks/t", None).await.status, 404);

    api.call("POST", "/v1/tasks", Some(task("u"))).await;
    set_state(&api, "u", TaskState::Resolving, None).await;
    assert_eq!(api.call("DELETE", "/v1/tasks/u", None).await.status, 204);
}
