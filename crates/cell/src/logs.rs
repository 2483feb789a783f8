//! The cell's logs: the lines its containers print and the lines it writes about them
//! (created, healthy, crashed), kept per container within a byte budget, and for a while
//! after the container is gone, so `corral logs` shows why an instance crashed.
//!
//! Output arrives in chunks from the runtime; [`Lines`] cuts it into lines per process
//! and stream. Each container has a [`RateLimit`]: lines beyond it are dropped and
//! counted, and the count is said in the log once lines pass again. Every kept line gets
//! a sequence number, so a reader can take a tail and then follow from where it ended
//! without a gap or a repeat.
//!
//! The core ([`Book`]) is data in, data out, with the time passed in; [`Logs`] puts it
//! behind a lock and a broadcast for followers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{LogEntry, LogSource};
use model::Name;
use runtime::{ProcessId, Stream};
use tokio::sync::broadcast;

/// Longest line kept whole; longer lines are cut into pieces of this size.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
/// How many ended containers' logs are kept at most, whatever their age.
const MAX_ENDED: usize = 512;
/// Lines a follower may fall behind before it misses some.
const FOLLOW_BACKLOG: usize = 4096;
/// Ends of processes remembered per container, newest kept. A container's health
/// checks end a process every few seconds for as long as it runs; only the last few
/// ends matter (to [`Logs::settle`] after a crash), so the rest are forgotten rather
/// than kept for the container's whole life.
const EXITS_KEPT: usize = 256;

/// How much a cell keeps and lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes per second one container's processes may log; 0 means no limit. Bursts of
    /// up to one second's worth pass.
    pub rate_bytes_per_sec: u64,
    /// The newest bytes of log kept per container, each line counting its text, its
    /// newline and what keeping it costs (some 80 bytes), so memory is bounded even
    /// for a flood of empty lines.
    pub retained_bytes: usize,
    /// How long a container's log is kept after it is gone.
    pub keep_ended: Duration,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            rate_bytes_per_sec: 256 * 1024,
            retained_bytes: 256 * 1024,
            keep_ended: Duration::from_secs(15 * 60),
        }
    }
}

/// Whose log a container's lines belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Lrp(Name),
    Task(Name),
}

/// A kept line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) seq: u64,
    /// Shared by every line of a container.
    pub(crate) owner: Arc<Owner>,
    pub(crate) entry: LogEntry,
}

/// Cuts chunks of output into lines, holding the unfinished end of each stream.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    partial: HashMap<(ProcessId, Stream), Vec<u8>>,
}

impl Lines {
    /// The complete lines in `data`, in order, without their newlines.
    pub(crate) fn push(&mut self, process: ProcessId, stream: Stream, data: &[u8]) -> Vec<String> {
        let held = self.partial.entry((process, stream)).or_default();
        let mut lines = Vec::new();
        for &byte in data {
            if byte == b'\n' {
                lines.push(text(held));
                held.clear();
            } else {
                held.push(byte);
                if held.len() == MAX_LINE_BYTES {
                    lines.push(text(held));
                    held.clear();
                }
            }
        }
        if held.is_empty() {
            self.partial.remove(&(process, stream));
        }
        lines
    }

    /// What a process left unfinished when it ended.
    pub(crate) fn finish(&mut self, process: ProcessId) -> Vec<(Stream, String)> {
        let mut rest = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(held) = self.partial.remove(&(process, stream)) {
                rest.push((stream, text(&held)));
            }
        }
        rest
    }
}

fn text(bytes: &[u8]) -> String {
    let line = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(line).into_owned()
}

/// A token bucket over bytes, refilled at `rate` per second up to one second's worth.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateLimit {
    rate: u64,
    tokens: f64,
    /// Milliseconds since the epoch of the last refill.
    at: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

/// What the limit says about one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// Passes, after the lines dropped before it: say so first.
    PassAfterDropping {
        lines: u64,
        bytes: u64,
    },
    Drop,
}

