//! Logs: `GET /v1/lrps/{name}/logs` and `GET /v1/tasks/{id}/logs`, newline-delimited
//! JSON `api::LogEntry` lines (see `api::logs`).
//!
//! The server keeps no log. Cells keep their containers' output and their own notes
//! about them; this module asks every live cell for the newest lines of the LRP or task,
//! merges them by time, and, when following, keeps one stream open per cell and adds
//! the server's own view of the lifecycle (claimed, running, crashed, scaled, placement
//! failed) as it appears in the store's event log. Cells that appear while following
//! are followed too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use api::{LogEntry, LogSource, LogTail};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;
use futures::StreamExt;
use model::{Cell, Instance, InstanceState, Lrp, Name, Presence, Task, TaskState};
use serde::Deserialize;
use store::{Event, EventKind};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::request::{QueryParams, path_name, query_bool};
use crate::{AppState, cells};

/// Lines a tail shows when the request names no number.
const DEFAULT_TAIL: usize = 100;
/// Longest wait for one cell's tail.
const CELL_TIMEOUT: Duration = Duration::from_secs(3);
/// Blank lines keep a quiet stream's connection known to be alive.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often the follower looks for events other servers wrote.
const EVENT_POLL: Duration = Duration::from_secs(1);
/// Lines in flight to a slow reader before the cell streams wait.
const BACKLOG: usize = 1024;
/// After a task completes, how long its stream stays open for the cell's last lines.
const TASK_LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    tail: Option<String>,
    follow: Option<String>,
}

struct Request {
    tail: usize,
    follow: bool,
}

fn parse_query(query: LogQuery) -> Result<Request, ApiError> {
    let tail = match query.tail.as_deref() {
        None => DEFAULT_TAIL,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= api::MAX_LOG_TAIL)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "tail",
                    format!(
                        "tail must be a number of lines from 0 to {} (got {raw:?})",
                        api::MAX_LOG_TAIL
                    ),
                )
            })?,
    };
    let follow = query_bool("follow", query.follow.as_deref())?;
    Ok(Request { tail, follow })
}

/// Whose log: what the cells are asked for, and what the event log is filtered by.
#[derive(Debug, Clone)]
enum Subject {
    Lrp(Box<Lrp>),
    Task(Box<Task>),
}

impl Subject {
    fn cell_query(&self) -> (&'static str, &Name) {
        match self {
            Subject::Lrp(lrp) => ("lrp", &lrp.spec.name),
            Subject::Task(task) => ("task", &task.id),
        }
    }
}

/// `GET /v1/lrps/{name}/logs[?tail=N][&follow=true]`
pub(crate) async fn lrp(
    State(state): State<AppState>,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<LogQuery>,
) -> Result<Response, ApiError> {
    let name = path_name("LRP", &name)?;
    let request = parse_query(query)?;
    let lrp = state
        .store
        .get_lrp(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no LRP named {name}")))?;
    serve(state, Subject::Lrp(Box::new(lrp)), request).await
}

/// `GET /v1/tasks/{id}/logs[?tail=N][&follow=true]`
pub(crate) async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LogQuery>,
) -> Result<Response, ApiError> {
    let id = path_name("task", &id)?;
    let request = parse_query(query)?;
    let task = state
        .store
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task with id {id}")))?;
    serve(state, Subject::Task(Box::new(task)), request).await
}

