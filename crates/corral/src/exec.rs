//! `corral exec [-i] [-t] NAME/INDEX -- COMMAND...`: a command in an instance's
//! container, its output on ours and its exit code as ours. With `-i` our stdin is its
//! input; with `-t` it runs on a terminal: ours is put in raw mode (and restored on
//! every way out) and its size follows ours.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use api::exec::{ExecEnd, ExecStart, TermSize};
use client::{Client, ExecOutput, ExecSession};
use tokio::sync::mpsc;

use crate::cli::{ExecArgs, ExecRun};

/// The command ended with a nonzero code, which `corral exec` exits with.
#[derive(Debug)]
pub struct RemoteExit(pub i32);

impl std::fmt::Display for RemoteExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with status {}", self.0)
    }
}

impl std::error::Error for RemoteExit {}

impl RemoteExit {
    /// What this process exits with: the code's low byte, as a shell sees it.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from((self.0 & 0xff) as u8)
    }
}

pub async fn run(client: &Client, args: &ExecArgs) -> Result<()> {
    let (lrp, index) = parse_target(&args.target)?;
    run_in(client, client::ExecIn::Instance { lrp, index }, &args.run).await
}

/// Runs `args.command` in an instance's or a task's container, with our terminal and
/// exit code.
pub async fn run_in(client: &Client, within: client::ExecIn<'_>, args: &ExecRun) -> Result<()> {
    let tty = if args.tty {
        if !std::io::stdin().is_terminal() {
            bail!(
                "-t needs a terminal, and stdin is not one (leave -t out, or run from a terminal)"
            );
        }
        Some(terminal_size())
    } else {
        None
    };
    let start = ExecStart {
        command: args.command.clone(),
        tty,
        env: args.env.clone(),
    };
    let mut session = client
        .exec(within, &start)
        .await
        .with_context(|| format!("exec in {within}"))?;
    // Raw from here: keys go to the remote terminal as typed (Ctrl-C included).
    let _raw = match tty {
        Some(_) => Some(RawMode::enable()?),
        None => None,
    };
    let code = relay(&mut session, args.interactive, tty.is_some())
        .await
        .with_context(|| format!("exec in {within}"))?;
    session.close().await;
    if code == 0 {
        Ok(())
    } else {
        Err(RemoteExit(code).into())
    }
}

/// `web/0` -> (`web`, 0).
fn parse_target(target: &str) -> Result<(&str, u32)> {
    let Some((name, index)) = target.split_once('/') else {
        bail!("{target:?} is not NAME/INDEX: name the LRP and the instance's index, such as web/0");
    };
    if name.is_empty() {
        bail!("{target:?} is not NAME/INDEX: the LRP's name is missing (such as web/0)");
    }
    let index = index.parse::<u32>().map_err(|_| {
        anyhow::anyhow!(
            "{target:?} is not NAME/INDEX: {index:?} is not an instance index (a number, such as web/0)"
        )
    })?;
    Ok((name, index))
}

/// Carries our input and terminal size to the session and its output to ours until
/// it ends; returns the command's exit code.
async fn relay(session: &mut ExecSession, interactive: bool, tty: bool) -> Result<i32> {
    let mut input = if interactive {
        Some(read_stdin())
    } else {
        // Without -i the command's input is empty, as with `docker exec`. On a
        // terminal it is left open: an end of file would end a shell at once.
        if !tty {
            session.eof().await?;
        }
        None
    };
    let mut resized = if tty {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .context("watching the terminal's size")?,
        )
    } else {
        None
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            output = session.next() => match output? {
                ExecOutput::Stdout(data) => {
                    stdout.write_all(&data).context("writing to stdout")?;
                    stdout.flush().context("writing to stdout")?;
                }
                ExecOutput::Stderr(data) => {
                    stderr.write_all(&data).context("writing to stderr")?;
                    stderr.flush().context("writing to stderr")?;
                }
                ExecOutput::End(ExecEnd::Exit { code }) => return Ok(code),
                ExecOutput::End(ExecEnd::Error(message)) => bail!(message),
            },
            chunk = recv(&mut input) => match chunk {
                Some(data) => session.stdin(&data).await?,
                None => {
                    input = None;
                    session.eof().await?;
                }
            },
            _ = winch(&mut resized) => session.resize(terminal_size()).await?,
        }
    }
}

/// The next chunk of our stdin; never resolves once there is none to read.
async fn recv(input: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match input {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn winch(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Our stdin, chunk by chunk, until its end. Read on a thread of its own: a read in
/// progress does not keep the process from exiting when the command ends first.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn terminal_size() -> TermSize {
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    TermSize {
        rows: rows.max(1),
        cols: cols.max(1),
    }
}

/// Our terminal in raw mode while this lives.
struct RawMode;

impl RawMode {
    fn enable() -> Result<RawMode> {
        crossterm::terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_an_lrp_and_an_index() {
        assert_eq!(parse_target("web/0").unwrap(), ("web", 0));
        assert_eq!(parse_target("my-app/12").unwrap(), ("my-app", 12));
        for (bad, says) in [
            ("web", "is not NAME/INDEX"),
            ("/0", "name is missing"),
            ("web/x", "\"x\" is not an instance index"),
            ("web/-1", "is not an instance index"),
            ("web/0/1", "is not an instance index"),
        ] {
            let err = parse_target(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
