//! The proxy and the TCP side against backends in this process, with the table set
//! directly (following the server is tested end to end in `crates/corral/tests`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use model::{
    Action, Checks, CrashPolicy, HttpRoute, Instance, InstanceKey, InstanceState, Lrp, LrpSpec,
    Name, PortMapping, Presence, Resources, Rootfs, Routes, TcpRoute, Timestamp,
};
use routes::Table;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Balance;
use crate::proxy::{self, Shared};
use crate::table::Builder;

fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

fn lrp(lrp_name: &str, hostname: &str, tcp: Option<u16>) -> Lrp {
    Lrp {
        spec: LrpSpec {
            image_credentials: None,
            name: name(lrp_name),
            domain: name("default"),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").unwrap(),
            instances: 1,
            resources: Resources::default(),
            setup: None,
            action: Action::run("true", Vec::<String>::new()),
            env: Vec::new(),
            ports: vec![8080],
            checks: Checks::default(),
            routes: Routes {
                http: vec![HttpRoute {
                    hostname: hostname.to_owned(),
                    port: 8080,
                }],
                tcp: tcp
                    .map(|external_port| TcpRoute {
                        external_port,
                        container_port: 8080,
                    })
                    .into_iter()
                    .collect(),
            },
            placement_tags: Vec::new(),
            crash_policy: CrashPolicy::default(),
            annotation: String::new(),
        },
        generation: 1,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    }
}

fn running(lrp_name: &str, index: u32, addr: SocketAddr) -> Instance {
    let mut row = Instance::unclaimed(name(lrp_name), index, name("default"), Timestamp(0));
    row.state = InstanceState::Running;
    row.presence = Presence::Ordinary;
    row.key = Some(InstanceKey {
        instance_id: format!("{lrp_name}-{index}"),
        cell_id: name("cell"),
    });
    row.address = Some(addr.ip().to_string());
    row.ports = vec![PortMapping {
        container_port: 8080,
        host_port: addr.port(),
    }];
    row.routable = true;
    row.generation = 1;
    row
}

/// A backend that answers `NAME METHOD PATH` and the forwarding headers it got, one
/// per line; a request with `Upgrade: echo` is switched and echoed back.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| async move {
                    if request
                        .headers()
                        .get("upgrade")
                        .is_some_and(|v| v == "echo")
                    {
                        let upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(upgrade.await.unwrap());
                            let mut buf = [0u8; 64];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        });
                        let response = Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header("connection", "upgrade")
                            .header("upgrade", "echo")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        return Ok::<_, Infallible>(response);
                    }
                    let mut text = format!("{name} {} {}\n", request.method(), request.uri());
                    for header in [
                        "host",
                        "x-forwarded-for",
                        "x-forwarded-proto",
                        "x-forwarded-host",
                        "x-request-id",
                        "x-secret",
                    ] {
                        if let Some(v) = request.headers().get(header) {
                            text.push_str(&format!("{header}: {}\n", v.to_str().unwrap()));
                        }
                    }
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    if !body.is_empty() {
                        text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
                    }
                    Ok(Response::builder()
                        .header("connection", "keep-alive, x-hop")
                        .header("x-hop", "1")
                        .body(Full::new(Bytes::from(text)))
                        .unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A router serving `table` (no server to follow); its address and a handle to change
/// the table.
struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    builder: Builder,
    published: watch::Sender<()>,
}

impl Proxy {
    async fn start(table: &Table, balance: Balance) -> Proxy {
        let mut proxy = Proxy::unsynced(balance).await;
        proxy.publish(table);
        proxy
    }

