//! Logs (`GET /v1/lrps/{name}/logs`, `GET /v1/tasks/{id}/logs`) as a `Stream` of
//! [`api::LogEntry`]s.

use api::LogEntry;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use reqwest::Method;

use crate::{Client, ClientError};

/// Whose log.
#[derive(Debug, Clone, Copy)]
pub enum LogsOf<'a> {
    Lrp(&'a str),
    Task(&'a str),
}

impl Client {
    /// The newest `tail` lines of a log, then, with `follow`, each new line until the
    /// server ends the stream (the LRP is deleted, the task completed) or the stream is
    /// dropped. Fails at once when the LRP or task does not exist.
    pub async fn logs(
        &self,
        of: LogsOf<'_>,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<LogEntry, ClientError>>, ClientError> {
        let segments = match of {
            LogsOf::Lrp(name) => ["lrps", name, "logs"],
            LogsOf::Task(id) => ["tasks", id, "logs"],
        };
        let mut query = Vec::new();
        if let Some(tail) = tail {
            query.push(("tail", tail.to_string()));
        }
        if follow {
            query.push(("follow", "true".to_owned()));
        }
        let url = self.url(&segments, &query)?;
        let route = format!("GET {}", url.path());
        // No overall timeout: a followed log stays open.
        let request = self.authorized(Method::GET, url);
        let response = self.send(&route, request).await?;
        let lines = Lines {
            client: self.clone(),
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            done: false,
        };
        Ok(futures::stream::unfold(lines, Lines::next).boxed())
    }
}

struct Lines {
    client: Client,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: Vec<u8>,
    done: bool,
}

impl Lines {
    async fn next(mut self) -> Option<(Result<LogEntry, ClientError>, Lines)> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let entry = serde_json::from_slice::<LogEntry>(line)
                    .map_err(|e| ClientError::Decode(format!("a log line is not a LogEntry: {e}")));
                return Some((entry, self));
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.done = true;
                    self.buffer.clear();
                    let error = match self.client.transport(&e) {
                        ClientError::Transport(m) => {
                            ClientError::Transport(format!("lost the log stream: {m}"))
                        }
                        other => other,
                    };
                    return Some((Err(error), self));
                }
                None => {
                    self.done = true;
                    // A last line without its newline still counts.
                    if !self.buffer.is_empty() {
                        self.buffer.push(b'\n');
                    }
                }
            }
        }
    }
}
