//! `corral logs NAME` and `corral task logs ID`: a log's newest lines, then with
//! `--follow` each new one, as `cf logs` prints them.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use api::{LogEntry, LogSource};
use client::{Client, LogsOf};
use futures::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::LogsArgs;

pub async fn run(client: &Client, of: LogsOf<'_>, args: &LogsArgs) -> Result<()> {
    // Listened for before streaming, so that no Ctrl-C falls between two reads.
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for Ctrl-C")?;
    let what = match of {
        LogsOf::Lrp(name) => format!("the logs of {name}"),
        LogsOf::Task(id) => format!("the logs of task {id}"),
    };
    let mut lines = client
        .logs(of, args.tail, args.follow)
        .await
        .with_context(|| format!("read {what}"))?;
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    loop {
        let next = tokio::select! {
            next = lines.next() => next,
            _ = interrupt.recv() => return Ok(()),
        };
        let Some(entry) = next else {
            return Ok(());
        };
        let entry = entry.with_context(|| format!("read {what}"))?;
        let line = if args.json {
            serde_json::to_string(&entry)?
        } else {
            render(&entry, colour)
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`corral logs web | head`): that is the end.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("write to standard output"),
        }
    }
}

/// The line as `LogEntry::render` has it, with the source coloured on a terminal:
/// the cell's and the server's words in cyan, standard error in red.
fn render(entry: &LogEntry, colour: bool) -> String {
    let plain = entry.render();
    if !colour {
        return plain;
    }
    let code = match entry.source {
        LogSource::Out => return plain,
        LogSource::Err => "31",
        LogSource::Cell | LogSource::Api => "36",
    };
    // The timestamp is 24 characters and a space; the rest is the tag and the text.
    match plain.split_at_checked(25) {
        Some((at, rest)) => format!("{at}\x1b[{code}m{rest}\x1b[0m"),
        None => plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_the_source_in_colour_and_a_pipe_plain_text() {
        let entry = |source| LogEntry {
            at: 0,
            source,
            index: Some(0),
            text: "hi".into(),
        };
        assert_eq!(
            render(&entry(LogSource::Cell), true),
            "1970-01-01T00:00:00.000Z \x1b[36m[CELL/0] hi\x1b[0m"
        );
        assert_eq!(
            render(&entry(LogSource::Out), true),
            "1970-01-01T00:00:00.000Z [APP/0] OUT hi"
        );
        assert_eq!(
            render(&entry(LogSource::Err), false),
            "1970-01-01T00:00:00.000Z [APP/0] ERR hi"
        );
    }
}