    /// A router that has not loaded a table yet.
    async fn unsynced(balance: Balance) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(balance, None));
        tokio::spawn(proxy::serve(listener, shared.clone()));
        let (published, _) = watch::channel(());
        Proxy {
            addr,
            shared,
            builder: Builder::default(),
            published,
        }
    }

    fn publish(&mut self, table: &Table) {
        self.shared.table.store(self.builder.build(table.routing()));
        self.published.send_replace(());
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String) {
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(proxy: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn requests_take_turns_and_carry_forwarding_headers() {
    let a = backend("a").await;
    let b = backend("b").await;
    let table = Table::rebuild(
        [lrp("web", "web.test", None)],
        [running("web", 0, a), running("web", 1, b)],
    );
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let client = client();
    let mut names = Vec::new();
    for _ in 0..4 {
        let (status, body) = send(&client, get(proxy.addr, "Web.Test:80", "/x?y=1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        names.push(body.split(' ').next().unwrap().to_owned());
    }
    assert_eq!(names, ["a", "b", "a", "b"]);

    let request = Request::get(format!("http://{}/p", proxy.addr))
        .header("host", "web.test")
        .header("x-request-id", "given-id")
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "given-id");
    assert!(
        !response.headers().contains_key("x-hop"),
        "a hop-by-hop header of the backend came through"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    let lines: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "host: web.test",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: web.test",
            "x-request-id: given-id",
        ]
    );
    // Without one, the router makes one up and tells both sides.
    let response = client
        .request(get(proxy.addr, "web.test", "/"))
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("x-request-id: {id}")),
        "{body:?}"
    );
}

