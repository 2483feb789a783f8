//! `corral events`: the event stream, printed as it arrives.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use api::EventMessage;
use client::{Client, EventStream};
use futures::StreamExt;
use model::Timestamp;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::EventsArgs;
use crate::output::utc;

/// Without `--follow`, how long to wait for the first event, and then for each next
/// one, before deciding that everything after the cursor has been printed. The server
/// sends what it has at once, so a short quiet spell means the backlog is over; the
/// first wait is longer to leave room for connecting.
const FIRST_EVENT_WAIT: Duration = Duration::from_secs(2);
const NEXT_EVENT_WAIT: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, args: &EventsArgs) -> Result<()> {
    let topics: Vec<&str> = args.topics.iter().map(|t| t.as_str()).collect();
    // Following without a cursor starts from now (the server's default); a one-off
    // listing without a cursor shows everything the server keeps.
    let after = if args.follow {
        args.after
    } else {
        Some(args.after.unwrap_or(0))
    };
    let stream = client.events(after, &topics);
    if args.follow {
        follow(stream, args.json).await
    } else {
        backlog(stream, args.json).await
    }
}

/// Prints events until the stream is quiet for a moment.
async fn backlog(mut stream: EventStream, json: bool) -> Result<()> {
    let mut wait = FIRST_EVENT_WAIT;
    while let Ok(next) = tokio::time::timeout(wait, stream.next()).await {
        match next {
            Some(message) => print(&message.context("read the event stream")?, json)?,
            None => break,
        }
        wait = NEXT_EVENT_WAIT;
    }
    Ok(())
}

/// Prints events until Ctrl-C or the server ends the stream.
async fn follow(mut stream: EventStream, json: bool) -> Result<()> {
    // Listened for once, before streaming, so that no Ctrl-C falls between two waits.
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for Ctrl-C")?;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(message) => print(&message.context("read the event stream")?, json)?,
                None => {
                    eprintln!("The server closed the event stream.");
                    return Ok(());
                }
            },
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

fn print(message: &EventMessage, json: bool) -> Result<()> {
    let line = if json {
        serde_json::to_string(message)?
    } else {
        render_event(message)
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        // The reader went away (`corral events -f | head`): that is the end of the
        // stream for us, not an error.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        return Err(e.into());
    }
    if !json && message.kind == "resync" {
        eprintln!(
            "note: events before this one are no longer kept, so some were missed; \
                 list what you need afresh (`corral ls`, `corral task ls`)"
        );
    }
    Ok(())
}

/// One event in one line: sequence number, time, kind and what it is about.
pub fn render_event(message: &EventMessage) -> String {
    format!(
        "{:>6}  {}  {:<18} {}",
        message.seq,
        utc(Timestamp(message.at)),
        message.kind,
        subject(message.data.get())
    )
    .trim_end()
    .to_owned()
}

/// What an event's row is, in a few words: its key, then its state or size. Data that
/// is not a JSON object says nothing more.
fn subject(data: &str) -> String {
    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    let number = |key: &str| data.get(key).and_then(Value::as_u64);
    let mut parts = Vec::new();
    match (text("lrp"), number("index")) {
        (Some(lrp), Some(index)) => parts.push(format!("{lrp}/{index}")),
        _ => {
            if let Some(key) = text("name").or_else(|| text("id")) {
                parts.push(key.to_owned());
            }
        }
    }
    if let Some(state) = text("state") {
        parts.push(state.to_owned());
    }
    if let Some(cell) = data
        .get("key")
        .and_then(|k| k.get("cell_id"))
        .and_then(Value::as_str)
    {
        parts.push(format!("on {cell}"));
    }
    if let Some(instances) = number("instances") {
        parts.push(format!("instances={instances}"));
    }
    if let Some(generation) = number("generation") {
        parts.push(format!("generation={generation}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(kind: &str, data: Value, expect: &str) {
        let message = EventMessage {
            seq: 42,
            kind: kind.to_owned(),
            at: 1_795_447_064_000,
            data: serde_json::value::to_raw_value(&data).unwrap(),
        };
        assert_eq!(render_event(&message), expect);
    }

    #[test]
    fn lines() {
        check(
            "lrp_created",
            json!({"name": "web", "instances": 3, "generation": 1}),
            "    42  2026-11-23 15:17:44  lrp_created        web instances=3 generation=1",
        );
        check(
            "instance_changed",
            json!({"lrp": "web", "index": 2, "state": "RUNNING",
                   "key": {"cell_id": "cell-1", "instance_id": "i"}, "generation": 4}),
            "    42  2026-11-23 15:17:44  instance_changed   web/2 RUNNING on cell-1 generation=4",
        );
        check(
            "task_changed",
            json!({"id": "t1", "state": "COMPLETED"}),
            "    42  2026-11-23 15:17:44  task_changed       t1 COMPLETED",
        );
        check("resync", json!({}), "    42  2026-11-23 15:17:44  resync");
    }
}