async fn serve(
    state: AppState,
    subject: Subject,
    mut request: Request,
) -> Result<Response, ApiError> {
    // The instance rows the server's lines describe changes against are read before
    // the event cursor: a change that falls between the two is then told (late) by the
    // next event, where rows read after the cursor would already hold it and it would
    // never be told.
    let instances = instances_of(&state, &subject).await?;
    // The event cursor is taken before the tails, so no lifecycle change falls between.
    let cursor = state
        .store
        .event_bounds()
        .await?
        .map_or(0, |(_, newest)| newest);
    // A task done before the cursor will say nothing more: its log is its tail.
    let subject = match subject {
        Subject::Task(task) => {
            let now = state.store.get_task(&task.id).await?.unwrap_or(*task);
            if matches!(now.state, TaskState::Completed | TaskState::Resolving) {
                request.follow = false;
            }
            Subject::Task(Box::new(now))
        }
        lrp => lrp,
    };
    let mut cells: Vec<Cell> = state
        .store
        .list_locks(cells::PREFIX, state.now())
        .await?
        .iter()
        .filter_map(cells::decode)
        .collect();
    // One agent answers for every cell at its address (a process simulating many
    // cells): it is asked once.
    let mut addresses = std::collections::HashSet::new();
    cells.retain(|c| addresses.insert(c.address.clone()));
    let tails = futures::future::join_all(
        cells
            .iter()
            .map(|cell| tail_of(&state, cell, &subject, request.tail)),
    )
    .await;
    let mut entries = Vec::new();
    let mut cursors = HashMap::new();
    let mut no_logs = std::collections::HashSet::new();
    for (cell, tail) in cells.iter().zip(tails) {
        match tail {
            Ok(tail) => {
                entries.extend(tail.entries);
                cursors.insert(cell.id.clone(), tail.next);
            }
            Err(TailError::NoLogs) => {
                no_logs.insert(cell.id.clone());
            }
            // Followed anyway, from what it has then: it may answer later.
            Err(TailError::Failed(e)) => entries.push(api_line(
                state.now(),
                None,
                format!("cell {} did not answer: {e}", cell.id),
            )),
        }
    }
    // What the server knows now, each line at the time its row entered its state.
    entries.extend(current_lines(&subject, &instances));
    // Stable: lines of one cell with the same millisecond keep their order.
    entries.sort_by_key(|e| e.at);
    let skip = entries.len().saturating_sub(request.tail);
    entries.drain(..skip);

    let (tx, rx) = mpsc::channel::<LogEntry>(BACKLOG);
    // The watcher ends the stream (the LRP is deleted, the task done) by dropping
    // `end`; the cell followers then see the reader gone.
    let (end, ended) = oneshot::channel::<()>();
    if request.follow {
        for cell in cells.iter().filter(|c| !no_logs.contains(&c.id)) {
            let since = cursors.get(&cell.id).copied();
            spawn_cell_follower(&state, cell.clone(), subject.clone(), since, tx.clone());
        }
        let watcher = Watcher {
            state: state.clone(),
            subject: subject.clone(),
            cursor,
            followed: cells.iter().map(|c| c.address.clone()).collect(),
            tx: tx.clone(),
            _end: end,
        };
        tokio::spawn(watcher.run(instances));
    }
    drop(tx);
    let body = futures::stream::iter(entries.into_iter().map(Some))
        .chain(keepalive(rx, ended))
        .map(|entry| {
            let mut line = match entry {
                Some(entry) => serde_json::to_vec(&entry).unwrap_or_default(),
                None => Vec::new(),
            };
            line.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(line))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .map_err(|e| {
            ApiError::new(
                api::ErrorCode::Internal,
                format!("building the log response: {e}"),
            )
        })
}

/// The lines of `rx`, with `None` (a blank line) after each quiet [`KEEPALIVE`].
/// Ends when every sender is gone or `ended` fires (its sender sent or dropped).
fn keepalive(
    rx: mpsc::Receiver<LogEntry>,
    ended: oneshot::Receiver<()>,
) -> impl futures::Stream<Item = Option<LogEntry>> {
    futures::stream::unfold((rx, ended), |(mut rx, mut ended)| async move {
        tokio::select! {
            // Lines already sent go out before the end.
            biased;
            next = tokio::time::timeout(KEEPALIVE, rx.recv()) => match next {
                Ok(Some(entry)) => Some((Some(entry), (rx, ended))),
                Ok(None) => None,
                Err(_) => Some((None, (rx, ended))),
            },
            _ = &mut ended => None,
        }
    })
}

fn api_line(at: model::Timestamp, index: Option<u32>, text: String) -> LogEntry {
    LogEntry {
        at: at.0,
        source: LogSource::Api,
        index,
        text,
    }
}

fn cell_url(cell: &Cell, subject: &Subject, rest: &str) -> String {
    let (key, name) = subject.cell_query();
    format!(
        "{}/v1/logs?{key}={name}{rest}",
        cell.address.trim_end_matches('/')
    )
}

async fn tail_of(
    state: &AppState,
    cell: &Cell,
    subject: &Subject,
    n: usize,
) -> Result<LogTail, TailError> {
    let url = cell_url(cell, subject, &format!("&tail={n}"));
    let response = state
        .http
        .get(&url)
        .bearer_auth(&*state.token)
        .timeout(CELL_TIMEOUT)
        .send()
        .await
        .map_err(|e| TailError::Failed(e.without_url().to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(TailError::NoLogs);
    }
    if !response.status().is_success() {
        return Err(TailError::Failed(format!(
            "it answered {}",
            response.status()
        )));
    }
    response
        .json::<LogTail>()
        .await
        .map_err(|e| TailError::Failed(e.without_url().to_string()))
}

/// Why a cell gave no tail.
#[derive(Debug)]
enum TailError {
    /// It keeps no logs: simulated cells run nothing and serve no `/v1/logs`.
    NoLogs,
    Failed(String),
}

/// Streams one cell's new lines into `tx` until the reader is gone. A broken stream is
/// opened again while the reader is there; lines written in between may be missed.
fn spawn_cell_follower(
    state: &AppState,
    cell: Cell,
    subject: Subject,
    since: Option<u64>,
    tx: mpsc::Sender<LogEntry>,
) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut since = since;
        let mut backoff = Duration::from_millis(250);
        while !tx.is_closed() {
            let from = match since.take() {
                Some(since) => since,
                None => match tail_of(&state, &cell, &subject, 0).await {
                    Ok(tail) => tail.next,
                    Err(TailError::NoLogs) => return,
                    Err(TailError::Failed(_)) => {
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = tx.closed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            let url = cell_url(&cell, &subject, &format!("&since={from}&follow=true"));
            let response = state.http.get(&url).bearer_auth(&*state.token).send();
            let response = tokio::select! {
                response = response => response,
                () = tx.closed() => return,
            };
            if let Ok(response) = response
                && response.status().is_success()
            {
                backoff = Duration::from_millis(250);
                if forward_lines(response, &tx).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// Reads a cell's NDJSON stream into `tx`; `Err` when the reader is gone.
async fn forward_lines(response: reqwest::Response, tx: &mpsc::Sender<LogEntry>) -> Result<(), ()> {
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = tx.closed() => return Err(()),
        };
        let Some(Ok(chunk)) = chunk else {
            return Ok(());
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<LogEntry>(line) {
                Ok(entry) => tx.send(entry).await.map_err(|_| ())?,
                Err(e) => tracing::debug!("a cell sent a log line that does not parse: {e}"),
            }
        }
    }
}

/// The instance rows of an LRP now: what a tail says of each, and what later changes
/// are described against.
async fn instances_of(state: &AppState, subject: &Subject) -> Result<Vec<Instance>, ApiError> {
    let Subject::Lrp(lrp) = subject else {
        return Ok(Vec::new());
    };
    let filter = store::InstanceFilter {
        lrp: Some(lrp.spec.name.clone()),
        ..store::InstanceFilter::default()
    };
    Ok(state.store.list_instances(&filter).await?)
}

/// Follows the store's event log for one LRP's or task's lifecycle, and for cells that
/// appear (whose logs are then followed too).
struct Watcher {
    state: AppState,
    subject: Subject,
    cursor: u64,
    /// The addresses of the cells followed: one stream per agent.
    followed: std::collections::HashSet<String>,
    tx: mpsc::Sender<LogEntry>,
    /// Dropped when the stream should end.
    _end: oneshot::Sender<()>,
}

impl Watcher {
    async fn run(mut self, instances: Vec<Instance>) {
        let mut story = Story::new(self.subject.clone(), instances);
        let mut committed = self.state.hub.subscribe();
        let mut poll = tokio::time::interval(EVENT_POLL);
        loop {
            let events = match self.state.store.events_after(self.cursor, 256).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::debug!("reading events for a log stream: {e}");
                    Vec::new()
                }
            };
            let read_all = events.len() < 256;
            for event in &events {
                self.cursor = event.seq;
                if event.kind == EventKind::PresenceCreated {
                    self.follow_new_cell(event);
                }
                let told = story.tell(event);
                for text in told.lines {
                    let entry = LogEntry {
                        at: event.at.0,
                        source: LogSource::Api,
                        index: text.0,
                        text: text.1,
                    };
                    if self.tx.send(entry).await.is_err() {
                        return;
                    }
                }
                if told.ended {
                    if matches!(self.subject, Subject::Task(_)) {
                        tokio::time::sleep(TASK_LINGER).await;
                    }
                    // Dropping every sender ends the response; the cell followers end
                    // when they see the reader gone.
                    return;
                }
            }
            if !read_all {
                continue;
            }
            tokio::select! {
                _ = committed.changed() => {}
                _ = poll.tick() => {}
                () = self.tx.closed() => return,
            }
        }
    }

    fn follow_new_cell(&mut self, event: &Event) {
        let Ok(record) = serde_json::from_str::<store::LockRecord>(event.data.get()) else {
            return;
        };
        let Some(cell) = cells::decode(&record) else {
            return;
        };
        if self.followed.insert(cell.address.clone()) {
            spawn_cell_follower(
                &self.state,
                cell,
                self.subject.clone(),
                Some(0),
                self.tx.clone(),
            );
        }
    }
}

/// What the server says about one LRP or task as its rows change: the pure part of
/// following, fed the store's events in order.
#[derive(Debug)]
struct Story {
    subject: Subject,
    /// The last row seen of each instance, by (index, presence).
    instances: HashMap<(u32, Presence), Instance>,
}

/// Lines told about one event, by instance index; `ended` when the subject is gone or,
/// for a task, done.
#[derive(Debug, Default, PartialEq)]
struct Told {
    lines: Vec<(Option<u32>, String)>,
    ended: bool,
}

impl Story {
    fn new(subject: Subject, instances: Vec<Instance>) -> Story {
        Story {
            subject,
            instances: instances
                .into_iter()
                .map(|i| ((i.index, i.presence), i))
                .collect(),
        }
    }

    fn tell(&mut self, event: &Event) -> Told {
        let mut told = Told::default();
        let data = event.data.get();
        match (&mut self.subject, event.kind) {
            (Subject::Lrp(lrp), EventKind::LrpChanged) => {
                let Ok(next) = serde_json::from_str::<Lrp>(data) else {
                    return told;
                };
                if next.spec.name != lrp.spec.name {
                    return told;
                }
                if next.spec.instances != lrp.spec.instances {
                    told.lines.push((
                        None,
                        format!(
                            "scaled from {} to {} instances",
                            lrp.spec.instances, next.spec.instances
                        ),
                    ));
                } else {
                    told.lines
                        .push((None, format!("updated (generation {})", next.generation)));
                }
                **lrp = next;
            }
            (Subject::Lrp(lrp), EventKind::LrpRemoved) => {
                #[derive(Deserialize)]
                struct Key {
                    name: Name,
                }
                if serde_json::from_str::<Key>(data).is_ok_and(|k| k.name == lrp.spec.name) {
                    told.lines.push((None, "deleted".to_owned()));
                    told.ended = true;
                }
            }
            (Subject::Lrp(lrp), EventKind::InstanceCreated | EventKind::InstanceChanged) => {
                let Ok(next) = serde_json::from_str::<Instance>(data) else {
                    return told;
                };
                if next.lrp != lrp.spec.name {
                    return told;
                }
                let key = (next.index, next.presence);
                if let Some(text) = describe_instance(self.instances.get(&key), &next) {
                    told.lines.push((Some(next.index), text));
                }
                self.instances.insert(key, next);
            }
            (Subject::Lrp(lrp), EventKind::InstanceRemoved) => {
                #[derive(Deserialize)]
                struct Key {
                    lrp: Name,
                    index: u32,
                    presence: Presence,
                }
                if let Ok(key) = serde_json::from_str::<Key>(data)
                    && key.lrp == lrp.spec.name
                {
                    self.instances.remove(&(key.index, key.presence));
                    let what = match key.presence {
                        Presence::Ordinary => "removed",
                        Presence::Evacuating => "evacuated copy removed",
                        Presence::Suspect => "suspect copy removed",
                    };
                    told.lines.push((Some(key.index), what.to_owned()));
                }
            }
            (Subject::Task(task), EventKind::TaskChanged) => {
                let Ok(next) = serde_json::from_str::<Task>(data) else {
                    return told;
                };
                if next.id != task.id {
                    return told;
                }
                if let Some(text) = describe_task(task, &next) {
                    told.lines.push((None, text));
                }
                told.ended = matches!(next.state, TaskState::Completed | TaskState::Resolving);
                **task = next;
            }
            (Subject::Task(task), EventKind::TaskRemoved) => {
                #[derive(Deserialize)]
                struct Key {
                    id: Name,
                }
                if serde_json::from_str::<Key>(data).is_ok_and(|k| k.id == task.id) {
                    told.lines.push((None, "deleted".to_owned()));
                    told.ended = true;
                }
            }
            _ => {}
        }
        told
    }
}

/// The server's view of an LRP's instances or a task as it is now: one line each, at
/// the time it entered its current state.
fn current_lines(subject: &Subject, instances: &[Instance]) -> Vec<LogEntry> {
    let line = |at: model::Timestamp, index, text| LogEntry {
        at: at.0,
        source: LogSource::Api,
        index,
        text,
    };
    match subject {
        Subject::Lrp(_) => instances
            .iter()
            .filter_map(|i| describe_instance(None, i).map(|t| line(i.since, Some(i.index), t)))
            .collect(),
        Subject::Task(task) => {
            let mut before = (**task).clone();
            before.state = match task.state {
                TaskState::Pending => TaskState::Running,
                _ => TaskState::Pending,
            };
            describe_task(&before, task)
                .map(|t| line(task.updated_at, None, t))
                .into_iter()
                .collect()
        }
    }
}

/// What changed about an instance, in words; `None` when nothing a user cares about did.
fn describe_instance(prev: Option<&Instance>, next: &Instance) -> Option<String> {
    let cell = next
        .key
        .as_ref()
        .map(|k| k.cell_id.to_string())
        .unwrap_or_else(|| "?".to_owned());
    let state_changed = prev.is_none_or(|p| p.state != next.state);
    let copy = match next.presence {
        Presence::Ordinary => "",
        Presence::Evacuating => " (evacuating copy)",
        Presence::Suspect => " (on a cell that stopped answering)",
    };
    if prev.is_some_and(|p| p.presence == Presence::Ordinary)
        && next.presence == Presence::Evacuating
    {
        return Some(format!("evacuating from cell {cell}"));
    }
    // A crash the policy restarts at once goes from RUNNING straight to UNCLAIMED:
    // the crash count says it crashed.
    if prev.is_some_and(|p| next.crash_count > p.crash_count) {
        let reason = next.crash_reason.as_deref().unwrap_or("no reason given");
        let times = match next.crash_count {
            1 => "1 crash".to_owned(),
            n => format!("{n} crashes"),
        };
        return Some(match next.state {
            InstanceState::Crashed => format!("crashed ({times}): {reason}"),
            _ => format!("crashed ({times}): {reason}; starting it again"),
        });
    }
    if !state_changed {
        if let Some(error) = &next.placement_error
            && prev.is_none_or(|p| p.placement_error.as_ref() != Some(error))
        {
            return Some(format!("cannot be placed: {error}"));
        }
        if prev.is_some_and(|p| p.routable != next.routable) && next.state == InstanceState::Running
        {
            return Some(if next.routable {
                format!("ready for traffic on cell {cell}")
            } else {
                format!("not ready for traffic on cell {cell}")
            });
        }
        return None;
    }
    Some(match next.state {
        InstanceState::Unclaimed => match (&next.placement_error, prev) {
            (Some(error), _) => format!("cannot be placed: {error}"),
            (None, None) => "wanted: waiting for a cell".to_owned(),
            (None, Some(_)) => "waiting for a cell".to_owned(),
        },
        InstanceState::Claimed => format!("claimed by cell {cell}{copy}"),
        InstanceState::Running => {
            let ports: Vec<String> = next
                .ports
                .iter()
                .map(|p| format!("{}->{}", p.host_port, p.container_port))
                .collect();
            let address = next.address.clone().unwrap_or_default();
            if ports.is_empty() {
                format!("running on cell {cell}{copy}")
            } else {
                format!(
                    "running on cell {cell}{copy} at {address} ({})",
                    ports.join(", ")
                )
            }
        }
        InstanceState::Crashed => {
            let reason = next.crash_reason.as_deref().unwrap_or("no reason given");
            let times = match next.crash_count {
                1 => "1 crash".to_owned(),
                n => format!("{n} crashes"),
            };
            format!("crashed ({times}): {reason}")
        }
    })
}

fn describe_task(prev: &Task, next: &Task) -> Option<String> {
    if prev.state == next.state {
        return None;
    }
    Some(match next.state {
        TaskState::Pending => "pending: waiting for a cell".to_owned(),
        TaskState::Running => format!(
            "running on cell {}",
            next.cell_id.as_ref().map_or("?", |c| c.as_str())
        ),
        TaskState::Completed | TaskState::Resolving => match (&next.failed, &next.failure_reason) {
            (true, Some(reason)) => format!("failed: {reason}"),
            (true, None) => "failed".to_owned(),
            (false, _) => "succeeded".to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{InstanceKey, PortMapping, Timestamp};

    fn name(s: &str) -> Name {
        Name::parse("name", s).unwrap()
    }

    fn instance(state: InstanceState) -> Instance {
        let mut i = Instance::unclaimed(name("web"), 0, name("default"), Timestamp(0));
        i.state = state;
        i
    }

    fn on_cell(mut i: Instance) -> Instance {
        i.key = Some(InstanceKey {
            instance_id: "i-1".into(),
            cell_id: name("cell-1"),
        });
        i
    }

    #[test]
    fn instance_changes_read_as_a_lifecycle() {
        use InstanceState::*;
        let wanted = instance(Unclaimed);
        let claimed = on_cell(instance(Claimed));
        let mut running = on_cell(instance(Running));
        running.address = Some("10.0.0.2".into());
        running.ports = vec![PortMapping {
            container_port: 8080,
            host_port: 20001,
        }];
        running.routable = true;
        let mut unready = running.clone();
        unready.routable = false;
        let mut crashed = instance(Crashed);
        crashed.crash_count = 2;
        crashed.crash_reason = Some("exited with status 3".into());
        let mut stuck = instance(Unclaimed);
        stuck.placement_error = Some("insufficient resources: memory".into());
        let mut evacuating = running.clone();
        evacuating.presence = Presence::Evacuating;
        let mut restarted = instance(Unclaimed);
        restarted.crash_count = 1;
        restarted.crash_reason = Some("killed".into());

        let cases: Vec<(Option<&Instance>, &Instance, Option<&str>)> = vec![
            (None, &wanted, Some("wanted: waiting for a cell")),
            (Some(&wanted), &claimed, Some("claimed by cell cell-1")),
            (
                Some(&claimed),
                &running,
                Some("running on cell cell-1 at 10.0.0.2 (20001->8080)"),
            ),
            (Some(&running), &running, None),
            (
                Some(&running),
                &unready,
                Some("not ready for traffic on cell cell-1"),
            ),
            (
                Some(&unready),
                &running,
                Some("ready for traffic on cell cell-1"),
            ),
            (
                Some(&running),
                &crashed,
                Some("crashed (2 crashes): exited with status 3"),
            ),
            (
                Some(&running),
                &restarted,
                Some("crashed (1 crash): killed; starting it again"),
            ),
            (Some(&crashed), &wanted, Some("waiting for a cell")),
            (
                Some(&wanted),
                &stuck,
                Some("cannot be placed: insufficient resources: memory"),
            ),
            (Some(&stuck), &stuck, None),
            (
                Some(&running),
                &evacuating,
                Some("evacuating from cell cell-1"),
            ),
        ];
        for (prev, next, want) in cases {
            assert_eq!(
                describe_instance(prev, next).as_deref(),
                want,
                "{prev:?} -> {next:?}"
            );
        }
    }

    #[test]
    fn a_tail_says_what_each_instance_is_now_as_of_when_it_became_so() {
        let create: api::LrpCreate = serde_json::from_value(serde_json::json!({
            "name": "web", "instances": 2, "action": {"run": {"path": "true"}},
        }))
        .unwrap();
        let lrp = Lrp {
            spec: create.into_spec().unwrap(),
            generation: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        let mut running = on_cell(instance(InstanceState::Running));
        running.since = Timestamp(5_000);
        let mut crashed = instance(InstanceState::Crashed);
        crashed.index = 1;
        crashed.crash_count = 3;
        crashed.crash_reason = Some("killed".into());
        crashed.since = Timestamp(7_000);
        let lines = current_lines(&Subject::Lrp(Box::new(lrp)), &[running, crashed]);
        let said: Vec<(u64, Option<u32>, &str)> = lines
            .iter()
            .map(|l| (l.at, l.index, l.text.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (5_000, Some(0), "running on cell cell-1"),
                (7_000, Some(1), "crashed (3 crashes): killed")
            ]
        );
    }

    fn event(kind: EventKind, data: String) -> Event {
        Event {
            seq: 1,
            kind,
            at: Timestamp(7),
            data: serde_json::value::RawValue::from_string(data).unwrap(),
        }
    }

    #[test]
    fn a_story_follows_only_its_own_lrp_and_ends_when_it_is_deleted() {
        let create: api::LrpCreate = serde_json::from_value(serde_json::json!({
            "name": "web", "instances": 1, "action": {"run": {"path": "true"}},
        }))
        .unwrap();
        let lrp = Lrp {
            spec: create.into_spec().unwrap(),
            generation: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        let mut story = Story::new(
            Subject::Lrp(Box::new(lrp.clone())),
            vec![instance(InstanceState::Unclaimed)],
        );
        let mut scaled = lrp.clone();
        scaled.spec.instances = 3;
        let told = story.tell(&event(
            EventKind::LrpChanged,
            serde_json::to_string(&scaled).unwrap(),
        ));
        assert_eq!(
            told.lines,
            vec![(None, "scaled from 1 to 3 instances".to_owned())]
        );

        let mut other = instance(InstanceState::Claimed);
        other.lrp = name("db");
        let told = story.tell(&event(
            EventKind::InstanceChanged,
            serde_json::to_string(&other).unwrap(),
        ));
        assert_eq!(told, Told::default());

        let claimed = on_cell(instance(InstanceState::Claimed));
        let told = story.tell(&event(
            EventKind::InstanceChanged,
            serde_json::to_string(&claimed).unwrap(),
        ));
        assert_eq!(
            told.lines,
            vec![(Some(0), "claimed by cell cell-1".to_owned())]
        );

        let told = story.tell(&event(
            EventKind::InstanceRemoved,
            r#"{"lrp":"web","index":0,"presence":"ORDINARY"}"#.into(),
        ));
        assert_eq!(told.lines, vec![(Some(0), "removed".to_owned())]);
        assert!(!told.ended);

        let told = story.tell(&event(EventKind::LrpRemoved, r#"{"name":"db"}"#.into()));
        assert_eq!(told, Told::default());
        let told = story.tell(&event(EventKind::LrpRemoved, r#"{"name":"web"}"#.into()));
        assert!(told.ended);
    }

    #[test]
    fn tails_and_follow_flags_are_checked() {
        let parse = |tail: Option<&str>, follow: Option<&str>| {
            parse_query(LogQuery {
                tail: tail.map(str::to_owned),
                follow: follow.map(str::to_owned),
            })
            .map(|r| (r.tail, r.follow))
            .map_err(|e| e.message)
        };
        assert_eq!(parse(None, None), Ok((DEFAULT_TAIL, false)));
        assert_eq!(parse(Some("0"), Some("true")), Ok((0, true)));
        assert!(
            parse(Some("-1"), None)
                .unwrap_err()
                .contains("tail must be")
        );
        assert!(parse(Some("10001"), None).is_err());
        assert!(
            parse(None, Some("yes"))
                .unwrap_err()
                .contains("follow must be")
        );
    }
}