#[tokio::test]
async fn its_own_answers_say_what_is_wrong() {
    let table = Table::rebuild([lrp("web", "web.test", None)], []);
    let mut proxy = Proxy::unsynced(Balance::RoundRobin).await;
    let client = client();
    // Not loaded yet: unhealthy.
    let (status, body) = send(&client, get(proxy.addr, "127.0.0.1", "/healthz")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the routing table has not been loaded from the server yet\n"
        )
    );
    let (status, body) = send(&client, get(proxy.addr, "web.test", "/")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the routing table has not been loaded from the server yet\n"
        )
    );
    proxy.publish(&table);
    let cases = [
        (
            "web.test",
            "/",
            StatusCode::SERVICE_UNAVAILABLE,
            "no instance of LRP web is running\n",
        ),
        (
            "other.test",
            "/",
            StatusCode::NOT_FOUND,
            "no route for other.test: no LRP has this hostname\n",
        ),
        (
            "127.0.0.1:8080",
            "/healthz",
            StatusCode::OK,
            "ok: routing 1 hostnames and 0 TCP ports\n",
        ),
        // A routed host's /healthz is the application's.
        (
            "web.test",
            "/healthz",
            StatusCode::SERVICE_UNAVAILABLE,
            "no instance of LRP web is running\n",
        ),
    ];
    for (host, path, status, text) in cases {
        assert_eq!(
            send(&client, get(proxy.addr, host, path)).await,
            (status, text.to_owned()),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn idempotent_requests_go_elsewhere_when_an_endpoint_is_gone() {
    let alive = backend("alive").await;
    let gone = closed_port().await;
    let table = Table::rebuild(
        [lrp("web", "web.test", None)],
        [running("web", 0, gone), running("web", 1, alive)],
    );
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let client = client();
    for _ in 0..4 {
        let (status, body) = send(&client, get(proxy.addr, "web.test", "/")).await;
        assert_eq!(
            (status, body.lines().next()),
            (StatusCode::OK, Some("alive GET /"))
        );
    }
    // A request with a body is sent once: to the gone endpoint, it fails.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let request = Request::post(format!("http://{}/", proxy.addr))
            .header("host", "web.test")
            .body(Full::new(Bytes::from("data")))
            .unwrap();
        statuses.push(send(&client, request).await);
    }
    statuses.sort();
    assert_eq!(statuses[0].0, StatusCode::OK);
    assert_eq!(statuses[0].1.lines().last(), Some("body: data"));
    assert_eq!(statuses[1].0, StatusCode::BAD_GATEWAY);
    assert!(
        statuses[1].1.starts_with(&format!(
            "bad gateway: cannot reach instance web/0 at {gone}: "
        )),
        "{}",
        statuses[1].1
    );
    // With every endpoint gone, a GET fails too, saying why.
    let table = Table::rebuild([lrp("web", "web.test", None)], [running("web", 0, gone)]);
    let proxy = Proxy::start(&table, Balance::LeastRequest).await;
    let (status, body) = send(&client, get(proxy.addr, "web.test", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("Connection refused"), "{body}");
}

/// A backend that starts every answer and dies halfway through it.
async fn dies_while_answering() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_endpoint_dying_mid_answer_costs_a_try_not_the_request() {
    let alive = backend("alive").await;
    let dying = dies_while_answering().await;
    let table = Table::rebuild(
        [lrp("web", "web.test", None)],
        [running("web", 0, dying), running("web", 1, alive)],
    );
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let client = client();
    for _ in 0..4 {
        let (status, body) = send(&client, get(proxy.addr, "web.test", "/")).await;
        assert_eq!(
            (status, body.lines().next()),
            (StatusCode::OK, Some("alive GET /"))
        );
    }
}

/// A backend that answers one request per connection, then closes it without saying
/// so (as one whose keep-alive timeout is short does); it counts its connections.
async fn answers_once_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nonce\n")
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// A backend like [`backend`] that counts the connections it accepted.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"kept\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    let (addr, accepted) = counting_backend().await;
    let table = Table::rebuild([lrp("web", "web.test", None)], [running("web", 0, addr)]);
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let client = client();
    for _ in 0..20 {
        let (status, body) = send(&client, get(proxy.addr, "web.test", "/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "kept\n"));
    }
    // Another client connection's request goes over the same, idle, connection.
    let other = self::client();
    let (status, _) = send(&other, get(proxy.addr, "web.test", "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_connection_the_endpoint_closed_is_not_a_failure() {
    // One endpoint, so there is nowhere else to retry: each request must find that
    // the connection it used before is gone and open a new one. POST, so no retry
    // hides a failure either.
    let (addr, accepted) = answers_once_per_connection().await;
    let table = Table::rebuild([lrp("web", "web.test", None)], [running("web", 0, addr)]);
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let client = client();
    for i in 0..20 {
        let request = Request::post(format!("http://{}/", proxy.addr))
            .header("host", "web.test")
            .body(Full::new(Bytes::from(format!("request {i}"))))
            .unwrap();
        let (status, body) = send(&client, request).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "once\n"),
            "request {i}"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn http2_clients_are_served() {
    let a = backend("a").await;
    let table = Table::rebuild([lrp("web", "web.test", None)], [running("web", 0, a)]);
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    // Prior knowledge: HTTP/2 from the first byte, the route named by the authority.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let request = Request::get("http://web.test/h2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("a GET /h2\nhost: web.test\n"), "{body}");
    }
}

#[tokio::test]
async fn upgrades_pass_through() {
    let a = backend("a").await;
    let table = Table::rebuild([lrp("web", "web.test", None)], [running("web", 0, a)]);
    let proxy = Proxy::start(&table, Balance::RoundRobin).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in [&b"hello"[..], b"again"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn tcp_routes_splice_connections_and_follow_the_table() {
    // A TCP echo server as the endpoint.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let external = closed_port().await.port();
    let gone = closed_port().await;
    let table = Table::rebuild(
        [lrp("db", "db.test", Some(external))],
        [running("db", 0, gone), running("db", 1, echo_addr)],
    );
    let mut proxy = Proxy::start(&table, Balance::RoundRobin).await;
    tokio::spawn(crate::tcp::serve(
        "127.0.0.1".parse().unwrap(),
        external..=external,
        proxy.shared.clone(),
        proxy.published.subscribe(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", external)).await {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never listened: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // Whichever endpoint comes first, the gone one is skipped.
    for message in [&b"ping"[..], b"pong"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
    // The route leaves the table: the listener goes, the open connection stays.
    proxy.publish(&Table::new());
    loop {
        if TcpStream::connect(("127.0.0.1", external)).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.write_all(b"still").await.unwrap();
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still");
}
