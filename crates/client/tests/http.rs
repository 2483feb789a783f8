//! The client against a canned HTTP server: what it sends, and how it reads answers.

use std::time::Duration;

use client::{Client, ClientError};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves one connection with `response` (a raw HTTP/1.1 answer) and hands back the
/// request's head (request line and headers) as received.
async fn serve_once(response: String) -> (String, oneshot::Receiver<String>) {
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
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.shutdown().await.ok();
        let _ = tx.send(head);
    });
    (format!("http://{addr}"), rx)
}

fn json_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn api_errors_carry_code_message_and_field() {
    let body = r#"{"error":{"code":"invalid","message":"must be between 0 and 100000","field":"instances"}}"#;
    let (url, head) = serve_once(json_response("422 Unprocessable Entity", body)).await;
    let client = Client::new(&url, Some("s3cret".into())).expect("client");
    let err = client.lrp("web").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "must be between 0 and 100000 (field: instances)"
    );
    assert_eq!(err.status(), Some(422));
    let head = head.await.expect("request seen");
    assert!(head.starts_with("GET /v1/lrps/web HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer s3cret"),
        "{head}"
    );
}

#[tokio::test]
async fn errors_without_the_envelope_keep_their_status() {
    let (url, _head) = serve_once(json_response("404 Not Found", "")).await;
    let client = Client::new(&url, None).expect("client");
    let err = client.task("t1").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the server answered 404 Not Found to GET /v1/tasks/t1"
    );

    let (url, _head) = serve_once(json_response("502 Bad Gateway", "upstream gone")).await;
    let client = Client::new(&url, None).expect("client");
    let err = client.cells().await.unwrap_err();
    assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
    assert!(err.to_string().ends_with(": upstream gone"), "{err}");
}

#[tokio::test]
async fn names_are_one_path_segment() {
    let (url, head) = serve_once(json_response("204 No Content", "")).await;
    let client = Client::new(&url, None).expect("client");
    client.delete_lrp("../tasks/x").await.expect("deleted");
    let head = head.await.expect("request seen");
    assert!(
        head.starts_with("DELETE /v1/lrps/..%2Ftasks%2Fx HTTP/1.1"),
        "{head}"
    );
}

#[tokio::test]
async fn unreachable_servers_are_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let client = Client::new(&addr.to_string(), None).expect("client");
    let err = client.lrps(None).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot reach the Corral API at http://{addr} (")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[test]
fn bad_urls_are_refused() {
    for bad in ["ftp://host", "http://", "mailto:x@y"] {
        let err = Client::new(bad, None).unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidUrl { .. }),
            "{bad}: {err:?}"
        );
    }
    let client = Client::new("localhost:7070/", None).expect("client");
    assert_eq!(client.api_url(), "http://localhost:7070");
}

#[tokio::test]
async fn events_stream_from_the_cursor() {
    let body = concat!(
        ": hello\n\n",
        "id: 6\nevent: lrp_created\n",
        "data: {\"seq\":6,\"kind\":\"lrp_created\",\"at\":1,\"data\":{\"name\":\"web\"}}\n\n",
        "id: 7\nevent: task_created\n",
        "data: {\"seq\":7,\"kind\":\"task_created\",\"at\":2,\n",
        "data: \"data\":{\"id\":\"t1\"}}\n\n",
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
    );
    let (url, head) = serve_once(response).await;
    let client = Client::new(&url, Some("t".into())).expect("client");
    let events: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        client.events(Some(5), &["lrp", "task"]).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends when the server closes it");
    let kinds: Vec<_> = events
        .into_iter()
        .map(|e| e.map(|m| (m.seq, m.kind)))
        .collect::<Result<_, _>>()
        .expect("events parse");
    assert_eq!(
        kinds,
        vec![
            (6, "lrp_created".to_owned()),
            (7, "task_created".to_owned())
        ]
    );
    let head = head.await.expect("request seen");
    assert!(
        head.starts_with("GET /v1/events?after=5&topics=lrp%2Ctask HTTP/1.1"),
        "{head}"
    );
}
