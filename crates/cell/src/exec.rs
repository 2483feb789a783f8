//! `GET /v1/containers/{id}/exec`: runs a command in a running container and carries
//! its streams over a WebSocket (the frames are `api::exec`'s; `docs/exec.md` tells the
//! whole protocol).
//!
//! The command is one more process of the container, started through the runtime like
//! the app's own but outside its log (`log: false`); its output is the runtime's output
//! events for that process. A client that goes away kills it.

use std::sync::Arc;
use std::time::Duration;

use api::exec::{self, ExecControl, ExecEnd, ExecStart};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use runtime::{ExitStatus, ProcessId, ProcessSpec, RuntimeEvent, Stream, TtySize};
use tokio::sync::broadcast::error::RecvError;

use crate::agent::Agent;

/// The signal number the runtime protocol takes (Linux's, like every signal there).
const SIGKILL: i32 = 9;

/// How long a session waits for the client to acknowledge its close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to say what to run once connected.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// `GET /v1/containers/{id}/exec`
pub(crate) async fn exec(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !agent.holds(&id) {
        return crate::http::error(
            StatusCode::NOT_FOUND,
            &format!("no container {id} on this cell"),
        );
    }
    upgrade.on_upgrade(move |socket| session(agent, id, socket))
}

async fn session(agent: Arc<Agent>, container: String, mut socket: WebSocket) {
    let end = match run(&agent, &container, &mut socket).await {
        Ok(code) => ExecEnd::Exit { code },
        Err(Failure::Said(message)) => ExecEnd::Error(message),
        // Nobody is left to tell.
        Err(Failure::ClientGone) => return,
    };
    let text = serde_json::to_string(&end).expect("exec ends always serialise");
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(Message::Close(None)).await;
    // Read on until the client's close: a socket closed with frames unread (an `eof`
    // sent as the command ended) is reset, and the reset can destroy the end frame
    // before the client reads it.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

enum Failure {
    /// Told to the client in an `error` frame.
    Said(String),
    ClientGone,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Said(message)
    }
}

/// Runs one session to the command's end; returns its exit code.
async fn run(agent: &Agent, container: &str, socket: &mut WebSocket) -> Result<i32, Failure> {
    let start = read_start(socket).await?;
    // Subscribed before the process starts, so none of its output is missed.
    let mut events = agent.runtime.subscribe();
    // The app's own variables first, then the session's, which win; the app's main
    // process's user and directory.
    let record = agent.records.load(container);
    let mut env = record
        .as_ref()
        .map(|record| crate::work::work_env(&record.work))
        .unwrap_or_default();
    env.extend(start.env_pairs());
    let exec_as = record.and_then(|r| r.exec_as).unwrap_or_default();
    let spec = ProcessSpec {
        path: start.command[0].clone(),
        args: start.command[1..].to_vec(),
        dir: exec_as.dir,
        env,
        user: exec_as.user,
        nofile: None,
        nproc: None,
        tty: start.tty.map(|t| TtySize {
            rows: t.rows,
            cols: t.cols,
        }),
        log: false,
    };
    let process = agent
        .runtime
        .spawn(container, spec)
        .await
        .map_err(|e| not_started(container, &e))?;
    tracing::info!(%container, process, command = %start.command[0], "exec started");
    let session = Session {
        agent,
        container,
        process,
    };
    let result = session.relay(socket, &mut events).await;
    if result.is_err() {
        // The client went away or the session broke: the command must not outlive it.
        let _ = agent
            .runtime
            .signal(container, Some(process), SIGKILL)
            .await;
    }
    result
}

fn not_started(container: &str, error: &anyhow::Error) -> Failure {
    let message = format!("{error:#}");
    if message.contains(&format!("no container {container}")) {
        Failure::Said(format!(
            "container {container} is not running yet (it is still being made)"
        ))
    } else if message.contains("is dead") {
        Failure::Said(format!("container {container} is not running: it stopped"))
    } else {
        Failure::Said(format!("could not start the command: {message}"))
    }
}

/// The client's first frame.
async fn read_start(socket: &mut WebSocket) -> Result<ExecStart, Failure> {
    let first = tokio::time::timeout(START_DEADLINE, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err(Failure::Said(
                        "the first frame must be a text frame saying what to run".to_owned(),
                    ));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    return Err(Failure::ClientGone);
                }
            }
        }
    })
    .await
    .map_err(|_| {
        Failure::Said(format!(
            "no command arrived within {} s",
            START_DEADLINE.as_secs()
        ))
    })??;
    let start: ExecStart = serde_json::from_str(first.as_str())
        .map_err(|e| Failure::Said(format!("the first frame is not an exec request: {e}")))?;
    start.validate()?;
    Ok(start)
}

