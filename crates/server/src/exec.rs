//! `GET /v1/lrps/{name}/instances/{index}/exec`: a command in an instance's container,
//! over a WebSocket. The server finds the instance's cell, opens the cell's own exec
//! WebSocket (`GET /v1/containers/{id}/exec`, with the API token, which cells accept
//! from the server) and relays frames both ways without reading them; the protocol
//! (`api::exec`, `docs/exec.md`) is between the client and the cell.
//!
//! Everything that can be refused is refused before the upgrade, as an ordinary JSON
//! error: an unknown LRP or index, no running instance, a cell that cannot be reached
//! or that no longer holds the container.

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use model::{Instance, InstanceKey, InstanceState, Name, Presence};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::request::path_name;

type CellSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a closed session waits for both sides to acknowledge the close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the server pings an exec client, and how long a client may stay silent
/// (no frame, no pong) before its session is taken for dead.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
const CLIENT_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long reaching a cell's exec endpoint may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /v1/lrps/{name}/instances/{index}/exec`
pub(crate) async fn lrp_instance(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Path((name, index)) = path.map_err(|e| ApiError::bad_request("index", format!("{e}")))?;
    let name = path_name("LRP", &name)?;
    let index: u32 = index.parse().map_err(|_| {
        ApiError::bad_request("index", format!("instance index {index:?} is not a number"))
    })?;
    let key = running_instance(&state, &name, index).await?;
    let address = cell_address(&state, &key.cell_id).await?;
    // The upgrade is checked after the lookups, so a wrong name reads as one even from
    // a client that is not a WebSocket.
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(
            "upgrade",
            format!("this route is a WebSocket (docs/exec.md): {e}"),
        )
    })?;
    let what = format!("instance {name}/{index}");
    let cell = connect_cell(&state, &address, &key.instance_id, &what).await?;
    tracing::info!(lrp = %name, index, cell = %key.cell_id, "exec session");
    Ok(upgrade.on_upgrade(move |client| relay(client, cell)))
}

/// `GET /v1/tasks/{id}/exec`: into a RUNNING task's container.
pub(crate) async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = path_name("task", &id)?;
    let task = state
        .store
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task with id {id}")))?;
    let cell_id = match (&task.state, &task.cell_id) {
        (model::TaskState::Running, Some(cell)) => cell.clone(),
        (state, _) => {
            return Err(ApiError::not_found(format!(
                "task {id} is not running (it is {state})"
            )));
        }
    };
    let address = cell_address(&state, &cell_id).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(
            "upgrade",
            format!("this route is a WebSocket (docs/exec.md): {e}"),
        )
    })?;
    let container = api::task_container_id(id.as_str());
    let cell = connect_cell(&state, &address, &container, &format!("task {id}")).await?;
    tracing::info!(task = %id, cell = %cell_id, "exec session");
    Ok(upgrade.on_upgrade(move |client| relay(client, cell)))
}

/// The key (container and cell) of the instance at `index` that has a container to
/// exec into: RUNNING, preferring the ordinary one to an evacuating or suspect copy.
async fn running_instance(
    state: &AppState,
    name: &Name,
    index: u32,
) -> Result<InstanceKey, ApiError> {
    let lrp = state
        .store
        .get_lrp(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no LRP named {name}")))?;
    let mut found: Vec<Instance> = state.store.get_instances(name, index).await?;
    if found.is_empty() {
        return Err(ApiError::not_found(if index >= lrp.spec.instances {
            format!(
                "LRP {name} has {} instance(s): there is no index {index}",
                lrp.spec.instances
            )
        } else {
            format!("instance {name}/{index} does not exist")
        }));
    }
    found.sort_by_key(|i| i.presence != Presence::Ordinary);
    let states: Vec<String> = found.iter().map(|i| i.state.to_string()).collect();
    found
        .into_iter()
        .filter(|i| i.state == InstanceState::Running)
        .find_map(|i| i.key)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "instance {name}/{index} is not running (it is {})",
                states.join(", ")
            ))
        })
}

