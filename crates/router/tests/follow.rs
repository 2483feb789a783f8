//! The router following a real server: a server on SQLite in this process, simulated
//! cells (`sim`) that report instances running at addresses nothing listens on, and
//! the router's answers telling what its table holds: 502 (endpoints known, none
//! reachable), 503 (routed, no instance), 404 (not routed). The server is restarted
//! under the router, which keeps routing meanwhile and resyncs after.

use std::net::SocketAddr;
use std::time::Duration;

use api::{LrpCreate, LrpPatch, ResourcesInput};
use client::Client;
use model::{Action, HttpRoute, Routes};
use router::{Balance, Router, RouterOptions};
use server::{Server, ServerOptions, Timings};
use sim::{SimCells, SimOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

async fn start_server(dir: &std::path::Path, listen: SocketAddr) -> Server {
    server::start(ServerOptions {
        listen,
        db_url: format!("sqlite:{}", dir.join("corral.db").display()),
        data_dir: dir.join("server"),
        timings: Timings::default(),
    })
    .await
    .expect("start the server")
}

fn lrp(name: &str, host: &str, instances: i64) -> LrpCreate {
    LrpCreate {
        image_credentials: None,
        name: name.to_owned(),
        domain: None,
        rootfs: None,
        instances,
        resources: ResourcesInput::default(),
        setup: None,
        action: Some(Action::run("sleep", ["1000"])),
        env: vec![("SIM_START_MS".to_owned(), "1".to_owned())],
        ports: vec![8080],
        checks: None,
        routes: Some(Routes {
            http: vec![HttpRoute {
                hostname: host.to_owned(),
                port: 8080,
            }],
            tcp: vec![],
        }),
        placement_tags: vec![],
        crash_policy: None,
        annotation: String::new(),
    }
}

/// `GET /` with `Host: host` through the router: the status and body.
async fn get(router: SocketAddr, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(router)
        .await
        .expect("connect to the router");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// Polls until the router answers `status` for `host`; the body.
async fn until(router: SocketAddr, host: &str, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (got, body) = get(router, host).await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host}: still {got} ({body:?}), not {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_follows_the_server_and_survives_its_restart() {
    // Shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,server=warn"))
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let api = format!("http://{}", server.addr());
    let token = server.token().to_owned();
    let client = Client::new(&api, Some(token.clone())).expect("a client");
    let mut options = SimOptions::new(api.clone(), 1);
    options.token = Some(token.clone());
    let fleet = SimCells::start(options).await.expect("simulated cells");
    let router = Router::start(
        client.clone(),
        RouterOptions {
            http: "127.0.0.1:0".parse().unwrap(),
            tcp_ports: None,
            balance: Balance::RoundRobin,
        },
    )
    .await
    .expect("start the router");
    let addr = router.http_addr();

    // Routed at once (503 while no instance runs), then with endpoints: the simulated
    // instances' addresses answer nothing, so 502 naming them.
    client
        .create_lrp(&lrp("web", "web.test", 2))
        .await
        .expect("create web");
    let body = until(addr, "web.test", 502).await;
    assert!(
        body.starts_with("bad gateway: cannot reach instance web/"),
        "{body}"
    );
    assert!(router.synced());

    let scale = |n: i64| LrpPatch {
        instances: Some(n),
        ..LrpPatch::default()
    };
    client
        .update_lrp("web", &scale(0))
        .await
        .expect("scale to 0");
    assert_eq!(
        until(addr, "web.test", 503).await,
        "no instance of LRP web is running\n"
    );

    // The server goes: the router keeps the table it has.
    let listen = server.addr();
    server.shutdown().await.expect("stop the server");
    assert_eq!(get(addr, "web.test").await.0, 503);

    // It comes back on the same address and database, and changes made there reach
    // the router once it has subscribed and listed again.
    let server = start_server(dir.path(), listen).await;
    client
        .update_lrp("web", &scale(1))
        .await
        .expect("scale to 1");
    client
        .create_lrp(&lrp("api", "api.test", 1))
        .await
        .expect("create api");
    until(addr, "web.test", 502).await;
    until(addr, "api.test", 502).await;
    client.delete_lrp("web").await.expect("remove web");
    assert_eq!(
        until(addr, "web.test", 404).await,
        "no route for web.test: no LRP has this hostname\n"
    );

    drop(router);
    fleet.shutdown().await;
    server.shutdown().await.expect("stop the server");
}
