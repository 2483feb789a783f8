//! Exec: a command run in a running container, its streams carried over a WebSocket
//! (`GET /v1/lrps/{name}/instances/{index}/exec` on the server, relayed to
//! `GET /v1/containers/{id}/exec` on the cell). `docs/exec.md` describes the protocol;
//! these are its frames.
//!
//! The client's first frame is text, an [`ExecStart`]. Then binary frames carry bytes,
//! their first byte naming the channel ([`STDIN`] from the client, [`STDOUT`] and
//! [`STDERR`] from the cell), and text frames carry control messages: an
//! [`ExecControl`] from the client, one [`ExecEnd`] from the cell, which then closes.

use serde::{Deserialize, Serialize};

/// Channel of the bytes a client sends to the command's input.
pub const STDIN: u8 = 0;
/// Channel of the command's standard output (all of its output on a terminal).
pub const STDOUT: u8 = 1;
/// Channel of the command's standard error.
pub const STDERR: u8 = 2;

/// Most arguments a command may have.
pub const MAX_EXEC_ARGS: usize = 1024;
/// Most bytes of command and environment together.
pub const MAX_EXEC_BYTES: usize = 128 * 1024;

/// What to run: the client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStart {
    /// The program (a path in the container or a name looked up on its `PATH`) and
    /// its arguments.
    pub command: Vec<String>,
    /// Run it on a terminal of this size (`exec -t`); with pipes when absent.
    #[serde(default)]
    pub tty: Option<TermSize>,
    /// `KEY=VALUE` entries added to the container's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// A control message from the client: `{"resize": {"rows": R, "cols": C}}` or
/// `{"eof": true}` (no more input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecControl {
    Resize(TermSize),
    Eof(bool),
}

/// How a session ended, the cell's last frame: `{"exit": {"code": N}}` (a command
/// killed by signal S exits 128 + S, as in a shell) or `{"error": "why"}` when the
/// command could not run or the session broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecEnd {
    Exit { code: i32 },
    Error(String),
}

impl ExecStart {
    /// Checks the request; the error names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        match self.command.first() {
            None => return Err("command: must name a program".to_owned()),
            Some(program) if program.is_empty() => {
                return Err("command: the program must not be empty".to_owned());
            }
            Some(_) => {}
        }
        if self.command.len() > MAX_EXEC_ARGS {
            return Err(format!(
                "command: at most {MAX_EXEC_ARGS} arguments, not {}",
                self.command.len()
            ));
        }
        let bytes: usize = self.command.iter().chain(&self.env).map(String::len).sum();
        if bytes > MAX_EXEC_BYTES {
            return Err(format!(
                "command: command and env together must be at most {MAX_EXEC_BYTES} bytes"
            ));
        }
        if self
            .command
            .iter()
            .chain(&self.env)
            .any(|s| s.contains('\0'))
        {
            return Err("command: must not contain NUL bytes".to_owned());
        }
        for entry in &self.env {
            let valid = entry.split_once('=').is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if !valid {
                return Err(format!("env: {entry:?} is not KEY=VALUE"));
            }
        }
        if let Some(size) = self.tty
            && (size.rows == 0 || size.cols == 0)
        {
            return Err("tty: rows and cols must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The environment as pairs (valid entries only; see [`ExecStart::validate`]).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// A binary frame: `channel` followed by `data`.
pub fn data_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + data.len());
    frame.push(channel);
    frame.extend_from_slice(data);
    frame
}

/// The channel and bytes of a binary frame; `None` for an empty frame.
pub fn split_data_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    frame.split_first().map(|(channel, data)| (*channel, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(json: &str) -> Result<ExecStart, String> {
        let start: ExecStart = serde_json::from_str(json).map_err(|e| e.to_string())?;
        start.validate().map(|()| start)
    }

    #[test]
    fn starts_parse_and_are_checked() {
        let ok = start(r#"{"command": ["ps", "-ef"], "tty": null}"#).unwrap();
        assert_eq!(ok.command, ["ps", "-ef"]);
        let ok = start(r#"{"command": ["sh"], "tty": {"rows": 24, "cols": 80}, "env": ["A=1"]}"#)
            .unwrap();
        assert_eq!(ok.env_pairs(), [("A".to_owned(), "1".to_owned())]);
        for (bad, says) in [
            (r#"{"command": []}"#, "command: must name"),
            (r#"{"command": [""]}"#, "command: the program"),
            (r#"{"command": ["sh"], "env": ["NOEQUALS"]}"#, "env:"),
            (r#"{"command": ["sh"], "env": ["=x"]}"#, "env:"),
            (
                r#"{"command": ["sh"], "tty": {"rows": 0, "cols": 80}}"#,
                "tty:",
            ),
            (r#"{"command": ["sh"], "colour": true}"#, "unknown field"),
            (r#"{"command": "sh"}"#, "invalid type"),
        ] {
            let err = start(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn control_and_end_frames_have_their_documented_shape() {
        let resize: ExecControl =
            serde_json::from_str(r#"{"resize":{"rows":5,"cols":7}}"#).unwrap();
        assert_eq!(resize, ExecControl::Resize(TermSize { rows: 5, cols: 7 }));
        let eof: ExecControl = serde_json::from_str(r#"{"eof":true}"#).unwrap();
        assert_eq!(eof, ExecControl::Eof(true));
        assert_eq!(
            serde_json::to_string(&ExecEnd::Exit { code: 3 }).unwrap(),
            r#"{"exit":{"code":3}}"#
        );
        assert_eq!(
            serde_json::to_string(&ExecEnd::Error("no".to_owned())).unwrap(),
            r#"{"error":"no"}"#
        );
        assert_eq!(
            split_data_frame(&data_frame(STDERR, b"x")),
            Some((STDERR, &b"x"[..]))
        );
        assert_eq!(split_data_frame(&[]), None);
    }
}