struct Session<'a> {
    agent: &'a Agent,
    container: &'a str,
    process: ProcessId,
}

impl Session<'_> {
    /// Carries output to the client and its input and control messages to the
    /// process until the process ends.
    async fn relay(
        &self,
        socket: &mut WebSocket,
        events: &mut tokio::sync::broadcast::Receiver<RuntimeEvent>,
    ) -> Result<i32, Failure> {
        let runtime = self.agent.runtime.clone();
        let ended = runtime.wait(self.container, self.process);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Some(code) = self.forward(socket, event).await? {
                            return Ok(code);
                        }
                    }
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(container = %self.container, skipped, "exec output fell behind; some was lost");
                    }
                    Err(RecvError::Closed) => {
                        return Err(Failure::Said("the cell's runtime went away".to_owned()));
                    }
                },
                // The exit event may have been among events skipped when lagging: the
                // exit is also known here. Output sent before it is already queued.
                status = &mut ended => {
                    let status = status.map_err(|e| Failure::Said(format!("{e:#}")))?;
                    while let Ok(event) = events.try_recv() {
                        if let Some(code) = self.forward(socket, event).await? {
                            return Ok(code);
                        }
                    }
                    return exit_code(status);
                }
                message = socket.recv() => self.handle_client(message).await?,
            }
        }
    }

    /// Sends one runtime event on if it is about this process; the exit code once it
    /// ended.
    async fn forward(
        &self,
        socket: &mut WebSocket,
        event: RuntimeEvent,
    ) -> Result<Option<i32>, Failure> {
        match event {
            RuntimeEvent::Output {
                container,
                process,
                stream,
                data,
                ..
            } if container == self.container && process == self.process => {
                let channel = match stream {
                    Stream::Stdout => exec::STDOUT,
                    Stream::Stderr => exec::STDERR,
                };
                socket
                    .send(Message::Binary(exec::data_frame(channel, &data).into()))
                    .await
                    .map_err(|_| Failure::ClientGone)?;
                Ok(None)
            }
            RuntimeEvent::Exited(end)
                if end.container == self.container && end.process == self.process =>
            {
                exit_code(end.status).map(Some)
            }
            RuntimeEvent::HelperLost => {
                Err(Failure::Said("the cell's runtime went away".to_owned()))
            }
            _ => Ok(None),
        }
    }

    async fn handle_client(
        &self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<(), Failure> {
        let runtime = &self.agent.runtime;
        match message {
            Some(Ok(Message::Binary(frame))) => match exec::split_data_frame(&frame) {
                // An empty input frame means nothing; end of input is a control message.
                Some((exec::STDIN, data)) if !data.is_empty() => runtime
                    .input(self.container, self.process, data.to_vec())
                    .await
                    .map_err(|e| Failure::Said(format!("writing the command's input: {e:#}"))),
                Some((exec::STDIN, _)) => Ok(()),
                Some((channel, _)) => Err(Failure::Said(format!(
                    "clients send only on channel {} (stdin), not {channel}",
                    exec::STDIN
                ))),
                None => Ok(()),
            },
            Some(Ok(Message::Text(text))) => {
                let control: ExecControl = serde_json::from_str(text.as_str()).map_err(|e| {
                    Failure::Said(format!("not a control message ({e}): {}", text.as_str()))
                })?;
                match control {
                    ExecControl::Resize(size) if size.rows == 0 || size.cols == 0 => Err(
                        Failure::Said("resize: rows and cols must be at least 1".to_owned()),
                    ),
                    ExecControl::Resize(size) => runtime
                        .resize(
                            self.container,
                            self.process,
                            TtySize {
                                rows: size.rows,
                                cols: size.cols,
                            },
                        )
                        .await
                        .map_err(|e| Failure::Said(format!("resizing the terminal: {e:#}"))),
                    ExecControl::Eof(true) => runtime
                        .input(self.container, self.process, Vec::new())
                        .await
                        .map_err(|e| Failure::Said(format!("closing the command's input: {e:#}"))),
                    ExecControl::Eof(false) => Ok(()),
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(Failure::ClientGone),
        }
    }
}

/// A shell's exit code for how a process ended.
fn exit_code(status: ExitStatus) -> Result<i32, Failure> {
    match status {
        ExitStatus::Exited { code } => Ok(code),
        ExitStatus::Signaled { signal } => Ok(128 + signal),
        // What a shell shows for a process the OOM killer's SIGKILL ended.
        ExitStatus::OutOfMemory => Ok(128 + 9),
        ExitStatus::Lost => Err(Failure::Said(
            "the cell's runtime lost track of the command".to_owned(),
        )),
    }
}
