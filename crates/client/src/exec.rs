//! Exec sessions: `GET /v1/lrps/{name}/instances/{index}/exec` as a WebSocket carrying
//! the frames of `api::exec` (see `docs/exec.md`).

use api::ErrorBody;
use api::exec::{self, ExecControl, ExecEnd, ExecStart, TermSize};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{Client, ClientError};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One running command: read its output with [`ExecSession::next`], feed its input
/// with [`ExecSession::stdin`].
pub struct ExecSession {
    socket: Socket,
    /// What the error messages call the instance: `web/0`.
    target: String,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What a session says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last thing a session says: the command's exit code or why it failed.
    End(ExecEnd),
}

/// Whose container a command runs in.
#[derive(Debug, Clone, Copy)]
pub enum ExecIn<'a> {
    Instance { lrp: &'a str, index: u32 },
    Task(&'a str),
}

impl std::fmt::Display for ExecIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecIn::Instance { lrp, index } => write!(f, "{lrp}/{index}"),
            ExecIn::Task(id) => write!(f, "task {id}"),
        }
    }
}

impl Client {
    /// Starts `start.command` in an instance's or a task's container. Refusals (no
    /// such LRP, instance or task, not running, a bad command) are
    /// [`ClientError::Api`] errors.
    pub async fn exec(
        &self,
        within: ExecIn<'_>,
        start: &ExecStart,
    ) -> Result<ExecSession, ClientError> {
        let index_text;
        let segments: Vec<&str> = match within {
            ExecIn::Instance { lrp, index } => {
                index_text = index.to_string();
                vec!["lrps", lrp, "instances", &index_text, "exec"]
            }
            ExecIn::Task(id) => vec!["tasks", id, "exec"],
        };
        let mut url = self.url(&segments, &[])?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ClientError::InvalidUrl {
                url: self.api_url().to_owned(),
                reason: "cannot carry a WebSocket".to_owned(),
            })?;
        let route = format!("GET {}", url.path());
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Transport(format!("{route}: {e}")))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                ClientError::Transport("the API token cannot be sent in a header".to_owned())
            })?;
            request
                .headers_mut()
                .insert(tungstenite::http::header::AUTHORIZATION, value);
        }
        let (mut socket, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tungstenite::Error::Http(response)) => {
                return Err(refusal(&route, *response));
            }
            Err(e) => {
                return Err(ClientError::Transport(format!(
                    "cannot reach the Corral API at {} ({e})",
                    self.api_url()
                )));
            }
        };
        let first = serde_json::to_string(start).expect("exec requests always serialise");
        let target = within.to_string();
        socket
            .send(Message::Text(first.into()))
            .await
            .map_err(|e| lost(&target, &e))?;
        Ok(ExecSession { socket, target })
    }
}

impl ExecSession {
    /// The next output or the end. A connection that closes without an end is a
    /// [`ClientError::Transport`] error.
    pub async fn next(&mut self) -> Result<ExecOutput, ClientError> {
        loop {
            let message = match self.socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(lost(&self.target, &e)),
                None => return Err(self.closed_early()),
            };
            match message {
                Message::Binary(frame) => match exec::split_data_frame(&frame) {
                    Some((exec::STDOUT, data)) => return Ok(ExecOutput::Stdout(data.to_vec())),
                    Some((exec::STDERR, data)) => return Ok(ExecOutput::Stderr(data.to_vec())),
                    _ => continue,
                },
                Message::Text(text) => {
                    let end: ExecEnd = serde_json::from_str(text.as_str()).map_err(|e| {
                        ClientError::Decode(format!(
                            "exec in {} sent a control frame that is not an exit or error ({e}): {}",
                            self.target,
                            text.as_str()
                        ))
                    })?;
                    return Ok(ExecOutput::End(end));
                }
                Message::Close(_) => return Err(self.closed_early()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Bytes for the command's input.
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if data.is_empty() {
            return Ok(());
        }
        let frame = exec::data_frame(exec::STDIN, data);
        self.send(Message::Binary(frame.into())).await
    }

    /// No more input: the command reads end of file.
    pub async fn eof(&mut self) -> Result<(), ClientError> {
        self.control(ExecControl::Eof(true)).await
    }

    /// The terminal's new size.
    pub async fn resize(&mut self, size: TermSize) -> Result<(), ClientError> {
        self.control(ExecControl::Resize(size)).await
    }

    /// Ends the session (the command is killed if it still runs), waiting briefly for
    /// the server to acknowledge.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.socket.next().await {}
        })
        .await;
    }

    async fn control(&mut self, control: ExecControl) -> Result<(), ClientError> {
        let text = serde_json::to_string(&control).expect("control frames always serialise");
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.socket
            .send(message)
            .await
            .map_err(|e| lost(&self.target, &e))
    }

    fn closed_early(&self) -> ClientError {
        ClientError::Transport(format!(
            "the exec session in {} closed before the command ended",
            self.target
        ))
    }
}

fn lost(target: &str, error: &tungstenite::Error) -> ClientError {
    ClientError::Transport(format!("the exec session in {target} broke: {error}"))
}

/// The error for an answer other than the upgrade: the server's error envelope when
/// it sent one.
fn refusal(route: &str, response: tungstenite::http::Response<Option<Vec<u8>>>) -> ClientError {
    let status = response.status().as_u16();
    let body = response.into_body().unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(envelope) => ClientError::Api {
            status,
            error: envelope.error,
        },
        Err(_) => ClientError::Decode(format!(
            "the server answered {status} to {route}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}
