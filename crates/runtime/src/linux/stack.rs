//! The `preloaded:busybox` stack: a tiny root filesystem made from the host's static
//! busybox (Debian package busybox-static), for tests and for cells without images.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The host's busybox; the stack holds a copy.
const BUSYBOX: &str = "/bin/busybox";

/// Builds the busybox stack in `dir/busybox` once and returns its path; None when
/// busybox is not installed. The stack is built beside and renamed into place, so an
/// existing directory is always complete.
pub fn prepare_busybox_stack(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !Path::new(BUSYBOX).is_file() {
        return Ok(None);
    }
    let stack = dir.join("busybox");
    if stack.is_dir() {
        return Ok(Some(stack));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let building = dir.join(format!(".busybox-{}", std::process::id()));
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .with_context(|| format!("removing {}", building.display()))?;
    }
    build(&building)
        .with_context(|| format!("building the busybox stack in {}", building.display()))?;
    match std::fs::rename(&building, &stack) {
        Ok(()) => {}
        // Another process built it at the same time; theirs is as good.
        Err(_) if stack.is_dir() => {
            let _ = std::fs::remove_dir_all(&building);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("moving the stack to {}", stack.display()));
        }
    }
    Ok(Some(stack))
}

fn build(root: &Path) -> anyhow::Result<()> {
    for (dir, mode) in [
        ("", 0o755),
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("var", 0o755),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
    ] {
        let path = root.join(dir);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    let busybox = root.join("bin/busybox");
    std::fs::copy(BUSYBOX, &busybox).with_context(|| format!("copying {BUSYBOX}"))?;
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755))
        .context("making busybox executable")?;

    let out = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list-full"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list-full failed: {}", out.status);
    }
    let list = String::from_utf8_lossy(&out.stdout);
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet.contains("..") || applet.starts_with('/') || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if link.symlink_metadata().is_ok() {
            continue;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }

    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .context("writing /etc/passwd")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .context("writing /etc/group")?;
    Ok(())
}
