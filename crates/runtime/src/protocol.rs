//! The agent <-> runtime helper protocol over a Unix socket.
//!
//! Each frame is `[u32 header length][u32 payload length][JSON header][payload]`, both
//! lengths big-endian. The header is a [`ToHelper`] or [`FromHelper`]; the payload carries
//! raw bytes (process output, terminal input) so binary output survives unchanged.
//! The agent sends requests with ids; the helper answers each with a `Reply` of the same
//! id, in any order, and sends `Event`s whenever something happens.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::spec::{
    ContainerId, ContainerInfo, ContainerSpec, ExitStatus, ProcessId, ProcessSpec, Stats, Stream,
    TtySize,
};

/// Bumped whenever a frame changes meaning; a helper of another version is replaced.
pub const VERSION: u32 = 1;

/// Frames larger than this are refused as corrupt.
pub const MAX_HEADER: usize = 4 << 20;
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToHelper {
    Request { id: u64, op: Op },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// First request on a connection: the helper answers with `Reply::Hello`.
    Hello,
    Create {
        spec: ContainerSpec,
    },
    Spawn {
        container: ContainerId,
        process: ProcessSpec,
    },
    /// Signal one process, or every process of the container when `process` is absent.
    Signal {
        container: ContainerId,
        process: Option<ProcessId>,
        signal: i32,
    },
    /// Bytes for a process's stdin, in the payload; an empty payload closes it.
    Input {
        container: ContainerId,
        process: ProcessId,
    },
    Resize {
        container: ContainerId,
        process: ProcessId,
        size: TtySize,
    },
    Destroy {
        container: ContainerId,
    },
    Stats {
        container: ContainerId,
    },
    /// Everything the helper holds, for an agent that (re)connects.
    List,
    /// Destroy every container and exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromHelper {
    Reply {
        id: u64,
        result: Result<Reply, String>,
    },
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        version: u32,
        backend: String,
        pid: i32,
    },
    Created {
        info: ContainerInfo,
    },
    Spawned {
        process: ProcessId,
    },
    Done,
    Stats {
        stats: Stats,
    },
    List {
        containers: Vec<ContainerState>,
    },
}

/// A container the helper holds, with its processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub info: ContainerInfo,
    pub processes: Vec<ProcessState>,
    /// Set once the container's init died: nothing runs in it any more.
    pub dead: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub id: ProcessId,
    pub path: String,
    /// `None` while it runs.
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Output of a process, in the payload.
    Output {
        container: ContainerId,
        process: ProcessId,
        stream: Stream,
        /// The process was started with `log` set.
        #[serde(default)]
        log: bool,
    },
    /// A process ended (after all of its output was sent).
    Exited {
        container: ContainerId,
        process: ProcessId,
        status: ExitStatus,
    },
    /// The container's init died: every process in it is gone.
    ContainerDied { container: ContainerId },
}

/// One frame: a header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<H> {
    pub header: H,
    pub payload: Vec<u8>,
}

impl<H> Frame<H> {
    pub fn new(header: H) -> Frame<H> {
        Frame {
            header,
            payload: Vec::new(),
        }
    }
}

/// Encodes a frame into bytes ready to write.
pub fn encode<H: Serialize>(header: &H, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("protocol headers always serialise");
    let mut out = Vec::with_capacity(8 + json.len() + payload.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    out
}

/// Splits one whole frame off the front of `buf`, if it holds one.
pub fn decode<H: for<'de> Deserialize<'de>>(buf: &mut Vec<u8>) -> io::Result<Option<Frame<H>>> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let header_len = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let payload_len = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame too large: header {header_len} bytes, payload {payload_len} bytes"),
        ));
    }
    if buf.len() < 8 + header_len + payload_len {
        return Ok(None);
    }
    let header = serde_json::from_slice(&buf[8..8 + header_len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let payload = buf[8 + header_len..8 + header_len + payload_len].to_vec();
    buf.drain(..8 + header_len + payload_len);
    Ok(Some(Frame { header, payload }))
}

/// Writes a frame to a blocking writer.
pub fn write_frame<H: Serialize>(w: &mut impl Write, header: &H, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(header, payload))
}

/// Reads a frame from a blocking reader; `None` at a clean end of stream.
pub fn read_frame<H: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<Frame<H>>> {
    let mut lens = [0u8; 8];
    match r.read_exact(&mut lens) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = lens.to_vec();
    let header_len = u32::from_be_bytes(lens[0..4].try_into().expect("4 bytes")) as usize;
    let payload_len = u32::from_be_bytes(lens[4..8].try_into().expect("4 bytes")) as usize;
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    buf.resize(8 + header_len + payload_len, 0);
    r.read_exact(&mut buf[8..])?;
    decode(&mut buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let a = ToHelper::Request {
            id: 7,
            op: Op::Input {
                container: "c-1".into(),
                process: 2,
            },
        };
        let mut bytes = encode(&a, b"\x00\xffbinary");
        bytes.extend(encode(
            &ToHelper::Request {
                id: 8,
                op: Op::List,
            },
            b"",
        ));
        // A partial frame decodes to nothing and consumes nothing.
        let mut partial = bytes[..10].to_vec();
        assert!(decode::<ToHelper>(&mut partial).unwrap().is_none());
        assert_eq!(partial.len(), 10);

        let first = decode::<ToHelper>(&mut bytes).unwrap().unwrap();
        assert_eq!(first.header, a);
        assert_eq!(first.payload, b"\x00\xffbinary");
        let second = decode::<ToHelper>(&mut bytes).unwrap().unwrap();
        assert_eq!(
            second.header,
            ToHelper::Request {
                id: 8,
                op: Op::List
            }
        );
        assert!(bytes.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(decode::<ToHelper>(&mut bytes).is_err());
    }
}