/// The address of a live cell.
async fn cell_address(state: &AppState, cell: &Name) -> Result<String, ApiError> {
    let key = format!("{}{cell}", crate::cells::PREFIX);
    let records = state.store.list_locks(&key, state.now()).await?;
    records
        .iter()
        .filter(|r| r.key == key)
        .find_map(crate::cells::decode)
        .map(|c| c.address)
        .ok_or_else(|| {
            ApiError::new(
                api::ErrorCode::Unavailable,
                format!("cell {cell} is not reachable: its presence expired"),
            )
        })
}

/// Opens the cell's exec WebSocket for container `container`.
/// `what` names the instance or task for messages: `instance web/0`, `task build-1`.
async fn connect_cell(
    state: &AppState,
    address: &str,
    container: &str,
    what: &str,
) -> Result<CellSocket, ApiError> {
    let base = address.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{base}")
    };
    let url = format!("{ws_base}/v1/containers/{container}/exec");
    let unavailable = |why: String| {
        ApiError::new(
            api::ErrorCode::Unavailable,
            format!("cannot exec in {what}: {why}"),
        )
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| unavailable(format!("bad cell address {address:?}: {e}")))?;
    let auth = format!("Bearer {}", state.token)
        .parse()
        .map_err(|_| unavailable("the API token is not a header value".to_owned()))?;
    request
        .headers_mut()
        .insert(axum::http::header::AUTHORIZATION, auth);
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await;
    match connected {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) if response.status() == 404 => Err(
            ApiError::not_found(format!("{what} is not on its cell any more (it stopped)")),
        ),
        Ok(Err(tungstenite::Error::Http(response))) => Err(unavailable(format!(
            "the cell answered {}",
            response.status()
        ))),
        Ok(Err(e)) => Err(unavailable(format!("reaching the cell at {address}: {e}"))),
        Err(_) => Err(unavailable(format!(
            "the cell at {address} did not answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Carries frames between the client and the cell until either side closes; then
/// closes the other and reads both to their end, so that neither connection is reset
/// with frames in flight (a reset can destroy the last frames before they are read).
async fn relay(mut client: WebSocket, cell: CellSocket) {
    let (mut to_cell, mut from_cell) = cell.split();
    // A client cut off without a close (a partition, a laptop lid) answers no ping:
    // after CLIENT_SILENCE the session ends, and with it the command.
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > CLIENT_SILENCE {
                    tracing::info!("an exec client stopped answering pings: ending its session");
                    break;
                }
                if client.send(ws::Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            message = client.recv() => {
                heard = tokio::time::Instant::now();
                let forwarded = match message {
                    Some(Ok(ws::Message::Text(text))) => {
                        tungstenite::Message::Text(text.as_str().into())
                    }
                    Some(Ok(ws::Message::Binary(data))) => tungstenite::Message::Binary(data),
                    // Each side answers its own pings.
                    Some(Ok(ws::Message::Ping(_) | ws::Message::Pong(_))) => continue,
                    Some(Ok(ws::Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if to_cell.send(forwarded).await.is_err() {
                    break;
                }
            }
            message = from_cell.next() => {
                let forwarded = match message {
                    Some(Ok(tungstenite::Message::Text(text))) => {
                        ws::Message::Text(text.as_str().into())
                    }
                    Some(Ok(tungstenite::Message::Binary(data))) => ws::Message::Binary(data),
                    Some(Ok(
                        tungstenite::Message::Ping(_)
                        | tungstenite::Message::Pong(_)
                        | tungstenite::Message::Frame(_),
                    )) => continue,
                    Some(Ok(tungstenite::Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if client.send(forwarded).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.send(ws::Message::Close(None)).await;
    let _ = to_cell.send(tungstenite::Message::Close(None)).await;
    let finish_client = async { while let Some(Ok(_)) = client.recv().await {} };
    let finish_cell = async { while let Some(Ok(_)) = from_cell.next().await {} };
    let _ = tokio::time::timeout(
        CLOSE_GRACE,
        futures::future::join(finish_client, finish_cell),
    )
    .await;
}
