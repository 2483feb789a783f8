//! Bearer-token authentication against a small fake registry (axum on 127.0.0.1): the
//! challenge sends the client to a token service that wants basic credentials, and
//! the token then opens manifests and blobs. Also covers Docker v2 schema 2 media
//! types, which the fake serves.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use image::{Cache, Credentials, Digest, Reference, RegistryClient};
use serde_json::json;
use support::push::{Compression, Entry, layer};

const USER: &str = "bob";
const PASSWORD: &str = "token-service-password";
const TOKEN: &str = "opaque-token-42";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

struct Fake {
    addr: String,
    blobs: Vec<(Digest, Vec<u8>)>,
    manifest: Vec<u8>,
    token_requests: AtomicUsize,
}

async fn token(State(fake): State<Arc<Fake>>, headers: HeaderMap, uri: Uri) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let query = uri.query().unwrap_or_default();
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == expected.as_str());
    if !authorized
        || !query.contains("scope=repository%3Atest%2Fapp%3Apull")
        || !query.contains("service=fake")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"token": TOKEN, "expires_in": 300})).into_response()
}

async fn registry(
    State(fake): State<Arc<Fake>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let bearer = format!("Bearer {TOKEN}");
    if headers
        .get(header::AUTHORIZATION)
        .is_none_or(|v| v != bearer.as_str())
    {
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="fake",scope="repository:test/app:pull""#,
            fake.addr
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response();
    }
    let path = uri.path();
    let body = if path == "/v2/test/app/manifests/1" {
        let digest = Digest::of(&fake.manifest).to_string();
        let headers = [
            (header::CONTENT_TYPE, DOCKER_MANIFEST.to_owned()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest,
            ),
        ];
        let body = if method == Method::HEAD {
            Vec::new()
        } else {
            fake.manifest.clone()
        };
        return (headers, body).into_response();
    } else if let Some(digest) = path.strip_prefix("/v2/test/app/blobs/") {
        fake.blobs
            .iter()
            .find(|(d, _)| d.to_string() == digest)
            .map(|(_, b)| b.clone())
    } else {
        None
    };
    match body {
        Some(body) => body.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_fake() -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let layer = layer(
        &[Entry::File(
            "hello",
            b"from a token-protected registry",
            0o644,
        )],
        Compression::Gzip,
    );
    let config = support::push::config(std::slice::from_ref(&layer));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.digest().to_string(), "size": layer.bytes.len()}]
    }))
    .expect("manifest");
    let fake = Arc::new(Fake {
        addr,
        blobs: vec![(Digest::of(&config), config), (layer.digest(), layer.bytes)],
        manifest,
        token_requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/token", get(token))
        .fallback(registry)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    fake
}

#[tokio::test]
async fn bearer_tokens_come_from_the_token_service_with_basic_credentials() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: needs root (ownership in layers)");
        return;
    }
    let fake = start_fake().await;
    let reference = Reference::parse(
        &format!("docker://{}/test/app:1", fake.addr),
        image::DOCKER_HUB,
    )
    .expect("reference");
    let client = RegistryClient::new().expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path()).expect("cache");

    let wrong = Credentials::basic(USER, "not-the-password");
    let error = image::pull(&client, &reference, &wrong, &cache, &image::no_progress)
        .await
        .expect_err("the token service refuses");
    assert_eq!(
        error.to_string(),
        format!(
            "registry {} refused access to test/app: wrong credentials (HTTP 401)",
            fake.addr
        )
    );
    assert!(!format!("{error:?}").contains("not-the-password"));

    fake.token_requests.store(0, Ordering::SeqCst);
    let right = Credentials::basic(USER, PASSWORD);
    let image = image::pull(&client, &reference, &right, &cache, &image::no_progress)
        .await
        .expect("pull with a token");
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "one token serves the whole pull"
    );
    assert_eq!(
        std::fs::read_to_string(image.layers[0].join("hello")).expect("layer file"),
        "from a token-protected registry"
    );
    assert_eq!(image.config.exposed_ports.len(), 1);
}
