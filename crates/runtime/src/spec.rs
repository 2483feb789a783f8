//! What a container and a process inside it are made of, as the agent asks for them.
//!
//! These types travel from the agent to the runtime helper as JSON, so they hold only
//! resolved, cell-local facts: directories of a stack rather than a rootfs URL, bytes
//! rather than megabytes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container's id: lowercase letters, digits and `-`, at most 64 bytes. It names the
/// container's directory, cgroup, network namespace and veth, so it must be safe in all.
pub type ContainerId = String;

/// A process inside a container, numbered by the helper from 1 in order of start.
pub type ProcessId = u32;

/// Checks a container id; the error names what is wrong with it.
pub fn check_container_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("container id {id:?} must be 1-64 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "container id {id:?} may hold only lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: ContainerId,
    pub rootfs: RootfsSpec,
    pub limits: Limits,
    /// Environment given to every process in the container, before the process's own.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Container ports to publish; each gets a host port on the cell.
    pub ports: Vec<u16>,
    pub hostname: String,
}

/// The container's root filesystem, resolved on the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootfsSpec {
    /// The host's own root, read-only, with private /tmp, /proc and /dev
    /// (`preloaded:host`).
    Host,
    /// Read-only directories stacked bottom first, with a private writable layer on
    /// top (a preloaded stack such as `preloaded:busybox`, or image layers).
    Layers { lower: Vec<PathBuf> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Diego's `cpu_weight`, 1-100; backends map it to shares or weight.
    pub cpu_weight: u8,
    pub pids: u32,
    /// Size of the writable layer, where the backend can enforce it.
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// A directory or file on the cell.
    pub source: PathBuf,
    /// An absolute path in the container.
    pub destination: String,
    pub read_only: bool,
}

/// A process to start in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// A path in the container, or a name looked up on `PATH`.
    pub path: String,
    pub args: Vec<String>,
    /// Working directory in the container; the backend's default (`/` or the
    /// container's home) when absent.
    pub dir: Option<String>,
    /// Added to (and overriding) the container's environment.
    pub env: Vec<(String, String)>,
    /// A user name or numeric uid; the backend's default when absent.
    pub user: Option<String>,
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    /// Give the process a terminal of this size instead of pipes (for `exec -it`).
    pub tty: Option<TtySize>,
    /// Its output belongs to the container's log (the app's own processes), as opposed
    /// to a health check's or an exec session's. Output events carry this flag.
    #[serde(default)]
    pub log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// What a backend made: where the container is reachable and where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: ContainerId,
    /// The address the cell reaches the container at: its IP on the cell bridge, or
    /// `127.0.0.1` for the process backend.
    pub address: String,
    /// Each published container port and the host port it is reachable on.
    pub ports: Vec<PortMap>,
    /// The container's root as seen from the cell, where the agent writes downloads
    /// and reads result files (always through `resolve_in_root`).
    pub root: PathBuf,
    /// Environment the backend adds for processes (`PORT`, `CF_INSTANCE_IP`, ...).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub container_port: u16,
    pub host_port: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The kernel's out-of-memory killer killed it (memory limit reached).
    OutOfMemory,
    /// The helper lost track of it (the helper restarted).
    Lost,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited { code: 0 })
    }

    /// A reason fit for a crash report.
    pub fn describe(&self) -> String {
        match self {
            ExitStatus::Exited { code } => format!("exited with status {code}"),
            ExitStatus::Signaled { signal } => format!("killed by signal {signal}"),
            ExitStatus::OutOfMemory => "out of memory: killed at its memory limit".to_owned(),
            ExitStatus::Lost => "the runtime lost the process".to_owned(),
        }
    }
}

/// Resource use of a container, from its cgroups (zero where a backend cannot tell).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Joins `path` (a path inside a container, absolute or not) to the container's root
/// as seen from the cell, refusing any path that climbs out with `..`. Symlinks inside
/// the container are the caller's concern: open the result with `O_NOFOLLOW` where it
/// matters.
pub fn resolve_in_root(root: &std::path::Path, path: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let mut out = root.to_path_buf();
    for part in std::path::Path::new(path).components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("path {path:?} must not contain '..'"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_safe_names() {
        assert!(check_container_id("web-0-a1b2").is_ok());
        for bad in ["", "Web", "a/b", "a b", "../x", &"x".repeat(65)] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let root = std::path::Path::new("/r");
        assert_eq!(
            resolve_in_root(root, "/tmp/x").unwrap(),
            PathBuf::from("/r/tmp/x")
        );
        assert_eq!(
            resolve_in_root(root, "a/./b").unwrap(),
            PathBuf::from("/r/a/b")
        );
        assert!(resolve_in_root(root, "/tmp/../../etc/passwd").is_err());
    }

    #[test]
    fn exit_reasons_read_well() {
        assert_eq!(
            ExitStatus::Exited { code: 3 }.describe(),
            "exited with status 3"
        );
        assert!(ExitStatus::OutOfMemory.describe().contains("out of memory"));
        assert!(ExitStatus::Exited { code: 0 }.success());
        assert!(!ExitStatus::Signaled { signal: 9 }.success());
    }
}
