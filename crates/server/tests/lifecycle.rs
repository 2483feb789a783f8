//! The server as the binary runs it: on SQLite, on a real port, with its token file.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use server::{ServerOptions, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and returns the status line and body.
async fn http(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

fn options(dir: &std::path::Path) -> ServerOptions {
    ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_url: format!("sqlite:{}", dir.join("corral.db").display()),
        data_dir: dir.join("data"),
        timings: Default::default(),
    }
}

#[tokio::test]
async fn serves_with_a_private_token_that_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(options(dir.path())).await.expect("starts");
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    let token = server.token().to_owned();
    assert_eq!(token.len(), 64);
    let path = server.token_path().to_owned();
    assert_eq!(path, dir.path().join("data").join("token"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);

    let (status, body) = http(
        addr,
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains(r#"{"status":"ok"}"#), "{body}");

    let (status, _) = http(
        addr,
        "GET /v1/lrps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains("401"), "{status}");
    let authorized = format!(
        "GET /v1/lrps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = http(addr, &authorized).await;
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains(r#"{"items":[]}"#), "{body}");

    let body = r#"{"name": "web", "instances": 2, "action": {"run": {"path": "sleep"}}}"#;
    let create = format!(
        "POST /v1/lrps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = http(addr, &create).await;
    assert!(status.contains("201"), "{status} {body}");

    // The stream replays the creation from the store; an open stream does not hold the
    // shutdown up.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let subscribe = format!(
        "GET /v1/events?after=0&topics=lrp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(subscribe.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("event: lrp_created") {
            let n = stream.read(&mut buf).await.expect("reads");
            assert!(n > 0, "the stream stays open: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the creation arrives");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shuts down in time")
        .expect("shuts down cleanly");

    let again = start(options(dir.path())).await.expect("starts again");
    assert_eq!(again.token(), token);
    again.shutdown().await.unwrap();
}
