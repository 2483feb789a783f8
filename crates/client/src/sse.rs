//! A Server-Sent Events parser: bytes in, dispatched events out.
//!
//! It follows the WHATWG event-stream rules that matter to a client of Corral: lines
//! end in LF, CRLF or CR (also when a CRLF is split between two reads); `:` starts a
//! comment (servers send them as keep-alives); `data` lines are joined with `\n`; a
//! blank line dispatches the event, and an event without `data` is dropped; the `id`
//! persists across events until a new one is given; unknown fields are ignored. It is a
//! plain state machine over byte chunks, so it is tested with data and knows nothing of
//! HTTP.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last `id` the stream has given, if any.
    pub id: Option<String>,
    /// The `event` field, `message` when the event did not name one.
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// A line or an event's data longer than this is refused rather than buffered: a
/// broken or hostile server must not make a client grow without bound. Corral's events
/// carry one row each, far below this.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// Whether the first line is still to come, to drop a byte-order mark.
    started: bool,
    event: String,
    /// Data lines so far, each followed by `\n`.
    data: String,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next chunk of the stream and returns the events it completes. Fails
    /// when a line or an event grows past [`MAX_EVENT_BYTES`]; the stream is unusable
    /// after that.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut events)?;
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_EVENT_BYTES {
            return Err(too_long());
        }
        Ok(events)
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), String> {
        let mut line = String::from_utf8_lossy(line);
        if !self.started {
            self.started = true;
            if let Some(stripped) = line.strip_prefix('\u{feff}') {
                line = stripped.to_owned().into();
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                // As the standard does: every data line adds its value and a newline,
                // and dispatch drops the last newline. So `data:` alone is an event
                // with empty data, and an event with no data line at all is dropped.
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(too_long());
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id with NUL is ignored, as the standard says.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        data.pop();
        events.push(SseEvent {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        });
    }
}

fn too_long() -> String {
    format!("the event stream sent a line or event longer than {MAX_EVENT_BYTES} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` as they are and again one byte at a time (the parser must not
    /// care where reads split the stream), and compares the events, one per line as
    /// `id|event|data`, with `expect`.
    fn check(chunks: &[&str], expect: &str) {
        let render = |events: Vec<SseEvent>| {
            events
                .iter()
                .map(|e| {
                    format!(
                        "{}|{}|{:?}\n",
                        e.id.as_deref().unwrap_or("-"),
                        e.event,
                        e.data
                    )
                })
                .collect::<String>()
        };
        let mut parser = SseParser::new();
        let mut whole = Vec::new();
        for chunk in chunks {
            whole.extend(parser.push(chunk.as_bytes()).expect("chunk parses"));
        }
        assert_eq!(render(whole), expect, "chunks {chunks:?}");

        let mut parser = SseParser::new();
        let mut bytewise = Vec::new();
        for byte in chunks.concat().as_bytes() {
            bytewise.extend(
                parser
                    .push(std::slice::from_ref(byte))
                    .expect("byte parses"),
            );
        }
        assert_eq!(render(bytewise), expect, "byte by byte {chunks:?}");
    }

    #[test]
    fn events() {
        // One Corral event.
        check(
            &["id: 7\nevent: lrp_created\ndata: {\"seq\":7}\n\n"],
            "7|lrp_created|\"{\\\"seq\\\":7}\"\n",
        );
        // Comments are keep-alives and dispatch nothing.
        check(&[": keep-alive\n\n", ":\n\n"], "");
        // Data lines are joined with newlines; only one leading space is stripped.
        check(
            &["data: a\ndata:b\ndata:  c\n\n"],
            "-|message|\"a\\nb\\n c\"\n",
        );
        // An empty data line still makes an event, and a bare field name counts as an
        // empty value.
        check(
            &["data:\n\n", "data\n\n"],
            "-|message|\"\"\n-|message|\"\"\n",
        );
        // An event without data is dropped, and its `event` does not leak into the next.
        check(&["event: x\n\ndata: y\n\n"], "-|message|\"y\"\n");
        // The id persists across events until replaced; an id with NUL is ignored.
        check(
            &["id: 1\ndata: a\n\ndata: b\n\nid: 2\u{0}\ndata: c\n\nid: 3\ndata: d\n\n"],
            "1|message|\"a\"\n1|message|\"b\"\n1|message|\"c\"\n3|message|\"d\"\n",
        );
        // Unknown fields, and retry, are ignored.
        check(&["retry: 10\nfoo: bar\ndata: x\n\n"], "-|message|\"x\"\n");
        // An event not ended by a blank line is not dispatched.
        check(&["data: half\n"], "");
        // A byte-order mark at the start is dropped.
        check(&["\u{feff}data: x\n\n"], "-|message|\"x\"\n");
        // Values may contain colons.
        check(&["data: {\"a\":1}\n\n"], "-|message|\"{\\\"a\\\":1}\"\n");
    }

    #[test]
    fn line_endings() {
        check(&["data: a\r\n\r\n"], "-|message|\"a\"\n");
        check(
            &["data: a\r\rdata: b\r\r"],
            "-|message|\"a\"\n-|message|\"b\"\n",
        );
        // A CRLF split between two reads is one line end, not two.
        check(
            &["data: a\r", "\n", "data: b\r", "\n\r\n"],
            "-|message|\"a\\nb\"\n",
        );
        check(&["data: a\n", "\r\n"], "-|message|\"a\"\n");
    }

    #[test]
    fn characters_split_between_reads() {
        let text = "data: héllo\n\n";
        let bytes = text.as_bytes();
        let split = text.find('é').expect("has é") + 1;
        let mut parser = SseParser::new();
        assert_eq!(parser.push(&bytes[..split]).expect("parses"), vec![]);
        let events = parser.push(&bytes[split..]).expect("parses");
        assert_eq!(events[0].data, "héllo");
    }

    #[test]
    fn unbounded_lines_are_refused() {
        let mut parser = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(parser.push(&big).is_err());
    }
}