impl RateLimit {
    pub(crate) fn new(rate: u64, now: u64) -> RateLimit {
        RateLimit {
            rate,
            tokens: rate as f64,
            at: now,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    pub(crate) fn admit(&mut self, bytes: usize, now: u64) -> Verdict {
        if self.rate == 0 {
            return Verdict::Pass;
        }
        let elapsed = now.saturating_sub(self.at) as f64 / 1000.0;
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        // A line counts its newline too.
        let cost = (bytes + 1) as f64;
        if cost > self.tokens {
            self.dropped_lines += 1;
            self.dropped_bytes += bytes as u64 + 1;
            return Verdict::Drop;
        }
        self.tokens -= cost;
        if self.dropped_lines == 0 {
            return Verdict::Pass;
        }
        let verdict = Verdict::PassAfterDropping {
            lines: self.dropped_lines,
            bytes: self.dropped_bytes,
        };
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
        verdict
    }
}

/// One container's log.
#[derive(Debug)]
struct Kept {
    owner: Arc<Owner>,
    index: Option<u32>,
    lines: VecDeque<Line>,
    bytes: usize,
    split: Lines,
    limit: RateLimit,
    /// When the container went away (milliseconds since the epoch).
    ended: Option<u64>,
    /// The newest [`EXITS_KEPT`] processes whose end was seen: their output is all in.
    exited: VecDeque<ProcessId>,
}

/// Every container's log on this cell: the pure core of [`Logs`].
#[derive(Debug)]
pub(crate) struct Book {
    limits: LogLimits,
    next_seq: u64,
    kept: HashMap<String, Kept>,
    /// Containers gone, oldest first.
    ended: VecDeque<String>,
}

impl Book {
    pub(crate) fn new(limits: LogLimits) -> Book {
        Book {
            limits,
            next_seq: 1,
            kept: HashMap::new(),
            ended: VecDeque::new(),
        }
    }

    /// Starts keeping a container's log (again, when it was re-adopted).
    pub(crate) fn open(&mut self, container: &str, owner: Owner, index: Option<u32>, now: u64) {
        if let Some(kept) = self.kept.get_mut(container) {
            kept.ended = None;
            self.ended.retain(|c| c != container);
            return;
        }
        self.kept.insert(
            container.to_owned(),
            Kept {
                owner: Arc::new(owner),
                index,
                lines: VecDeque::new(),
                bytes: 0,
                split: Lines::default(),
                limit: RateLimit::new(self.limits.rate_bytes_per_sec, now),
                ended: None,
                exited: Default::default(),
            },
        );
    }

    /// Output of a process: the lines kept from it, for followers. Output of containers
    /// not opened is not kept.
    pub(crate) fn output(
        &mut self,
        container: &str,
        process: ProcessId,
        stream: Stream,
        data: &[u8],
        now: u64,
    ) -> Vec<Line> {
        let Some(kept) = self.kept.get_mut(container) else {
            return Vec::new();
        };
        let lines = kept.split.push(process, stream, data);
        self.app_lines(container, stream, lines, now)
    }

    /// A process ended: its unfinished last line is a line.
    pub(crate) fn exited(&mut self, container: &str, process: ProcessId, now: u64) -> Vec<Line> {
        let Some(kept) = self.kept.get_mut(container) else {
            return Vec::new();
        };
        if !kept.exited.contains(&process) {
            if kept.exited.len() == EXITS_KEPT {
                kept.exited.pop_front();
            }
            kept.exited.push_back(process);
        }
        let mut added = Vec::new();
        for (stream, line) in kept.split.finish(process) {
            added.extend(self.app_lines(container, stream, vec![line], now));
        }
        added
    }

    fn app_lines(
        &mut self,
        container: &str,
        stream: Stream,
        lines: Vec<String>,
        now: u64,
    ) -> Vec<Line> {
        let source = match stream {
            Stream::Stdout => LogSource::Out,
            Stream::Stderr => LogSource::Err,
        };
        let mut added = Vec::new();
        for line in lines {
            let Some(kept) = self.kept.get_mut(container) else {
                break;
            };
            match kept.limit.admit(line.len(), now) {
                Verdict::Drop => continue,
                Verdict::Pass => {}
                Verdict::PassAfterDropping { lines, bytes } => {
                    let note = format!(
                        "dropped {lines} line{} ({bytes} bytes) of output over the log rate limit of {}",
                        if lines == 1 { "" } else { "s" },
                        rate_text(self.limits.rate_bytes_per_sec)
                    );
                    added.extend(self.add(container, LogSource::Cell, note, now));
                }
            }
            added.extend(self.add(container, source, line, now));
        }
        added
    }

    /// A line the cell writes about a container, outside its rate limit.
    pub(crate) fn note(&mut self, container: &str, text: String, now: u64) -> Option<Line> {
        self.add(container, LogSource::Cell, text, now)
    }

    fn add(&mut self, container: &str, source: LogSource, text: String, now: u64) -> Option<Line> {
        let kept = self.kept.get_mut(container)?;
        let line = Line {
            seq: self.next_seq,
            owner: kept.owner.clone(),
            entry: LogEntry {
                at: now,
                source,
                index: kept.index,
                text,
            },
        };
        self.next_seq += 1;
        kept.bytes += retained_cost(&line);
        kept.lines.push_back(line.clone());
        while kept.bytes > self.limits.retained_bytes {
            let Some(old) = kept.lines.pop_front() else {
                break;
            };
            kept.bytes -= retained_cost(&old);
        }
        Some(line)
    }

    /// The container is gone: its log is kept for `keep_ended`, and only the newest
    /// [`MAX_ENDED`] gone containers are kept.
    pub(crate) fn close(&mut self, container: &str, now: u64) -> Vec<Line> {
        let mut added = Vec::new();
        if let Some(kept) = self.kept.get_mut(container) {
            let processes: Vec<ProcessId> = kept.split.partial.keys().map(|(p, _)| *p).collect();
            for process in processes {
                added.extend(self.exited(container, process, now));
            }
        }
        if let Some(kept) = self.kept.get_mut(container)
            && kept.ended.is_none()
        {
            kept.ended = Some(now);
            self.ended.push_back(container.to_owned());
        }
        self.expire(now);
        added
    }

    /// Forgets the logs of containers gone longer than `keep_ended`, or beyond the
    /// newest [`MAX_ENDED`].
    pub(crate) fn expire(&mut self, now: u64) {
        let keep = self.limits.keep_ended.as_millis() as u64;
        while let Some(oldest) = self.ended.front() {
            let gone_at = self.kept.get(oldest).and_then(|k| k.ended);
            let stale = gone_at.is_none_or(|at| now.saturating_sub(at) > keep);
            if !stale && self.ended.len() <= MAX_ENDED {
                break;
            }
            let oldest = self.ended.pop_front().expect("front was Some");
            if self.kept.get(&oldest).is_some_and(|k| k.ended.is_some()) {
                self.kept.remove(&oldest);
            }
        }
    }

    /// The newest `n` lines of `owner` (over all its containers, live and gone), oldest
    /// first, and the sequence number to follow from.
    pub(crate) fn tail(&self, owner: &Owner, n: usize) -> (Vec<LogEntry>, u64) {
        let mut lines: Vec<&Line> = self
            .kept
            .values()
            .filter(|k| *k.owner == *owner)
            .flat_map(|k| k.lines.iter())
            .collect();
        lines.sort_by_key(|l| l.seq);
        let skip = lines.len().saturating_sub(n);
        let entries = lines[skip..].iter().map(|l| l.entry.clone()).collect();
        (entries, self.next_seq)
    }

    /// Kept lines of `owner` numbered `since` or later, oldest first.
    pub(crate) fn since(&self, owner: &Owner, since: u64) -> Vec<Line> {
        let mut lines: Vec<Line> = self
            .kept
            .values()
            .filter(|k| *k.owner == *owner)
            .flat_map(|k| k.lines.iter().filter(|l| l.seq >= since).cloned())
            .collect();
        lines.sort_by_key(|l| l.seq);
        lines
    }

    /// Whether the end of each of `processes` was seen, so all their output is in.
    pub(crate) fn all_exited(&self, container: &str, processes: &[ProcessId]) -> bool {
        self.kept
            .get(container)
            .is_none_or(|k| processes.iter().all(|p| k.exited.contains(p)))
    }

    /// Everything kept of one container, as text (the cell's raw output endpoint).
    pub(crate) fn text(&self, container: &str) -> Option<String> {
        let kept = self.kept.get(container)?;
        let mut text = String::new();
        for line in &kept.lines {
            if matches!(line.entry.source, LogSource::Out | LogSource::Err) {
                text.push_str(&line.entry.text);
                text.push('\n');
            }
        }
        Some(text)
    }
}

/// What a kept line counts against [`LogLimits::retained_bytes`]: its text and its
/// newline, as the rate limit counts it. Were empty lines free, an app printing only
/// newlines would grow its log without bound.
/// What a kept line counts against `retained_bytes`: its text and newline, and what
/// keeping any line costs, so that a flood of empty lines is bounded too.
fn retained_cost(line: &Line) -> usize {
    line.entry.text.len() + 1 + LINE_OVERHEAD
}

/// The memory a kept line takes besides its text.
const LINE_OVERHEAD: usize = std::mem::size_of::<Line>();

/// [`Book`] shared by the capture task, the work tasks and the log endpoints.
#[derive(Debug)]
pub(crate) struct Logs {
    book: Mutex<Book>,
    live: broadcast::Sender<Arc<Line>>,
    /// Woken after every change to the book.
    changed: tokio::sync::Notify,
}

impl Logs {
    pub(crate) fn new(limits: LogLimits) -> Logs {
        Logs {
            book: Mutex::new(Book::new(limits)),
            live: broadcast::channel(FOLLOW_BACKLOG).0,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Runs `f` on the book and sends the lines it kept to followers.
    fn with(&self, f: impl FnOnce(&mut Book, u64) -> Vec<Line>) {
        let now = now_millis();
        let mut book = self.book.lock().expect("log book lock");
        let lines = f(&mut book, now);
        // Sent under the lock (a broadcast send does not wait), so that followers get
        // lines in sequence order, and a follower subscribing under the lock
        // ([`Logs::follow`]) finds each line either in the book or on the feed, never
        // in both and never in neither.
        for line in lines {
            // No follower is not an error.
            let _ = self.live.send(Arc::new(line));
        }
        drop(book);
        self.changed.notify_waiters();
    }

    /// Waits (at most `within`) until the output of `processes`, which ended, is all in
    /// the log, so that what the cell says about their end comes after it. Output and
    /// ends reach the log through the runtime's event feed, a path apart from the one
    /// that tells the container's task that a process ended.
    pub(crate) async fn settle(&self, container: &str, processes: &[ProcessId], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if self
                .book
                .lock()
                .expect("log book lock")
                .all_exited(container, processes)
            {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn open(&self, container: &str, owner: Owner, index: Option<u32>) {
        self.with(|book, now| {
            book.open(container, owner, index, now);
            Vec::new()
        });
    }

    pub(crate) fn output(&self, container: &str, process: ProcessId, stream: Stream, data: &[u8]) {
        self.with(|book, now| book.output(container, process, stream, data, now));
    }

    pub(crate) fn exited(&self, container: &str, process: ProcessId) {
        self.with(|book, now| book.exited(container, process, now));
    }

    /// The cell says something about a container, in its log.
    pub(crate) fn note(&self, container: &str, text: impl Into<String>) {
        let text = text.into();
        self.with(|book, now| book.note(container, text, now).into_iter().collect());
    }

    pub(crate) fn close(&self, container: &str) {
        self.with(|book, now| book.close(container, now));
    }

    pub(crate) fn tail(&self, owner: &Owner, n: usize) -> (Vec<LogEntry>, u64) {
        let mut book = self.book.lock().expect("log book lock");
        book.expire(now_millis());
        book.tail(owner, n)
    }

    /// The kept lines from `since` on, and a receiver for the lines that follow them.
    /// Subscribing under the lock means no line falls between the two.
    pub(crate) fn follow(
        &self,
        owner: &Owner,
        since: u64,
    ) -> (Vec<Line>, broadcast::Receiver<Arc<Line>>) {
        let book = self.book.lock().expect("log book lock");
        let receiver = self.live.subscribe();
        (book.since(owner, since), receiver)
    }

    pub(crate) fn text(&self, container: &str) -> Option<String> {
        self.book.lock().expect("log book lock").text(container)
    }
}

fn rate_text(bytes_per_sec: u64) -> String {
    if bytes_per_sec >= 1024 && bytes_per_sec.is_multiple_of(1024) {
        format!("{} KiB/s", bytes_per_sec / 1024)
    } else {
        format!("{bytes_per_sec} bytes/s")
    }
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrp(name: &str) -> Owner {
        Owner::Lrp(Name::parse("lrp", name).unwrap())
    }

    fn texts(entries: &[LogEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| format!("{:?}/{:?} {}", e.source, e.index, e.text))
            .collect()
    }

    #[test]
    fn chunks_become_lines_per_process_and_stream() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(1, Stream::Stdout, b"hel"), Vec::<String>::new());
        assert_eq!(lines.push(2, Stream::Stdout, b"other\n"), vec!["other"]);
        assert_eq!(lines.push(1, Stream::Stderr, b"err\r\nx"), vec!["err"]);
        assert_eq!(
            lines.push(1, Stream::Stdout, b"lo\n\nworld\n"),
            vec!["hello", "", "world"]
        );
        assert_eq!(lines.finish(1), vec![(Stream::Stderr, "x".to_owned())]);
        assert_eq!(lines.finish(1), vec![]);
    }

    #[test]
    fn long_lines_are_cut_and_bad_utf8_replaced() {
        let mut lines = Lines::default();
        let long = vec![b'a'; MAX_LINE_BYTES + 10];
        let out = lines.push(1, Stream::Stdout, &long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(
            lines.push(1, Stream::Stdout, b"\xff\n"),
            vec!["aaaaaaaaaa\u{fffd}"]
        );
    }

    #[test]
    fn the_rate_limit_passes_a_second_of_burst_then_drops_and_says_how_much() {
        // 100 bytes/s: lines of 9 bytes cost 10 with their newline.
        let mut limit = RateLimit::new(100, 0);
        let verdicts: Vec<Verdict> = (0..12).map(|_| limit.admit(9, 0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Pass));
        assert_eq!(verdicts[10..], [Verdict::Drop, Verdict::Drop]);
        // Half a second later, 50 bytes' worth came back.
        assert_eq!(
            limit.admit(9, 500),
            Verdict::PassAfterDropping {
                lines: 2,
                bytes: 20
            }
        );
        assert_eq!(limit.admit(9, 500), Verdict::Pass);
        // A long pause refills only one second's worth.
        let mut passed = 0;
        while limit.admit(9, 60_000) == Verdict::Pass {
            passed += 1;
        }
        assert_eq!(passed, 10);
        // No limit.
        let mut none = RateLimit::new(0, 0);
        assert!((0..1000).all(|_| none.admit(1 << 20, 0) == Verdict::Pass));
    }

    fn limits(rate: u64, retained: usize) -> LogLimits {
        LogLimits {
            rate_bytes_per_sec: rate,
            retained_bytes: retained,
            keep_ended: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_tail_merges_an_lrps_containers_in_order_and_leaves_others_out() {
        let mut book = Book::new(limits(0, 1 << 20));
        book.open("web-0", lrp("web"), Some(0), 0);
        book.open("web-1", lrp("web"), Some(1), 0);
        book.open("db-0", lrp("db"), Some(0), 0);
        book.note("web-0", "created".into(), 1);
        book.output("web-1", 1, Stream::Stdout, b"one\n", 2);
        book.output("db-0", 1, Stream::Stdout, b"db\n", 3);
        book.output("web-0", 1, Stream::Stderr, b"zero\n", 4);
        book.output("unknown", 1, Stream::Stdout, b"lost\n", 5);
        let (all, next) = book.tail(&lrp("web"), 10);
        assert_eq!(
            texts(&all),
            [
                "Cell/Some(0) created",
                "Out/Some(1) one",
                "Err/Some(0) zero"
            ]
        );
        assert_eq!(next, 5);
        let (last, _) = book.tail(&lrp("web"), 1);
        assert_eq!(texts(&last), ["Err/Some(0) zero"]);
        let since: Vec<u64> = book.since(&lrp("web"), 2).iter().map(|l| l.seq).collect();
        assert_eq!(since, [2, 4]);
    }

    #[test]
    fn retention_keeps_the_newest_bytes_per_container() {
        let mut book = Book::new(limits(0, 2 * (5 + LINE_OVERHEAD)));
        book.open("c", lrp("web"), Some(0), 0);
        book.output("c", 1, Stream::Stdout, b"aaaa\nbbbb\ncccc\n", 0);
        let (kept, _) = book.tail(&lrp("web"), 10);
        assert_eq!(texts(&kept), ["Out/Some(0) bbbb", "Out/Some(0) cccc"]);
        assert_eq!(book.text("c").as_deref(), Some("bbbb\ncccc\n"));
    }

    #[test]
    fn empty_lines_count_against_retention() {
        let mut book = Book::new(limits(0, 10 * (1 + LINE_OVERHEAD)));
        book.open("c", lrp("web"), Some(0), 0);
        book.output("c", 1, Stream::Stdout, &[b'\n'; 1000], 0);
        let (kept, _) = book.tail(&lrp("web"), usize::MAX);
        assert_eq!(
            kept.len(),
            10,
            "each line costs its newline and its keeping"
        );
    }

    #[test]
    fn only_the_newest_process_ends_are_remembered() {
        let mut book = Book::new(limits(0, 1 << 20));
        book.open("c", lrp("web"), Some(0), 0);
        book.exited("c", 1, 0);
        // A long life of health checks, each a process of its own.
        for process in 2..2 + EXITS_KEPT as u32 {
            book.exited("c", process, 0);
        }
        assert!(book.all_exited("c", &[2, 1 + EXITS_KEPT as u32]));
        assert!(!book.all_exited("c", &[1]), "the oldest end is forgotten");
        assert_eq!(book.kept["c"].exited.len(), EXITS_KEPT);
    }

    #[test]
    fn a_gone_containers_log_outlives_it_for_a_while() {
        let mut book = Book::new(limits(0, 1 << 20));
        book.open("c", lrp("web"), Some(0), 0);
        book.output("c", 1, Stream::Stdout, b"last words", 0);
        let flushed = book.close("c", 1_000);
        assert_eq!(flushed.len(), 1, "the unfinished line is kept at the end");
        book.expire(60_000);
        assert_eq!(book.tail(&lrp("web"), 10).0.len(), 1);
        book.expire(61_001);
        assert!(book.tail(&lrp("web"), 10).0.is_empty());
        assert!(book.text("c").is_none());
    }

    #[test]
    fn only_the_newest_gone_containers_are_kept() {
        let mut book = Book::new(limits(0, 1 << 20));
        for i in 0..MAX_ENDED + 3 {
            let c = format!("c{i}");
            book.open(&c, lrp("web"), Some(0), 0);
            book.note(&c, format!("{i}"), 0);
            book.close(&c, 0);
        }
        let (kept, _) = book.tail(&lrp("web"), usize::MAX);
        assert_eq!(kept.len(), MAX_ENDED);
        assert_eq!(kept[0].text, "3");
    }

    #[test]
    fn lines_over_the_limit_are_dropped_and_the_drop_is_noted() {
        let mut book = Book::new(limits(100, 1 << 20));
        book.open("c", lrp("web"), Some(0), 0);
        let chunk = b"123456789\n".repeat(12);
        let kept = book.output("c", 1, Stream::Stdout, &chunk, 0);
        assert_eq!(kept.len(), 10);
        let kept = book.output("c", 1, Stream::Stdout, b"later\n", 1_000);
        assert_eq!(
            kept.iter()
                .map(|l| l.entry.text.as_str())
                .collect::<Vec<_>>(),
            [
                "dropped 2 lines (20 bytes) of output over the log rate limit of 100 bytes/s",
                "later"
            ]
        );
        assert_eq!(kept[0].entry.source, LogSource::Cell);
    }

    #[test]
    fn followers_get_the_kept_lines_since_their_cursor_then_new_ones() {
        let logs = Logs::new(limits(0, 1 << 20));
        logs.open("c", lrp("web"), Some(0));
        logs.output("c", 1, Stream::Stdout, b"before\n");
        let (_, next) = logs.tail(&lrp("web"), 0);
        logs.output("c", 1, Stream::Stdout, b"between\n");
        let (backlog, mut live) = logs.follow(&lrp("web"), next);
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].entry.text, "between");
        logs.output("c", 1, Stream::Stdout, b"after\n");
        let line = live.try_recv().expect("a live line");
        assert_eq!(line.entry.text, "after");
        assert!(
            live.try_recv().is_err(),
            "the feed repeats nothing of the backlog"
        );
    }
}
