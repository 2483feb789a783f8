//! Logs: `GET /v1/lrps/{name}/logs` and `GET /v1/tasks/{id}/logs` answer a stream of
//! [`LogEntry`] as newline-delimited JSON (`application/x-ndjson`), oldest first. Blank
//! lines are keep-alives; readers skip them.
//!
//! Cells keep the output of their containers and serve it to the server with
//! `GET /v1/logs` (a [`LogTail`]) and, to follow, the same with `since` and `follow`
//! (a stream of entries like the server's).

use serde::{Deserialize, Serialize};

/// Most lines a tail may ask for.
pub const MAX_LOG_TAIL: usize = 10_000;

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub source: LogSource,
    /// The instance index, for an LRP's lines about one instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The line, without its newline; bytes that are not UTF-8 are replaced.
    pub text: String,
}

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The app's standard output.
    Out,
    /// The app's standard error.
    Err,
    /// The cell, about the container: created, healthy, crashed, evacuating.
    Cell,
    /// The server, about the desired state and placement: claimed, running, crashed,
    /// scaled, placement failed.
    Api,
}

/// A cell's answer to `GET /v1/logs?lrp=NAME|task=ID&tail=N`: the last lines it keeps,
/// and the cursor to follow from (`since=next&follow=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTail {
    pub entries: Vec<LogEntry>,
    pub next: u64,
}

impl LogEntry {
    /// The line as `cf logs` and `ltc logs` print it, with a UTC timestamp:
    /// `2026-12-06T05:40:01.123Z [APP/0] OUT listening`.
    pub fn render(&self) -> String {
        let at = format_millis(self.at);
        let index = self.index.map(|i| format!("/{i}")).unwrap_or_default();
        match self.source {
            LogSource::Out => format!("{at} [APP{index}] OUT {}", self.text),
            LogSource::Err => format!("{at} [APP{index}] ERR {}", self.text),
            LogSource::Cell => format!("{at} [CELL{index}] {}", self.text),
            LogSource::Api => format!("{at} [API{index}] {}", self.text),
        }
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time with milliseconds.
pub fn format_millis(ms: u64) -> String {
    let t = model::Timestamp(ms).utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_as_cf_prints_them() {
        let line = |source, index, text: &str| LogEntry {
            at: 1_796_535_601_123,
            source,
            index,
            text: text.to_owned(),
        };
        assert_eq!(
            line(LogSource::Out, Some(0), "listening").render(),
            "2026-12-06T05:40:01.123Z [APP/0] OUT listening"
        );
        assert_eq!(
            line(LogSource::Err, Some(2), "oops").render(),
            "2026-12-06T05:40:01.123Z [APP/2] ERR oops"
        );
        assert_eq!(
            line(LogSource::Cell, Some(1), "crashed: exit status 3").render(),
            "2026-12-06T05:40:01.123Z [CELL/1] crashed: exit status 3"
        );
        assert_eq!(
            line(LogSource::Api, None, "scaled to 3").render(),
            "2026-12-06T05:40:01.123Z [API] scaled to 3"
        );
    }

    #[test]
    fn times_format_across_leap_years_and_the_epoch() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_millis(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn entries_round_trip_without_empty_fields() {
        let entry = LogEntry {
            at: 5,
            source: LogSource::Api,
            index: None,
            text: "x".into(),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(json, r#"{"at":5,"source":"api","text":"x"}"#);
        assert_eq!(serde_json::from_str::<LogEntry>(&json).unwrap(), entry);
    }
}
