//! The event stream, `GET /v1/events`: Server-Sent Events that tail the store's event
//! log from a cursor.
//!
//! The log lives in the store, so a subscriber needs no buffer of its own: it reads
//! `events_after(cursor)` when woken and sends what it read. Writes through this server
//! wake subscribers at once through the [`Hub`]; a poll every second picks up events
//! written by other servers sharing the database. Writers only bump a watch value, so a
//! slow reader delays nobody but itself.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use api::EventMessage;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use store::{Committed, Event, EventKind, LockRecord, Store, Topic};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::error::ApiError;
use crate::request::QueryParams;
use crate::{AppState, cells};

/// Events read from the store per query.
const BATCH: usize = 256;
/// How often a subscriber looks for events that no commit of this server announced.
const POLL: Duration = Duration::from_secs(1);

/// Tells subscribers that the log has grown, or that the server is closing.
#[derive(Debug)]
pub(crate) struct Hub {
    /// The highest sequence number this server has committed.
    committed: watch::Sender<u64>,
    closing: watch::Sender<bool>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            committed: watch::Sender::new(0),
            closing: watch::Sender::new(false),
        }
    }

    /// Wakes the subscribers after a successful commit.
    pub fn committed(&self, committed: &Committed) {
        if let Some(seq) = committed.events.iter().map(|e| e.seq).max() {
            self.committed.send_if_modified(|highest| {
                let newer = seq > *highest;
                *highest = (*highest).max(seq);
                newer
            });
        }
    }

    /// Wakes the subscribers without a known new sequence number: a write that does not
    /// report one (a presence renewal) may still have appended events.
    pub fn poke(&self) {
        self.committed.send_modify(|_| {});
    }

    /// A receiver that changes whenever subscribers are woken.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Ends every stream, so that a graceful shutdown does not wait on them forever.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// What a stream may be filtered to. Presences show only as cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StreamTopic {
    Lrp,
    Instance,
    Task,
    Domain,
    Cell,
}

impl StreamTopic {
    const ALL: [StreamTopic; 5] = [
        StreamTopic::Lrp,
        StreamTopic::Instance,
        StreamTopic::Task,
        StreamTopic::Domain,
        StreamTopic::Cell,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StreamTopic::Lrp => "lrp",
            StreamTopic::Instance => "instance",
            StreamTopic::Task => "task",
            StreamTopic::Domain => "domain",
            StreamTopic::Cell => "cell",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    after: Option<String>,
    topics: Option<String>,
}

/// `GET /v1/events[?after=SEQ][&topics=lrp,instance,...]`, resuming from the
/// `Last-Event-ID` header when present. Without a cursor the stream starts at the
/// newest event: only what happens from now on.
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let topics = parse_topics(query.topics.as_deref())?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let cursor = match (last_event_id, query.after.as_deref()) {
        (Some(id), _) => Some(parse_cursor("Last-Event-ID", id)?),
        (None, Some(after)) => Some(parse_cursor("after", after)?),
        (None, None) => None,
    };
    let bounds = state.store.event_bounds().await?;
    let newest = bounds.map_or(0, |(_, newest)| newest);
    let mut subscriber = Subscriber {
        store: state.store.clone(),
        clock: state.clock.clone(),
        cursor: cursor.unwrap_or(newest),
        topics,
        pending: VecDeque::new(),
        committed: state.hub.committed.subscribe(),
        closing: state.hub.closing.subscribe(),
        poll: tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL),
    };
    subscriber
        .poll
        .set_missed_tick_behavior(MissedTickBehavior::Delay);
    if let Some(cursor) = cursor.filter(|c| *c > newest && bounds.is_some()) {
        // A cursor from the future: the log was reset under it (a new database).
        subscriber.resync(cursor, newest);
    }
    let events = futures::stream::unfold(subscriber, |mut s| async move {
        s.next().await.map(|event| (Ok(event), s))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn parse_topics(raw: Option<&str>) -> Result<BTreeSet<StreamTopic>, ApiError> {
    let mut topics = BTreeSet::new();
    for name in raw.unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let topic = StreamTopic::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "topics",
                    format!("unknown topic {name:?} (one of lrp, instance, task, domain, cell)"),
                )
            })?;
        topics.insert(topic);
    }
    if topics.is_empty() {
        topics.extend(StreamTopic::ALL);
    }
    Ok(topics)
}

