//! What a cell can run on: its stacks (rootfs providers) and its capacity.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{CellCapacity, Rootfs};
use runtime::RootfsSpec;

use crate::images::ImageSource;

/// The stacks of a cell, by name: `preloaded:NAME` resolves here.
#[derive(Debug, Clone, Default)]
pub struct Stacks {
    /// Whether `preloaded:host` (the host's root, read-only) is offered.
    pub host: bool,
    pub dirs: BTreeMap<String, PathBuf>,
    /// Where `docker://` images come from; none when the cell runs no images (its
    /// backend has no root filesystems of its own).
    pub images: Option<ImageSource>,
}

impl Stacks {
    /// The names the cell advertises as rootfs providers.
    pub fn providers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.dirs.keys().cloned().collect();
        if self.host {
            names.push("host".to_owned());
        }
        if self.images.is_some() {
            names.push("docker".to_owned());
        }
        names.sort();
        names
    }

    /// The runtime's rootfs for `rootfs`, or why this cell cannot give it.
    pub fn resolve(&self, rootfs: &Rootfs) -> Result<RootfsSpec, String> {
        match rootfs {
            Rootfs::Preloaded(name) if name == "host" && self.host => Ok(RootfsSpec::Host),
            Rootfs::Preloaded(name) => match self.dirs.get(name) {
                Some(dir) => Ok(RootfsSpec::Layers {
                    lower: vec![dir.clone()],
                }),
                None => Err(format!("this cell has no stack {rootfs}")),
            },
            other => Err(format!("this cell cannot run {other} images yet")),
        }
    }
}

/// The cell's capacity from the machine: memory less 10% (at least 256 MB) for the
/// system, the free space of the state directory's file system, and 256 containers.
pub fn detect_capacity(state_dir: &std::path::Path) -> CellCapacity {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let total_mb = total_kb / 1024;
    let memory_mb = total_mb.saturating_sub((total_mb / 10).max(256));
    let disk_mb = nix::sys::statvfs::statvfs(state_dir)
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0);
    CellCapacity {
        memory_mb,
        disk_mb,
        containers: 256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_resolve_by_name() {
        let mut stacks = Stacks {
            host: true,
            dirs: [("busybox".to_owned(), PathBuf::from("/s/busybox"))].into(),
            images: None,
        };
        assert_eq!(stacks.providers(), ["busybox", "host"]);
        assert_eq!(
            stacks.resolve(&Rootfs::Preloaded("host".into())),
            Ok(RootfsSpec::Host)
        );
        assert_eq!(
            stacks.resolve(&Rootfs::Preloaded("busybox".into())),
            Ok(RootfsSpec::Layers {
                lower: vec![PathBuf::from("/s/busybox")]
            })
        );
        assert_eq!(
            stacks.resolve(&Rootfs::Preloaded("cflinuxfs4".into())),
            Err("this cell has no stack preloaded:cflinuxfs4".to_owned())
        );
        stacks.images = Some(ImageSource {
            default_registry: "docker.io".into(),
            insecure_registries: vec![],
            cache_limit_bytes: 0,
        });
        assert_eq!(stacks.providers(), ["busybox", "docker", "host"]);
    }
}
