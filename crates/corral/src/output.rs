//! How the CLI speaks: tables and times for people, JSON for scripts, and errors with a
//! hint at what to do next.

use std::time::{SystemTime, UNIX_EPOCH};

use api::ErrorCode;
use client::ClientError;
use comfy_table::{ContentArrangement, Table, presets};
use model::Timestamp;
use serde::Serialize;

/// A table with a header row and no borders, in the style of `ltc` and `kubectl`.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    table
}

/// The table as text: no trailing spaces, and without the one-space margin comfy-table
/// puts before the first column.
pub fn render(table: &Table) -> String {
    let text = table.to_string();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    println!("{json}");
    Ok(())
}

/// The wall clock now. Renderers take it as an argument so that they stay testable.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// How long ago `then` was, in the largest whole unit: `12s ago`, `3m ago`, `5h ago`,
/// `2d ago`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let seconds = now.millis_since(then) / 1000;
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

/// `then` in UTC, as `2026-11-23 15:37:44`.
pub fn utc(then: Timestamp) -> String {
    let t = then.utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Quotes a word for a shell when it needs it, so that a printed command can be pasted.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What `corral` prints on stderr for a failed command: `error: ...` and, when there is
/// an obvious next step, `hint: ...`. An error from the API is shown as the server
/// worded it, with the field at fault; other errors as the chain of what was being done.
pub fn error_report(error: &anyhow::Error) -> String {
    let client_error = error.chain().find_map(|e| e.downcast_ref::<ClientError>());
    let mut report = match client_error {
        Some(api_error @ ClientError::Api { .. }) => format!("error: {api_error}\n"),
        _ => format!("error: {error:#}\n"),
    };
    if let Some(hint) = client_error.and_then(hint) {
        report.push_str(&format!("hint: {hint}\n"));
    }
    report
}

fn hint(error: &ClientError) -> Option<&'static str> {
    match error {
        ClientError::Transport(_) => Some(
            "is a Corral server running there? Start one with `corral dev`, or point the CLI \
             at another with --api or CORRAL_API",
        ),
        ClientError::Api { error, .. } => match error.code {
            ErrorCode::Unauthorized => Some(
                "the API needs a valid token: pass --token or set CORRAL_TOKEN, or use the \
                 config that `corral dev` writes to $CORRAL_HOME/config.json",
            ),
            ErrorCode::Conflict => Some(
                "conflict: it changed since it was read, or its state does not allow this; \
                 look again (`corral status`, `corral task get`) and retry",
            ),
            ErrorCode::Unavailable => Some("the server cannot reach its store; retry shortly"),
            _ => None,
        },
        ClientError::Decode(_) | ClientError::InvalidUrl { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use api::ErrorDetail;

    use super::*;

    #[test]
    fn times() {
        let now = Timestamp(1_000_000_000);
        let cases = [
            (0, "0s ago"),
            (59_999, "59s ago"),
            (60_000, "1m ago"),
            (3_600_000, "1h ago"),
            (86_400_000 * 3 + 5, "3d ago"),
        ];
        for (before, expect) in cases {
            assert_eq!(ago(Timestamp(now.0 - before), now), expect);
        }
        // A clock behind the server's is not a negative age.
        assert_eq!(ago(Timestamp(now.0 + 5000), now), "0s ago");
        assert_eq!(utc(Timestamp(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(Timestamp(1_795_447_064_000)), "2026-11-23 15:17:44");
        assert_eq!(utc(Timestamp(951_782_400_000)), "2000-02-29 00:00:00");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("sleep"), "sleep");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn error_reports() {
        let api = |code, message: &str, field: Option<&str>| {
            anyhow::Error::new(ClientError::Api {
                status: 0,
                error: ErrorDetail {
                    code,
                    message: message.to_owned(),
                    field: field.map(str::to_owned),
                },
            })
            .context("create LRP web")
        };
        assert_eq!(
            error_report(&api(
                ErrorCode::Invalid,
                "instances: must be between 0 and 100000",
                Some("instances")
            )),
            "error: instances: must be between 0 and 100000\n",
            "a message that starts with its field does not name it twice"
        );
        assert_eq!(
            error_report(&api(
                ErrorCode::Conflict,
                "LRP web already exists",
                Some("name")
            ))
            .lines()
            .next(),
            Some("error: LRP web already exists (field: name)")
        );
        let report = error_report(&api(ErrorCode::Conflict, "web is at generation 2", None));
        assert!(
            report.starts_with("error: web is at generation 2\nhint: conflict: "),
            "{report}"
        );
        let transport = Err::<(), _>(ClientError::Transport(
            "cannot reach the Corral API at http://127.0.0.1:1 (Connection refused)".into(),
        ))
        .context("list LRPs")
        .unwrap_err();
        let report = error_report(&transport);
        assert!(
            report.starts_with(
                "error: list LRPs: cannot reach the Corral API at http://127.0.0.1:1 \
                 (Connection refused)\nhint: is a Corral server running there? Start one \
                 with `corral dev`"
            ),
            "{report}"
        );
        let other = anyhow::anyhow!("disk full").context("write the CLI config /x");
        assert_eq!(
            error_report(&other),
            "error: write the CLI config /x: disk full\n"
        );
    }
}
