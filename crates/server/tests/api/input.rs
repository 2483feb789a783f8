//! Bad input: each request gets the right status and a JSON error naming the problem,
//! and nothing is written.

use axum::body::Body;
use axum::http::Request;
use futures::stream;
use serde_json::json;

use crate::harness::{Api, TOKEN, lrp};

/// How a case sends its body.
enum Send {
    Json(String),
    Raw {
        content_type: Option<&'static str>,
        body: String,
    },
    /// Chunked, without a Content-Length.
    Streamed(usize),
    NoToken,
    Token(&'static str),
    Empty,
}

struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    send: Send,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    /// A part of the message.
    says: &'static str,
}

fn request(case: &Case) -> Request<Body> {
    let builder = || Request::builder().method(case.method).uri(case.path);
    let authorized = builder().header("authorization", format!("Bearer {TOKEN}"));
    let json = |b: axum::http::request::Builder| b.header("content-type", "application/json");
    let good = lrp("web", 1).to_string();
    match &case.send {
        Send::Json(body) => json(authorized).body(Body::from(body.clone())),
        Send::Raw { content_type, body } => match content_type {
            Some(t) => authorized.header("content-type", *t),
            None => authorized,
        }
        .body(Body::from(body.clone())),
        Send::Streamed(size) => {
            let chunks =
                (0..size / (64 * 1024) + 1).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
            json(authorized).body(Body::from_stream(stream::iter(chunks)))
        }
        Send::NoToken => json(builder()).body(Body::from(good)),
        Send::Token(header) => {
            json(builder().header("authorization", *header)).body(Body::from(good))
        }
        Send::Empty => authorized.body(Body::empty()),
    }
    .unwrap()
}

