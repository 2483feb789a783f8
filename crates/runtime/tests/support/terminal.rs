//! Driving a process's terminal from its master side, for the backends' tests.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const DEADLINE: Duration = Duration::from_secs(30);

/// The master side of a terminal and everything read from it so far.
pub struct Terminal {
    master: std::fs::File,
    pub output: String,
    closed: bool,
}

impl Terminal {
    pub fn new(master: OwnedFd) -> Terminal {
        Terminal {
            master: std::fs::File::from(master),
            output: String::new(),
            closed: false,
        }
    }

    pub fn master(&self) -> &std::fs::File {
        &self.master
    }

    pub fn type_in(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).expect("typing");
    }

    /// Reads until `done` holds for the output so far, or the terminal closes (every
    /// process holding it ended); panics at the deadline.
    pub fn read_until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !done(&self.output) && !self.closed {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; the terminal showed {:?}",
                self.output
            );
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => panic!("poll: {e}"),
            }
            let mut chunk = [0u8; 4096];
            match self.master.read(&mut chunk) {
                // The slave side closed: EIO on Linux.
                Ok(0) | Err(_) => self.closed = true,
                Ok(n) => self.output.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    }

    /// Reads until the terminal closes.
    pub fn read_to_end(&mut self) -> &str {
        self.read_until("the terminal to close", |_| false);
        &self.output
    }
}

/// Whether `output` has `line` as a line of its own (terminals end lines with CRLF), or
/// after the shell's `$ ` prompt: the shell may print its prompt before or after the
/// terminal echoes what was typed ahead, so a command's output can share a line with
/// the prompt.
pub fn has_line(output: &str, line: &str) -> bool {
    output.lines().any(|l| {
        let l = l.trim_end_matches('\r');
        l == line
            || l.strip_suffix(line)
                .is_some_and(|before| before.ends_with("$ "))
    })
}