fn parse_cursor(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.trim().parse().map_err(|_| {
        ApiError::bad_request(
            field,
            format!("{field} must be an event sequence number (got {raw:?})"),
        )
    })
}

/// One stream's reader of the log.
struct Subscriber {
    store: std::sync::Arc<dyn Store>,
    clock: std::sync::Arc<dyn crate::Clock>,
    /// The sequence number of the last event read (sent or filtered out).
    cursor: u64,
    topics: BTreeSet<StreamTopic>,
    /// Read but not yet sent.
    pending: VecDeque<sse::Event>,
    committed: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    poll: Interval,
}

impl Subscriber {
    /// The next event to send, or `None` when the stream ends (the server is closing,
    /// or the store failed: the client reconnects with its cursor).
    async fn next(&mut self) -> Option<sse::Event> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            // Mark the wake-up seen before reading, so a commit after the read wakes
            // the wait below.
            self.committed.borrow_and_update();
            match self.read().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, cursor = self.cursor, "event stream ends: cannot read the event log");
                    return None;
                }
            }
            tokio::select! {
                changed = self.committed.changed() => if changed.is_err() { return None },
                changed = self.closing.changed() => if changed.is_err() { return None },
                _ = self.poll.tick() => {}
            }
        }
    }

    /// Reads one batch after the cursor into `pending`; whether there was any.
    async fn read(&mut self) -> store::Result<bool> {
        let events = self.store.events_after(self.cursor, BATCH).await?;
        let Some(first) = events.first() else {
            return Ok(false);
        };
        if first.seq > self.cursor + 1 {
            // Sequence numbers may skip (a rolled-back transaction), so a gap alone
            // proves nothing; events older than the oldest kept do.
            if let Some((oldest, _)) = self.store.event_bounds().await?
                && oldest > self.cursor + 1
            {
                self.resync(self.cursor, oldest - 1);
            }
        }
        for event in &events {
            self.cursor = event.seq;
            if let Some((topic, message)) = render(event)
                && self.topics.contains(&topic)
            {
                self.push(&message);
            }
        }
        Ok(true)
    }

    /// Tells the reader it missed the events between `from` and `to`, and goes on from
    /// `to`.
    fn resync(&mut self, from: u64, to: u64) {
        self.cursor = to;
        let message = EventMessage {
            seq: to,
            kind: "resync".to_owned(),
            at: self.clock.now().as_millis(),
            data: raw(&json!({ "after": from, "resume_after": to })),
        };
        self.push(&message);
    }

    fn push(&mut self, message: &EventMessage) {
        match serde_json::to_string(message) {
            Ok(data) => self.pending.push_back(
                sse::Event::default()
                    .id(message.seq.to_string())
                    .event(&message.kind)
                    .data(data),
            ),
            Err(e) => {
                tracing::warn!(seq = message.seq, error = %e, "skipping an event that does not encode")
            }
        }
    }
}

/// The message an event of the log is shown as, and its topic; `None` for events that
/// are not shown (locks, presences other than cells).
pub(crate) fn render(event: &Event) -> Option<(StreamTopic, EventMessage)> {
    let message = |kind: &str, data: Box<RawValue>| EventMessage {
        seq: event.seq,
        kind: kind.to_owned(),
        at: event.at.as_millis(),
        data,
    };
    let topic = match event.kind.topic() {
        Topic::Lrp => StreamTopic::Lrp,
        Topic::Instance => StreamTopic::Instance,
        Topic::Task => StreamTopic::Task,
        Topic::Domain => StreamTopic::Domain,
        Topic::Presence => {
            let (kind, data) = cell_event(event)?;
            return Some((StreamTopic::Cell, message(kind, data)));
        }
    };
    // Only LRPs and tasks carry registry credentials; instance events, the bulk of
    // the stream, pass untouched.
    let data = match topic {
        StreamTopic::Lrp | StreamTopic::Task => redacted(&event.data),
        _ => event.data.clone(),
    };
    Some((topic, message(event.kind.as_str(), data)))
}

/// An LRP's or task's event data without its registry password (the log keeps the row
/// as stored; the stream shows it as the API does). Data that holds credentials but
/// does not parse is not passed on at all.
fn redacted(data: &RawValue) -> Box<RawValue> {
    if !data.get().contains("\"image_credentials\"") {
        return data.to_owned();
    }
    match serde_json::from_str::<Value>(data.get()) {
        Ok(mut value) => {
            if let Some(credentials) = value
                .get_mut("image_credentials")
                .and_then(Value::as_object_mut)
            {
                credentials.remove("password");
            }
            raw(&value)
        }
        Err(_) => raw(&json!({})),
    }
}