fn with(field: &str, value: serde_json::Value) -> Send {
    let mut body = lrp("web", 1);
    body[field] = value;
    Send::Json(body.to_string())
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_named_problem_and_write_nothing() {
    let run = json!({"run": {"path": "sleep"}});
    let max = api::MAX_BODY_BYTES;
    // One line per case: what, method, path, how it is sent, then the expected status,
    // error code, field and a part of the message.
    #[rustfmt::skip]
    let cases = [
        ("malformed JSON", "POST", "/v1/lrps", Send::Json(r#"{"name": "web","#.into()), 400, "bad_request", None, "EOF while parsing"),
        ("trailing data", "POST", "/v1/lrps", Send::Json(format!("{} x", lrp("web", 1))), 400, "bad_request", None, "trailing characters"),
        ("unknown field", "POST", "/v1/lrps", with("instancez", json!(3)), 400, "bad_request", Some("instancez"), "unknown field `instancez`"),
        ("unknown nested field", "POST", "/v1/lrps", with("resources", json!({"memroy_mb": 5})), 400, "bad_request", Some("resources.memroy_mb"), "unknown field `memroy_mb`"),
        ("wrong type", "POST", "/v1/lrps", with("instances", json!("three")), 400, "bad_request", Some("instances"), "invalid type"),
        ("missing field", "POST", "/v1/lrps", Send::Json(r#"{"action": {"run": {"path": "a"}}}"#.into()), 400, "bad_request", None, "missing field `name`"),
        ("no command", "POST", "/v1/lrps", Send::Json(r#"{"name": "web"}"#.into()), 422, "invalid", Some("action"), "is required: preloaded:host has no command of its own"),
        ("bad image reference", "POST", "/v1/lrps", with("rootfs", json!("docker://127.0.0.1:5000/Web:1")), 422, "invalid", Some("rootfs"), "invalid image reference"),
        ("credentials without an image", "POST", "/v1/lrps", with("image_credentials", json!({"username": "ci", "password": "pw"})), 422, "invalid", Some("image_credentials"), "are for a docker:// registry"),
        ("unknown action", "POST", "/v1/lrps", with("action", json!({"fly": {}})), 400, "bad_request", Some("action"), "unknown variant `fly`"),
        ("invalid name", "POST", "/v1/lrps", with("name", json!("we b")), 422, "invalid", Some("name"), "may contain only"),
        ("oversized annotation", "POST", "/v1/lrps", with("annotation", json!("x".repeat(10 * 1024 + 1))), 422, "invalid", Some("annotation"), "10241 bytes"),
        ("negative instances", "POST", "/v1/lrps", with("instances", json!(-1)), 422, "invalid", Some("instances"), "between 0 and"),
        ("negative memory", "POST", "/v1/lrps", with("resources", json!({"memory_mb": -5})), 422, "invalid", Some("resources.memory_mb"), "got -5"),
        ("empty run path", "POST", "/v1/lrps", with("action", json!({"serial": [run, {"run": {"path": ""}}]})), 422, "invalid", Some("action.serial[1].run.path"), ""),
        ("bad rootfs", "POST", "/v1/lrps", with("rootfs", json!("ftp://x")), 422, "invalid", Some("rootfs"), "preloaded:"),
        ("missing token", "POST", "/v1/lrps", Send::NoToken, 401, "unauthorized", None, "missing bearer token"),
        ("wrong token", "POST", "/v1/lrps", Send::Token("Bearer nope"), 401, "unauthorized", None, "wrong bearer token"),
        ("basic auth", "POST", "/v1/lrps", Send::Token("Basic dXNlcjpwYXNz"), 401, "unauthorized", None, "missing bearer token"),
        ("token on reads too", "GET", "/v1/lrps", Send::NoToken, 401, "unauthorized", None, ""),
        ("wrong content type", "POST", "/v1/lrps", Send::Raw { content_type: Some("text/plain"), body: lrp("web", 1).to_string() }, 415, "unsupported_media_type", None, "application/json"),
        ("no content type", "POST", "/v1/lrps", Send::Raw { content_type: None, body: lrp("web", 1).to_string() }, 415, "unsupported_media_type", None, "got none"),
        ("oversized body", "POST", "/v1/lrps", Send::Json(format!("{}{}", lrp("web", 1), " ".repeat(max))), 413, "payload_too_large", None, "larger than"),
        ("oversized streamed body", "POST", "/v1/lrps", Send::Streamed(max), 413, "payload_too_large", None, "larger than"),
        ("empty body", "POST", "/v1/lrps", Send::Raw { content_type: Some("application/json"), body: String::new() }, 400, "bad_request", None, "EOF"),
        ("patch of invalid count", "PATCH", "/v1/lrps/web", Send::Json(r#"{"instances": -2}"#.into()), 422, "invalid", Some("instances"), "got -2"),
        ("unknown route", "GET", "/v1/nope", Send::Empty, 404, "not_found", None, "/v1/nope"),
        ("wrong method", "PUT", "/v1/lrps", Send::Empty, 405, "method_not_allowed", None, ""),
        ("undecodable path", "GET", "/v1/lrps/%FF", Send::Empty, 400, "bad_request", None, "UTF-8"),
        ("unknown query parameter", "GET", "/v1/lrps?domian=x", Send::Empty, 400, "bad_request", Some("domian"), "unknown field `domian`"),
        ("malformed domain filter", "GET", "/v1/lrps?domain=a%20b", Send::Empty, 400, "bad_request", Some("domain"), "may contain only"),
        ("bad task state", "GET", "/v1/tasks?state=DONE", Send::Empty, 400, "bad_request", Some("state"), "\"DONE\""),
        ("invalid task id", "POST", "/v1/tasks", Send::Json(r#"{"id": "a/b", "action": {"run": {"path": "true"}}}"#.into()), 422, "invalid", Some("id"), "may contain only"),
        ("invalid callback", "POST", "/v1/tasks", Send::Json(r#"{"action": {"run": {"path": "true"}}, "completion_callback_url": "ftp://x"}"#.into()), 422, "invalid", Some("completion_callback_url"), "http"),
        ("negative ttl", "PUT", "/v1/domains/cf", Send::Json(r#"{"ttl_seconds": -1}"#.into()), 422, "invalid", Some("ttl_seconds"), "got -1"),
        ("invalid domain", "PUT", "/v1/domains/c.f", Send::Json(r#"{"ttl_seconds": 1}"#.into()), 422, "invalid", Some("name"), "may contain only"),
        ("unknown topic", "GET", "/v1/events?topics=lrp,presence", Send::Empty, 400, "bad_request", Some("topics"), "\"presence\""),
        ("bad cursor", "GET", "/v1/events?after=x", Send::Empty, 400, "bad_request", Some("after"), "sequence number"),
    ];
    let cases = cases.map(
        |(what, method, path, send, status, code, field, says)| Case {
            what,
            method,
            path,
            send,
            status,
            code,
            field,
            says,
        },
    );

    let api = Api::new();
    for case in &cases {
        let reply = api.reply(request(case)).await;
        assert_eq!(
            reply.error(),
            (case.status, Some(case.code), case.field),
            "{}: {}",
            case.what,
            reply.body
        );
        assert!(
            reply.message().contains(case.says),
            "{}: {}",
            case.what,
            reply.body
        );
        assert_eq!(
            reply.headers["content-type"], "application/json",
            "{}",
            case.what
        );
        if case.status == 401 {
            assert!(
                reply.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{}",
                case.what
            );
        }
        assert_eq!(api.bounds().await, None, "{}: no event appended", case.what);
        let lrps = api.get("/v1/lrps").await.body;
        assert_eq!(lrps["items"], json!([]), "{}: no LRP written", case.what);
    }
}

#[tokio::test]
async fn lookups_of_what_cannot_exist_are_not_found() {
    let api = Api::new();
    for path in [
        "/v1/lrps/nope",
        "/v1/lrps/a%20b",
        "/v1/tasks/nope",
        "/v1/lrps/nope/status",
    ] {
        assert_eq!(
            api.get(path).await.error(),
            (404, Some("not_found"), None),
            "{path}"
        );
    }
}

#[tokio::test]
async fn health_and_openapi_need_no_token() {
    let api = Api::new();
    for path in ["/v1/health", "/v1/openapi.json"] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let reply = api.reply(request).await;
        assert_eq!(reply.status, 200, "{path}");
    }
    let health = api
        .reply(
            Request::builder()
                .uri("/v1/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(health.body, json!({"status": "ok"}));
    let doc = api.get("/v1/openapi.json").await.body;
    assert_eq!(doc["openapi"], "3.1.0");
}

/// A store whose database is gone.
#[derive(Debug)]
struct Down;

fn down<T>() -> store::Result<T> {
    Err(store::StoreError::Unavailable("connection refused".into()))
}

#[async_trait::async_trait]
impl store::Store for Down {
    async fn get_lrp(&self, _: &model::Name) -> store::Result<Option<model::Lrp>> {
        down()
    }
    async fn list_lrps(&self, _: &store::LrpFilter) -> store::Result<Vec<model::Lrp>> {
        down()
    }
    async fn list_instances(
        &self,
        _: &store::InstanceFilter,
    ) -> store::Result<Vec<model::Instance>> {
        down()
    }
    async fn get_instances(&self, _: &model::Name, _: u32) -> store::Result<Vec<model::Instance>> {
        down()
    }
    async fn get_task(&self, _: &model::Name) -> store::Result<Option<model::Task>> {
        down()
    }
    async fn list_tasks(&self, _: &store::TaskFilter) -> store::Result<Vec<model::Task>> {
        down()
    }
    async fn list_domains(&self) -> store::Result<Vec<model::Domain>> {
        down()
    }
    async fn commit(&self, _: store::Commit) -> store::Result<store::Committed> {
        down()
    }
    async fn events_after(&self, _: u64, _: usize) -> store::Result<Vec<store::Event>> {
        down()
    }
    async fn event_bounds(&self) -> store::Result<Option<(u64, u64)>> {
        down()
    }
    async fn prune_events(&self, _: u64) -> store::Result<u64> {
        down()
    }
    async fn acquire(&self, _: store::LockRequest) -> store::Result<store::Lease> {
        down()
    }
    async fn release(&self, _: &str, _: &str) -> store::Result<()> {
        down()
    }
    async fn list_locks(
        &self,
        _: &str,
        _: model::Timestamp,
    ) -> store::Result<Vec<store::LockRecord>> {
        down()
    }
    async fn expire_locks(&self, _: model::Timestamp) -> store::Result<Vec<store::LockRecord>> {
        down()
    }
}

#[tokio::test]
async fn a_store_that_is_down_gives_503_everywhere() {
    let clock = std::sync::Arc::new(server::ManualClock::new(crate::harness::START));
    let app = server::app(std::sync::Arc::new(Down), TOKEN.to_owned(), clock);
    let requests: [(&str, &str, Option<serde_json::Value>); 9] = [
        ("POST", "/v1/lrps", Some(lrp("web", 1))),
        ("GET", "/v1/lrps", None),
        ("GET", "/v1/lrps/web", None),
        ("DELETE", "/v1/lrps/web", None),
        ("POST", "/v1/tasks", Some(crate::harness::task("t"))),
        ("POST", "/v1/tasks/t/cancel", None),
        ("GET", "/v1/cells", None),
        ("PUT", "/v1/domains/d", Some(json!({"ttl_seconds": 1}))),
        ("GET", "/v1/events", None),
    ];
    for (method, path, body) in requests {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json");
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let response = tower::ServiceExt::oneshot(app.clone(), builder.body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{method} {path}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let error: api::ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            error.error.code,
            api::ErrorCode::Unavailable,
            "{method} {path}"
        );
        assert!(
            error.error.message.contains("connection refused"),
            "{method} {path}"
        );
    }
}
