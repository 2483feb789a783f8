//! The cell protocol's calls against a canned HTTP server: the routes and token they
//! send, and how they read the answers.

use api::{AssignmentsRequest, Heartbeat, Report, ReportResult, Reports, WorkItem};
use client::Client;
use model::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves one connection with a `200 OK` JSON `body` and hands back the request's head
/// (request line and headers) as received.
async fn serve_once(body: &'static str) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&request).into_owned();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.shutdown().await.ok();
        let _ = tx.send(head);
    });
    (format!("http://{addr}"), rx)
}

fn name(s: &str) -> Name {
    Name::parse("name", s).expect("a valid name")
}

fn assert_post(head: &str, path: &str) {
    assert!(
        head.starts_with(&format!("POST {path} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer c3ll"),
        "{head}"
    );
}

#[tokio::test]
async fn heartbeats_read_the_interval() {
    let (url, head) = serve_once(r#"{"ttl_ms": 3000, "interval_ms": 1000}"#).await;
    let client = Client::new(&url, Some("c3ll".into())).expect("client");
    let reply = client
        .heartbeat(&Heartbeat { cells: vec![] })
        .await
        .expect("heartbeat");
    assert_eq!((reply.ttl_ms, reply.interval_ms), (3000, 1000));
    assert_post(&head.await.expect("request seen"), "/v1/cells/heartbeat");
}

#[tokio::test]
async fn assignments_are_a_work_batch() {
    let body = r#"{"items": [{"kind": "cancel_task", "cell": "c-0", "id": "t1"}]}"#;
    let (url, head) = serve_once(body).await;
    let client = Client::new(&url, Some("c3ll".into())).expect("client");
    let work = client
        .assignments(&AssignmentsRequest {
            cells: vec![name("c-0")],
        })
        .await
        .expect("assignments");
    assert_eq!(
        work.items,
        vec![WorkItem::CancelTask {
            cell: name("c-0"),
            id: name("t1")
        }]
    );
    assert_post(&head.await.expect("request seen"), "/v1/cells/assignments");
}

#[tokio::test]
async fn reports_get_one_result_each() {
    let body = r#"{"results": [{"result": "ok"}, {"result": "stale", "message": "reassigned"}]}"#;
    let (url, head) = serve_once(body).await;
    let client = Client::new(&url, Some("c3ll".into())).expect("client");
    let started = Report::TaskStarted {
        cell: name("c-0"),
        id: name("t1"),
    };
    let reply = client
        .report(&Reports {
            reports: vec![started.clone(), started],
        })
        .await
        .expect("reports");
    assert_eq!(
        reply.results,
        vec![
            ReportResult::Ok,
            ReportResult::Stale {
                message: "reassigned".into()
            }
        ]
    );
    assert_post(&head.await.expect("request seen"), "/v1/cells/reports");
}
