//! The event stream (`GET /v1/events`) as a `Stream` of [`api::EventMessage`]s.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use api::EventMessage;
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::Method;
use reqwest::header::ACCEPT;

use crate::sse::{SseEvent, SseParser};
use crate::{Client, ClientError};

/// The events of one connection to `GET /v1/events`, in order. It connects on first
/// poll, ends when the server closes the stream, and ends after yielding an error.
pub struct EventStream {
    inner: BoxStream<'static, Result<EventMessage, ClientError>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<EventMessage, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

enum State {
    Connect {
        client: Client,
        query: Vec<(&'static str, String)>,
    },
    Reading(Reading),
    Done,
}

struct Reading {
    client: Client,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl EventStream {
    pub(crate) fn new(client: Client, query: Vec<(&'static str, String)>) -> EventStream {
        let inner = futures::stream::unfold(State::Connect { client, query }, next).boxed();
        EventStream { inner }
    }

    /// A stream already connected: the server has answered, so its cursor is fixed
    /// and every event committed from now on will be delivered.
    pub(crate) async fn connected(
        client: Client,
        query: Vec<(&'static str, String)>,
    ) -> Result<EventStream, ClientError> {
        let body = connect(&client, &query).await?;
        let reading = State::Reading(Reading {
            client,
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
        });
        let inner = futures::stream::unfold(reading, next).boxed();
        Ok(EventStream { inner })
    }
}

/// One step of the stream: connect if not yet connected, then hand out parsed events,
/// reading more of the body whenever none is ready.
async fn next(mut state: State) -> Option<(Result<EventMessage, ClientError>, State)> {
    loop {
        state = match state {
            State::Done => return None,
            State::Connect { client, query } => match connect(&client, &query).await {
                Ok(body) => State::Reading(Reading {
                    client,
                    body,
                    parser: SseParser::new(),
                    ready: VecDeque::new(),
                }),
                Err(e) => return Some((Err(e), State::Done)),
            },
            State::Reading(mut reading) => {
                if let Some(event) = reading.ready.pop_front() {
                    return match message(event) {
                        Ok(message) => Some((Ok(message), State::Reading(reading))),
                        Err(e) => Some((Err(e), State::Done)),
                    };
                }
                match reading.body.next().await {
                    Some(Ok(chunk)) => match reading.parser.push(&chunk) {
                        Ok(events) => reading.ready.extend(events),
                        Err(e) => return Some((Err(ClientError::Decode(e)), State::Done)),
                    },
                    Some(Err(e)) => {
                        let error = match reading.client.transport(&e) {
                            ClientError::Transport(m) => {
                                ClientError::Transport(format!("lost the event stream: {m}"))
                            }
                            other => other,
                        };
                        return Some((Err(error), State::Done));
                    }
                    None => return None,
                }
                State::Reading(reading)
            }
        }
    }
}

async fn connect(
    client: &Client,
    query: &[(&'static str, String)],
) -> Result<BoxStream<'static, reqwest::Result<Bytes>>, ClientError> {
    let url = client.url(&["events"], query)?;
    let route = format!("GET {}", url.path());
    // No overall timeout: the stream is meant to stay open.
    let request = client
        .authorized(Method::GET, url)
        .header(ACCEPT, "text/event-stream");
    let response = client.send(&route, request).await?;
    Ok(response.bytes_stream().boxed())
}

/// The event message an SSE event carries. A `resync` whose data is not an event
/// message is still passed on as one, since what matters about it is its kind.
fn message(event: SseEvent) -> Result<EventMessage, ClientError> {
    match serde_json::from_str::<EventMessage>(&event.data) {
        Ok(message) => Ok(message),
        Err(_) if event.event == "resync" => Ok(EventMessage {
            seq: event
                .id
                .as_deref()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0),
            kind: "resync".to_owned(),
            at: 0,
            // Its data as it came, or as a JSON string if it is not JSON.
            data: serde_json::from_str(&event.data)
                .or_else(|_| serde_json::value::to_raw_value(&event.data))
                .map_err(|e| ClientError::Decode(format!("resync event data: {e}")))?,
        }),
        Err(e) => Err(ClientError::Decode(format!(
            "event {} ({}) is not a Corral event message: {e}",
            event.id.as_deref().unwrap_or("without id"),
            event.event
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn messages() {
        let ok = message(sse(
            Some("3"),
            "lrp_created",
            r#"{"seq":3,"kind":"lrp_created","at":10,"data":{"name":"web"}}"#,
        ))
        .expect("an event message");
        assert_eq!((ok.seq, ok.kind.as_str(), ok.at), (3, "lrp_created", 10));

        let resync = message(sse(Some("9"), "resync", "{}")).expect("a resync");
        assert_eq!((resync.seq, resync.kind.as_str()), (9, "resync"));

        let err = message(sse(Some("4"), "lrp_created", "not json")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event 4 (lrp_created) is not a Corral event message"),
            "{err}"
        );
    }
}
