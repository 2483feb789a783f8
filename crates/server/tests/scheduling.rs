//! The leader's loops end to end: a real server on SQLite, and fake cells in the test
//! that speak the cell protocol (heartbeats, work pushed to them, reports). Placement,
//! crash restarts, replacement of a dead cell's instances, a draining cell's handoff,
//! at-most-once tasks and unplaceable work are checked as a user of the API would see
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::{WorkBatch, WorkItem};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use server::{Server, ServerOptions, Timings, start};
use tokio::sync::{Mutex, mpsc};

const DEADLINE: Duration = Duration::from_secs(15);

struct Cluster {
    server: Server,
    http: reqwest::Client,
    base: String,
    work: Mutex<mpsc::UnboundedReceiver<WorkItem>>,
    /// Per cell: whether it still sends heartbeats.
    alive: BTreeMap<&'static str, Arc<AtomicBool>>,
    /// Per cell: whether its heartbeats say it is evacuating.
    evacuating: BTreeMap<&'static str, Arc<AtomicBool>>,
    _dir: tempfile::TempDir,
}

async fn cluster(cells: &[&'static str]) -> Cluster {
    let dir = tempfile::tempdir().expect("temporary directory");
    let timings = Timings {
        heartbeat_interval_ms: 100,
        presence_ttl_ms: 600,
        leader_ttl_ms: 1_000,
        expiry_check_ms: 50,
        convergence_interval_ms: 500,
    };
    let server = start(ServerOptions {
        listen: "127.0.0.1:0".parse().expect("address"),
        db_url: format!("sqlite:{}", dir.path().join("corral.db").display()),
        data_dir: dir.path().join("data"),
        timings,
    })
    .await
    .expect("server starts");
    let base = format!("http://{}", server.addr());

    // One fake cell agent endpoint for all cells, as a simulated fleet has.
    let (tx, rx) = mpsc::unbounded_channel::<WorkItem>();
    let app = axum::Router::new()
        .route(
            "/v1/work",
            axum::routing::post(
                |State(tx): State<mpsc::UnboundedSender<WorkItem>>,
                 Json(batch): Json<WorkBatch>| async move {
                    for item in batch.items {
                        let _ = tx.send(item);
                    }
                    Json(json!({}))
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cell_address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let mut alive = BTreeMap::new();
    let mut evacuating = BTreeMap::new();
    for cell in cells {
        let flag = Arc::new(AtomicBool::new(true));
        alive.insert(*cell, flag.clone());
        let draining = Arc::new(AtomicBool::new(false));
        evacuating.insert(*cell, draining.clone());
        let (http, base, token, address) = (
            http.clone(),
            base.clone(),
            server.token().to_owned(),
            cell_address.clone(),
        );
        let cell = *cell;
        tokio::spawn(async move {
            while flag.load(Ordering::SeqCst) {
                let body = json!({"cells": [{
                    "id": cell, "address": address, "zone": "z1",
                    "capacity": {"memory_mb": 4096, "disk_mb": 65536, "containers": 100},
                    "rootfs_providers": ["host", "busybox"],
                    "evacuating": draining.load(Ordering::SeqCst),
                }]});
                let _ = http
                    .post(format!("{base}/v1/cells/heartbeat"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    Cluster {
        server,
        http,
        base,
        work: Mutex::new(rx),
        alive,
        evacuating,
        _dir: dir,
    }
}

impl Cluster {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.server.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The next `n` work items pushed to the cells.
    async fn work(&self, n: usize) -> Vec<WorkItem> {
        let mut rx = self.work.lock().await;
        let mut items = Vec::new();
        while items.len() < n {
            match tokio::time::timeout(DEADLINE, rx.recv()).await {
                Ok(Some(item)) => items.push(item),
                _ => panic!("expected {n} work items, got {}: {items:?}", items.len()),
            }
        }
        items
    }

    async fn report(&self, reports: Value) -> Vec<Value> {
        let (status, body) = self
            .post("/v1/cells/reports", json!({ "reports": reports }))
            .await;
        assert_eq!(status, 200, "reports: {body}");
        body["results"].as_array().expect("results").clone()
    }

    /// Reports every StartInstance as running; returns (cell, lrp, index, instance_id).
    async fn run_all(&self, items: &[WorkItem]) -> Vec<(String, String, u32, String)> {
        let mut started = Vec::new();
        let mut reports = Vec::new();
        for item in items {
            if let WorkItem::StartInstance {
                cell,
                lrp,
                index,
                instance_id,
            } = item
            {
                started.push((
                    cell.to_string(),
                    lrp.spec.name.to_string(),
                    *index,
                    instance_id.clone(),
                ));
                reports.push(json!({"kind": "instance_running", "cell": cell, "lrp": lrp.spec.name, "index": index,
                    "instance_id": instance_id, "address": "127.0.0.1", "ports": [{"container_port": 8080, "host_port": 61000 + index}]}));
            }
        }
        for result in self.report(Value::Array(reports)).await {
            assert_eq!(result["result"], "ok", "{result}");
        }
        started
    }

    /// Polls `path` until `check` holds.
    async fn until(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let body = self.get(path).await;
            if check(&body) {
                return body;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ordinary_running(status: &Value) -> Vec<(String, u64)> {
    status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["presence"] == "ORDINARY" && i["state"] == "RUNNING")
        .map(|i| {
            (
                i["key"]["cell_id"].as_str().unwrap_or_default().to_owned(),
                i["index"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_placed_restarted_and_replaced() {
    let c = cluster(&["cell-a", "cell-b"]).await;
    c.until("/v1/cells", "both cells", |b| {
        b["items"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;

    let (status, body) = c
        .post("/v1/lrps", json!({"name": "web", "instances": 4, "ports": [8080], "action": {"run": {"path": "sleep", "args": ["1000"]}}}))
        .await;
    assert_eq!(status, 201, "{body}");

    // Four instances, spread two and two by anti-affinity.
    let items = c.work(4).await;
    let started = c.run_all(&items).await;
    let on_a = started.iter().filter(|s| s.0 == "cell-a").count();
    assert_eq!((started.len(), on_a), (4, 2), "{started:?}");
    let status = c
        .until("/v1/lrps/web/status", "four running", |s| s["running"] == 4)
        .await;
    assert_eq!(ordinary_running(&status).len(), 4);

    // A crash restarts at once (crash 1) on some cell.
    let (cell, lrp, index, instance_id) = started[0].clone();
    let results = c
        .report(json!([{"kind": "instance_crashed", "cell": cell, "lrp": lrp, "index": index, "instance_id": instance_id, "reason": "exited with status 1"}]))
        .await;
    assert_eq!(results[0]["result"], "ok");
    let restarted = c.work(1).await;
    assert!(
        matches!(&restarted[0], WorkItem::StartInstance { index: i, .. } if *i == index),
        "{restarted:?}"
    );
    c.run_all(&restarted).await;
    let status = c
        .until("/v1/lrps/web/status", "the restart running", |s| {
            s["running"] == 4
        })
        .await;
    let crashed = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["index"] == index)
        .unwrap()
        .clone();
    assert_eq!(
        (
            crashed["crash_count"].as_u64(),
            crashed["crash_reason"].as_str()
        ),
        (Some(1), Some("exited with status 1"))
    );

    // A report from the old container is stale now: that container must stop.
    let results = c
        .report(json!([{"kind": "instance_running", "cell": cell, "lrp": lrp, "index": index, "instance_id": instance_id, "address": "127.0.0.1"}]))
        .await;
    assert_eq!(results[0]["result"], "stale", "{results:?}");

    // cell-a dies: its instances become suspect and are replaced on cell-b.
    c.alive["cell-a"].store(false, Ordering::SeqCst);
    // Stops sent to the dead cell (for a copy removed meanwhile) may come between the
    // starts: they reach nothing and are not what this waits for.
    let mut replacements = Vec::new();
    while replacements.len() < 2 {
        for item in c.work(1).await {
            match item {
                WorkItem::StopInstance { cell, .. } if cell.as_str() == "cell-a" => {}
                other => replacements.push(other),
            }
        }
    }
    for item in &replacements {
        assert!(
            matches!(item, WorkItem::StartInstance { cell, .. } if cell.as_str() == "cell-b"),
            "{item:?}"
        );
    }
    c.run_all(&replacements).await;
    // Once a replacement runs, its suspect copy is gone: no router keeps sending
    // traffic to the dead cell.
    c.until(
        "/v1/lrps/web/status",
        "all four on cell-b, no suspects left",
        |s| {
            let running = ordinary_running(s);
            running.len() == 4
                && running.iter().all(|(cell, _)| cell == "cell-b")
                && s["suspect"] == 0
        },
    )
    .await;
}

/// The rows of an LRP, all presences.
async fn rows(c: &Cluster, lrp: &str) -> Vec<Value> {
    c.get(&format!("/v1/lrps/{lrp}/instances")).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn row(rows: &[Value], index: u32, presence: &str) -> Option<Value> {
    rows.iter()
        .find(|r| r["index"] == index && r["presence"] == presence)
        .cloned()
}

/// The cell and container of a `StartInstance`.
fn started(item: &WorkItem) -> (String, String, u32, String) {
    match item {
        WorkItem::StartInstance {
            cell,
            lrp,
            index,
            instance_id,
        } => (
            cell.to_string(),
            lrp.spec.name.to_string(),
            *index,
            instance_id.clone(),
        ),
        other => panic!("expected start_instance, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_cell_keeps_each_instance_until_its_replacement_runs() {
    let c = Arc::new(cluster(&["cell-a", "cell-b"]).await);
    c.until("/v1/cells", "both cells", |b| {
        b["items"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let (status, body) = c
        .post("/v1/lrps", json!({"name": "web", "instances": 2, "ports": [8080], "action": {"run": {"path": "sleep", "args": ["1000"]}}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let running = c.run_all(&c.work(2).await).await;
    let on = |cell: &str| {
        running
            .iter()
            .find(|s| s.0 == cell)
            .cloned()
            .unwrap_or_else(|| panic!("an instance on {cell}: {running:?}"))
    };
    let (_, _, index_a, id_a) = on("cell-a");
    on("cell-b");
    // Another LRP, whose instance on cell-a is claimed but never reported running.
    let (status, body) = c
        .post("/v1/lrps", json!({"name": "api", "instances": 2, "action": {"run": {"path": "sleep", "args": ["1000"]}}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let claimed: Vec<_> = c.work(2).await.iter().map(started).collect();
    let api_a = claimed
        .iter()
        .find(|s| s.0 == "cell-a")
        .cloned()
        .expect("an api instance on cell-a");
    let api_b = claimed
        .iter()
        .find(|s| s.0 == "cell-b")
        .cloned()
        .expect("an api instance on cell-b");

    // Watches that every index of web has a RUNNING copy at every moment it looks.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (c, watching) = (c.clone(), watching.clone());
        tokio::spawn(async move {
            let mut looks = 0u32;
            while watching.load(Ordering::SeqCst) {
                let rows = rows(&c, "web").await;
                for index in 0..2u32 {
                    assert!(
                        rows.iter()
                            .any(|r| r["index"] == index && r["state"] == "RUNNING"),
                        "web/{index} had no running copy: {rows:#?}"
                    );
                }
                looks += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            looks
        })
    };

    // cell-a drains: its heartbeats say so, and new work goes to cell-b only, although
    // cell-a holds less.
    c.evacuating["cell-a"].store(true, Ordering::SeqCst);
    c.until("/v1/cells", "cell-a evacuating", |b| {
        b["items"].as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["id"] == "cell-a" && c["evacuating"] == true)
        })
    })
    .await;
    let (status, body) = c
        .post("/v1/lrps", json!({"name": "late", "instances": 1, "action": {"run": {"path": "sleep", "args": ["1000"]}}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(started(&c.work(1).await[0]).0, "cell-b");

    // The claimed api instance is given back: placed on cell-b at once, not a crash.
    let results = c
        .report(json!([{"kind": "instance_evacuating_claimed", "cell": "cell-a", "lrp": "api", "index": api_a.2, "instance_id": api_a.3}]))
        .await;
    assert_eq!(results[0]["result"], "ok", "{results:?}");
    let again = started(&c.work(1).await[0]);
    assert_eq!((again.0.as_str(), again.2), ("cell-b", api_a.2));
    assert_ne!(again.3, api_a.3);
    let api = rows(&c, "api").await;
    assert_eq!(row(&api, api_a.2, "ORDINARY").unwrap()["crash_count"], 0);
    // Given back twice (a resent report): stale, the container goes either way.
    let results = c
        .report(json!([{"kind": "instance_evacuating_claimed", "cell": "cell-a", "lrp": "api", "index": api_a.2, "instance_id": api_a.3}]))
        .await;
    assert_eq!(results[0]["result"], "stale", "{results:?}");

    // web's instance on cell-a asks for a replacement and is told to keep running: it
    // stays routable as an EVACUATING copy while the replacement starts on cell-b.
    let evacuate = json!([{"kind": "instance_evacuating", "cell": "cell-a", "lrp": "web", "index": index_a, "instance_id": id_a}]);
    let results = c.report(evacuate.clone()).await;
    assert_eq!(results[0]["result"], "ok", "{results:?}");
    let replacement = c.work(1).await;
    let (cell, _, index, _) = started(&replacement[0]);
    assert_eq!((cell.as_str(), index), ("cell-b", index_a));
    let web = rows(&c, "web").await;
    let copy = row(&web, index_a, "EVACUATING").expect("an evacuating copy");
    assert_eq!(
        (
            copy["state"].as_str(),
            copy["key"]["instance_id"].as_str(),
            copy["routable"].as_bool(),
            copy["ports"][0]["host_port"].as_u64()
        ),
        (
            Some("RUNNING"),
            Some(id_a.as_str()),
            Some(true),
            Some(61000 + u64::from(index_a))
        )
    );
    assert_eq!(
        row(&web, index_a, "ORDINARY").unwrap()["state"],
        "CLAIMED",
        "{web:#?}"
    );
    // Asked again while the replacement starts: keep it, and nothing is written.
    let results = c.report(evacuate.clone()).await;
    assert_eq!(results[0]["result"], "ok", "{results:?}");
    let web = rows(&c, "web").await;
    assert_eq!(
        row(&web, index_a, "EVACUATING").unwrap()["generation"],
        copy["generation"]
    );

    // The replacement runs: the handoff is over. cell-a is told to stop its copy, and
    // asking again is answered `stale`.
    let replaced = c.run_all(&replacement).await;
    let stop = c.work(1).await;
    assert!(
        matches!(&stop[0], WorkItem::StopInstance { cell, lrp, index, instance_id }
            if cell.as_str() == "cell-a" && lrp.as_str() == "web" && *index == index_a && *instance_id == id_a),
        "{stop:?}"
    );
    let results = c.report(evacuate).await;
    assert_eq!(results[0]["result"], "stale", "{results:?}");
    let results = c
        .report(json!([{"kind": "instance_stopped", "cell": "cell-a", "lrp": "web", "index": index_a, "instance_id": id_a}]))
        .await;
    assert_eq!(results[0]["result"], "ok", "{results:?}");

    // Readiness of a running instance: a change updates the row, the same report again
    // writes nothing.
    let (_, _, _, id) = replaced[0].clone();
    let readiness = |routable: bool| {
        json!([{"kind": "instance_running", "cell": "cell-b", "lrp": "web", "index": index_a, "instance_id": id,
            "address": "127.0.0.1", "ports": [{"container_port": 8080, "host_port": 61000 + index_a}], "routable": routable}])
    };
    let generation = |rows: &[Value]| row(rows, index_a, "ORDINARY").unwrap()["generation"].clone();
    let before = generation(&rows(&c, "web").await);
    assert_eq!(c.report(readiness(true)).await[0]["result"], "ok");
    assert_eq!(generation(&rows(&c, "web").await), before);
    assert_eq!(c.report(readiness(false)).await[0]["result"], "ok");
    let web = rows(&c, "web").await;
    let unready = row(&web, index_a, "ORDINARY").unwrap();
    assert_eq!(unready["routable"], false);
    assert_eq!(unready["generation"], before.as_u64().unwrap() + 1);
    assert_eq!(c.report(readiness(true)).await[0]["result"], "ok");

    watching.store(false, Ordering::SeqCst);
    let looks = watcher
        .await
        .expect("web always had a running copy of each index");
    assert!(looks > 0);
    // Both web instances run on cell-b, nothing is left on cell-a.
    let web = rows(&c, "web").await;
    assert_eq!(web.len(), 2, "{web:#?}");
    assert!(
        web.iter().all(|r| r["presence"] == "ORDINARY"
            && r["state"] == "RUNNING"
            && r["key"]["cell_id"] == "cell-b"),
        "{web:#?}"
    );

    // A report to evacuate an instance the server does not know as running (claimed,
    // here) is stale, and the instance is placed again.
    let results = c
        .report(json!([{"kind": "instance_evacuating", "cell": "cell-b", "lrp": "api", "index": api_b.2, "instance_id": api_b.3}]))
        .await;
    assert_eq!(results[0]["result"], "stale", "{results:?}");
    let again = started(&c.work(1).await[0]);
    assert_eq!((again.1.as_str(), again.2), ("api", api_b.2));
    // And one about a container nobody knows is stale too, never an error.
    let results = c
        .report(json!([{"kind": "instance_evacuating", "cell": "cell-a", "lrp": "nope", "index": 0, "instance_id": "x"}]))
        .await;
    assert_eq!(results[0]["result"], "stale", "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_at_most_once_and_unplaceable_work_says_why() {
    let c = cluster(&["cell-a"]).await;
    c.until("/v1/cells", "the cell", |b| {
        b["items"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;

    let (status, body) = c
        .post("/v1/tasks", json!({"id": "job", "action": {"run": {"path": "echo", "args": ["hi"]}}, "result_file": "/tmp/result"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let items = c.work(1).await;
    assert!(
        matches!(&items[0], WorkItem::StartTask { task, .. } if task.id.as_str() == "job"),
        "{items:?}"
    );

    let started = c
        .report(json!([{"kind": "task_started", "cell": "cell-a", "id": "job"}]))
        .await;
    assert_eq!(started[0]["result"], "ok");
    // The gate opens once: a second start (a duplicate message, another cell) is stale.
    let again = c.report(json!([{"kind": "task_started", "cell": "cell-a", "id": "job"}, {"kind": "task_started", "cell": "cell-b", "id": "job"}])).await;
    assert_eq!(
        (again[0]["result"].as_str(), again[1]["result"].as_str()),
        (Some("stale"), Some("stale"))
    );
    let done = c
        .report(json!([{"kind": "task_completed", "cell": "cell-a", "id": "job", "failed": false, "result": "42"}]))
        .await;
    assert_eq!(done[0]["result"], "ok");
    let task = c.get("/v1/tasks/job").await;
    assert_eq!(
        (
            task["state"].as_str(),
            task["result"].as_str(),
            task["failed"].as_bool()
        ),
        (Some("COMPLETED"), Some("42"), Some(false))
    );

    // A result over the limit fails the task instead of being cut.
    c.post(
        "/v1/tasks",
        json!({"id": "big", "action": {"run": {"path": "true"}}}),
    )
    .await;
    c.work(1).await;
    let started = c
        .report(json!([{"kind": "task_started", "cell": "cell-a", "id": "big"}]))
        .await;
    assert_eq!(started[0]["result"], "ok", "{started:?}");
    let done = c.report(json!([{"kind": "task_completed", "cell": "cell-a", "id": "big", "failed": false, "result": "x".repeat(60 * 1024)}])).await;
    assert_eq!(done[0]["result"], "ok", "{done:?}");
    let big = c.get("/v1/tasks/big").await;
    assert_eq!(big["failed"], true, "{big}");
    assert!(
        big["failure_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("more than the limit"),
        "{big}"
    );

    // More memory than any cell has: the instance stays UNCLAIMED and says why.
    let (status, _) = c
        .post("/v1/lrps", json!({"name": "huge", "resources": {"memory_mb": 1000000}, "action": {"run": {"path": "sleep", "args": ["1"]}}}))
        .await;
    assert_eq!(status, 201);
    let status = c
        .until("/v1/lrps/huge/status", "a placement error", |s| {
            !s["instances"][0]["placement_error"].is_null()
        })
        .await;
    assert_eq!(
        status["instances"][0]["placement_error"],
        "insufficient resources: memory"
    );
    assert_eq!(status["instances"][0]["state"], "UNCLAIMED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_calls_back_and_is_resolved() {
    let c = cluster(&["cell-a"]).await;
    c.until("/v1/cells", "the cell", |b| {
        b["items"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;

    // A receiver that is busy once (503: retried), then takes the callback.
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let busy = Arc::new(AtomicBool::new(true));
    let receiver = axum::Router::new()
        .route(
            "/done",
            axum::routing::post(
                |State((tx, busy)): State<(mpsc::UnboundedSender<Value>, Arc<AtomicBool>)>,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send(body);
                    if busy.swap(false, Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state((tx, busy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/done", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let (status, body) = c
        .post("/v1/tasks", json!({"id": "report", "annotation": "for team a", "completion_callback_url": url, "action": {"run": {"path": "true"}}}))
        .await;
    assert_eq!(status, 201, "{body}");
    c.work(1).await;
    c.report(json!([{"kind": "task_started", "cell": "cell-a", "id": "report"}]))
        .await;
    c.report(json!([{"kind": "task_completed", "cell": "cell-a", "id": "report", "failed": false, "result": "7"}])).await;

    let mut calls = Vec::new();
    while calls.len() < 2 {
        match tokio::time::timeout(DEADLINE, rx.recv()).await {
            Ok(Some(call)) => calls.push(call),
            _ => panic!("expected a retried callback, got {calls:?}"),
        }
    }
    assert_eq!(calls[0], calls[1]);
    assert_eq!(
        (
            calls[1]["task_id"].as_str(),
            calls[1]["result"].as_str(),
            calls[1]["failed"].as_bool(),
            calls[1]["annotation"].as_str()
        ),
        (Some("report"), Some("7"), Some(false), Some("for team a"))
    );
    // Delivered: the task is resolved and deleted.
    let start = Instant::now();
    loop {
        let (status, _) = c.call(reqwest::Method::GET, "/v1/tasks/report", None).await;
        if status == 404 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the task was not deleted after its callback"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