/// A presence event about a cell, as a cell event with the cell as its data. A cell
/// that goes away and whose record no longer decodes is still reported, by id.
fn cell_event(event: &Event) -> Option<(&'static str, Box<RawValue>)> {
    let kind = match event.kind {
        EventKind::PresenceCreated => "cell_appeared",
        EventKind::PresenceChanged => "cell_changed",
        EventKind::PresenceRemoved => "cell_removed",
        EventKind::PresenceExpired => "cell_expired",
        _ => return None,
    };
    let record = serde_json::from_str::<LockRecord>(event.data.get()).ok();
    // Only a record that does not decode is looked into as plain JSON for its key.
    let data = match &record {
        Some(_) => None,
        None => serde_json::from_str::<Value>(event.data.get()).ok(),
    };
    let key = match (&record, &data) {
        (Some(record), _) => record.key.as_str(),
        (None, Some(Value::String(key))) => key.as_str(),
        (None, data) => data.as_ref()?.get("key")?.as_str()?,
    };
    let id = key.strip_prefix(cells::PREFIX)?;
    match record.as_ref().and_then(cells::decode) {
        Some(cell) => Some((kind, serde_json::value::to_raw_value(&cell).ok()?)),
        None if matches!(
            event.kind,
            EventKind::PresenceRemoved | EventKind::PresenceExpired
        ) =>
        {
            Some((kind, raw(&json!({ "id": id }))))
        }
        None => None,
    }
}

/// `value` as JSON text for a message.
fn raw(value: &(impl Serialize + ?Sized)) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Timestamp;
    use store::LockKind;

    fn presence(kind: EventKind, key: &str, value: &str) -> Event {
        let record = LockRecord {
            key: key.to_owned(),
            owner: "o".to_owned(),
            kind: LockKind::Presence,
            value: value.to_owned(),
            fence: 1,
            expires_at: Timestamp(10),
        };
        Event {
            seq: 7,
            kind,
            at: Timestamp(5),
            data: serde_json::value::to_raw_value(&record).unwrap(),
        }
    }

    const CELL: &str = r#"{"id":"c1","address":"http://c1:1800","capacity":{"memory_mb":1024,"disk_mb":2048,"containers":10}}"#;

    #[test]
    fn presences_show_as_cells() {
        let cases = [
            (
                EventKind::PresenceCreated,
                "cell/c1",
                CELL,
                Some("cell_appeared"),
                Some("c1"),
            ),
            (
                EventKind::PresenceChanged,
                "cell/c1",
                CELL,
                Some("cell_changed"),
                Some("c1"),
            ),
            (
                EventKind::PresenceRemoved,
                "cell/c1",
                CELL,
                Some("cell_removed"),
                Some("c1"),
            ),
            (
                EventKind::PresenceExpired,
                "cell/c1",
                "garbage",
                Some("cell_expired"),
                Some("c1"),
            ),
            (EventKind::PresenceCreated, "cell/c1", "garbage", None, None),
            (EventKind::PresenceCreated, "router/r1", CELL, None, None),
        ];
        for (kind, key, value, shown, id) in cases {
            let got = render(&presence(kind, key, value));
            assert_eq!(
                got.as_ref().map(|(_, m)| m.kind.as_str()),
                shown,
                "{kind} {key}"
            );
            if let Some((topic, message)) = got {
                assert_eq!(topic, StreamTopic::Cell);
                let data: Value = serde_json::from_str(message.data.get()).unwrap();
                assert_eq!(data["id"].as_str(), id);
                assert_eq!((message.seq, message.at), (7, 5));
            }
        }
    }

    #[test]
    fn topics_parse() {
        let all: BTreeSet<_> = StreamTopic::ALL.into_iter().collect();
        assert_eq!(parse_topics(None).unwrap(), all);
        assert_eq!(parse_topics(Some("")).unwrap(), all);
        assert_eq!(
            parse_topics(Some("lrp, cell")).unwrap(),
            [StreamTopic::Lrp, StreamTopic::Cell].into_iter().collect()
        );
        let err = parse_topics(Some("lrp,presence")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("topics"));
        assert!(err.message.contains("\"presence\""), "{err:?}");
    }
}
