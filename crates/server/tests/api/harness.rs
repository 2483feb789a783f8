//! A test harness: the API over an in-memory store and a manual clock, called through
//! `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use futures::StreamExt;
use model::Timestamp;
use serde_json::{Value, json};
use server::ManualClock;
use store::Store;
use store::memory::MemoryStore;
use tower::ServiceExt;

pub const TOKEN: &str = "0123456789abcdef";
/// The manual clock's start: 2025-01-01.
pub const START: Timestamp = Timestamp(1_735_689_600_000);
/// How long a test waits for something that should happen before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Api {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    app: Router,
}

/// A response: status, headers and the body as JSON (`Null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// `(status, error code, field)`, for checking errors in a table.
    pub fn error(&self) -> (u16, Option<&str>, Option<&str>) {
        (
            self.status.as_u16(),
            self.body["error"]["code"].as_str(),
            self.body["error"]["field"].as_str(),
        )
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl Api {
    pub fn new() -> Api {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(START));
        let app = server::app(store.clone(), TOKEN.to_owned(), clock.clone());
        Api { store, clock, app }
    }

    /// Another server over the same store, as several servers share a PostgreSQL:
    /// its commits do not wake this one's streams.
    pub fn beside(&self) -> Api {
        let app = server::app(self.store.clone(), TOKEN.to_owned(), self.clock.clone());
        Api {
            store: self.store.clone(),
            clock: self.clock.clone(),
            app,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
    }

    /// Sends `request` and reads the whole body as JSON.
    pub async fn reply(&self, request: Request<Body>) -> Reply {
        let response = self.send(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// An authorized JSON call.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"));
        let request = match body {
            Some(body) => builder
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.reply(request.expect("request builds")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// The (oldest, newest) sequence numbers of the event log.
    pub async fn bounds(&self) -> Option<(u64, u64)> {
        self.store.event_bounds().await.expect("memory store reads")
    }

    /// Opens the event stream at `path` with extra headers.
    pub async fn events(&self, path: &str, headers: &[(&str, &str)]) -> EventReader {
        let mut builder = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self.send(builder.body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "GET {path}"
        );
        EventReader {
            body: Box::pin(response.into_body().into_data_stream()),
            buffer: String::new(),
        }
    }
}

/// A minimal LRP create body.
pub fn lrp(name: &str, instances: i64) -> Value {
    json!({
        "name": name,
        "instances": instances,
        "action": { "run": { "path": "sleep", "args": ["1000"] } },
    })
}

/// A minimal task create body.
pub fn task(id: &str) -> Value {
    json!({ "id": id, "action": { "run": { "path": "true" } } })
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Send>>;

pub struct EventReader {
    body: ByteStream,
    buffer: String,
}

impl EventReader {
    /// The next event (comments skipped); fails the test after [`DEADLINE`].
    pub async fn next(&mut self) -> Sse {
        tokio::time::timeout(DEADLINE, self.read())
            .await
            .expect("an event arrives before the deadline")
    }

    async fn read(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return event;
                }
                continue;
            }
            let chunk = self
                .body
                .next()
                .await
                .expect("the stream stays open")
                .expect("the stream reads");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn parse(block: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().expect("ids are numbers"));
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some(Sse {
        id,
        event: event?,
        data: serde_json::from_str(&data).expect("data is JSON"),
    })
}
