//! Where a container's cgroups are and what they say: the hierarchies mounted on this
//! host (cgroup v1, v2, or both: "hybrid"), resource use, OOM kills, and the killing
//! and removal a destroy needs.
//!
//! libcontainer creates the cgroups and applies the limits; this module only reads
//! them, signals their processes and removes them, so it works the same for a
//! container whose helper died.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::spec::Stats;

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone)]
pub(super) struct Hierarchies {
    /// v1 controller name -> its mount point (`cpu` and `cpuacct` may share one).
    v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount point: the only hierarchy on a v2 host, the controller-less
    /// `unified` one on a hybrid host.
    v2: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads the cgroup mounts of this process's mount namespace.
    pub(super) fn detect() -> Result<Hierarchies, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            // "id parent major:minor root mount-point options [optional...] - type source super-options"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 || left[3] != "/" {
                continue;
            }
            let mount_point = PathBuf::from(unescape(left[4]));
            match right[0] {
                "cgroup2" => {
                    v2.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for option in right[2].split(',') {
                        if matches!(option, "rw" | "ro") || option.contains('=') {
                            continue;
                        }
                        v1.entry(option.to_owned())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
                _ => {}
            }
        }
        if v1.is_empty() && v2.is_none() {
            return Err("no cgroup hierarchy is mounted".to_owned());
        }
        Ok(Hierarchies { v1, v2 })
    }

    /// Whether the controllers the runtime needs (memory, cpu, pids) are available.
    pub(super) fn check_controllers(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        for controller in ["memory", "cpu", "pids"] {
            if self.v1.contains_key(controller) {
                continue;
            }
            let in_v2 = self.v2.as_ref().is_some_and(|root| {
                std::fs::read_to_string(root.join("cgroup.controllers"))
                    .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
            });
            if !in_v2 {
                missing.push(controller);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cgroup controllers not available: {}",
                missing.join(", ")
            ))
        }
    }

    /// What to bind-mount, read-only, into a container so it sees its own cgroups at
    /// `/sys/fs/cgroup`: (directory on the host, destination in the container). On v1,
    /// one directory per controller hierarchy under a tmpfs (the caller mounts it);
    /// on v2, the container's cgroup itself. A hybrid host's controller-less unified
    /// hierarchy holds no cgroup of the container and is left out.
    pub(super) fn container_binds(&self, path: &str) -> Vec<(PathBuf, String)> {
        let relative = path.trim_start_matches('/');
        if !self.is_v1() {
            return self
                .v2
                .iter()
                .map(|root| (root.join(relative), "/sys/fs/cgroup".to_owned()))
                .collect();
        }
        let mut roots: Vec<&PathBuf> = self.v1.values().collect();
        roots.sort();
        roots.dedup();
        roots
            .into_iter()
            .filter_map(|root| {
                let name = root.file_name()?.to_str()?;
                Some((root.join(relative), format!("/sys/fs/cgroup/{name}")))
            })
            .collect()
    }

    /// Whether the cgroups live in v1 hierarchies (v1 or hybrid).
    pub(super) fn is_v1(&self) -> bool {
        self.v1.contains_key("memory")
    }

    /// The directory of cgroup `path` (absolute, like `/corral/br0/web-0`) in the
    /// hierarchy holding `controller`.
    fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let root = if self.is_v1() {
            self.v1.get(controller)?
        } else {
            self.v2.as_ref()?
        };
        Some(root.join(path.trim_start_matches('/')))
    }

    /// Every directory cgroup `path` may have, one per hierarchy.
    fn all_dirs(&self, path: &str) -> Vec<PathBuf> {
        let mut roots: Vec<&PathBuf> = self.v1.values().collect();
        roots.extend(self.v2.as_ref());
        roots.sort();
        roots.dedup();
        roots
            .into_iter()
            .map(|root| root.join(path.trim_start_matches('/')))
            .collect()
    }

    /// The processes in cgroup `path` (from the pids hierarchy, or any that has it).
    pub(super) fn pids(&self, path: &str) -> Vec<Pid> {
        let mut dirs: Vec<PathBuf> = self.dir("pids", path).into_iter().collect();
        dirs.extend(self.all_dirs(path));
        for dir in dirs {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                return text
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .map(Pid::from_raw)
                    .collect();
            }
        }
        Vec::new()
    }

    /// Sends `signal` to every process in cgroup `path`.
    pub(super) fn signal(&self, path: &str, signal: Signal) -> anyhow::Result<()> {
        for pid in self.pids(path) {
            match kill(pid, signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(e).with_context(|| format!("sending {signal} to {pid}")),
            }
        }
        Ok(())
    }

    /// Kills every process in cgroup `path` and waits until none is left.
    pub(super) fn kill_all(&self, path: &str, deadline: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        if let Some(dir) = self
            .v2
            .as_ref()
            .map(|r| r.join(path.trim_start_matches('/')))
        {
            // cgroup.kill (Linux 5.14) kills atomically, even a fork bomb in progress.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
        loop {
            let pids = self.pids(path);
            if pids.is_empty() {
                return Ok(());
            }
            for pid in &pids {
                let _ = kill(*pid, Signal::SIGKILL);
            }
            if start.elapsed() > deadline {
                bail!(
                    "processes {pids:?} of cgroup {path} still run {:?} after SIGKILL",
                    deadline
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes cgroup `path` from every hierarchy; a missing one is fine.
    pub(super) fn remove(&self, path: &str) -> anyhow::Result<()> {
        for dir in self.all_dirs(path) {
            remove_tree(&dir).with_context(|| format!("removing cgroup {}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes the directories of cgroup `path` that hold no child cgroup and no process
    /// (a parent such as `/corral` that other cells may still use is kept).
    pub(super) fn remove_if_empty(&self, path: &str) {
        for dir in self.all_dirs(path) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    pub(super) fn stats(&self, path: &str) -> Stats {
        let mut stats = Stats::default();
        if self.is_v1() {
            if let Some(dir) = self.dir("cpuacct", path) {
                stats.cpu_nanos = read_u64(&dir.join("cpuacct.usage")).unwrap_or(0);
            }
            if let Some(dir) = self.dir("memory", path) {
                let usage = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
                let inactive = stat_field(&dir.join("memory.stat"), "total_inactive_file");
                stats.memory_bytes = usage.saturating_sub(inactive);
            }
        } else if let Some(dir) = self.dir("cpu", path) {
            stats.cpu_nanos = stat_field(&dir.join("cpu.stat"), "usage_usec").saturating_mul(1000);
            let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
            let inactive = stat_field(&dir.join("memory.stat"), "inactive_file");
            stats.memory_bytes = usage.saturating_sub(inactive);
        }
        if let Some(dir) = self.dir("pids", path) {
            stats.pids = read_u64(&dir.join("pids.current"))
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
        }
        stats
    }

    /// How many processes the OOM killer killed in cgroup `path`.
    pub(super) fn oom_kills(&self, path: &str) -> u64 {
        let Some(dir) = self.dir("memory", path) else {
            return 0;
        };
        if self.is_v1() {
            stat_field(&dir.join("memory.oom_control"), "oom_kill")
        } else {
            stat_field(&dir.join("memory.events"), "oom_kill")
        }
    }
}

/// Removes a cgroup directory and any child cgroups under it, deepest first (a cgroup
/// directory holds only control files, which rmdir takes with it).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    // A cgroup whose last process just exited can refuse rmdir for a moment.
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file such as memory.stat ("key value" lines).
fn stat_field(path: &Path, key: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo.
pub(super) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            if let Ok(value) = u8::try_from(value) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\"), r"/end\");
    }
}
