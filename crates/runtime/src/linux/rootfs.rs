//! A container's root filesystem: an overlay of read-only lower directories (a stack,
//! image layers, or the host's own `/`) with a private writable layer on top, the
//! files the runtime puts into it (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`),
//! and the lookups made in it (users).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::spec::RootfsSpec;

/// The directories of one container's filesystem, all under its state directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The merged root, as the host sees it.
    pub merged: PathBuf,
}

impl Layout {
    pub(super) fn new(dir: &Path) -> Layout {
        Layout {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("rootfs"),
        }
    }
}

/// What the runtime writes into a container's own layer before it is mounted.
#[derive(Debug)]
pub(super) struct Identity<'a> {
    pub hostname: &'a str,
    pub address: Ipv4Addr,
    /// Directories of the host that a container on the host's root must not see
    /// (the cell's state directory with other containers' files).
    pub hidden: &'a [&'a Path],
}

/// Makes the writable layer, fills it and mounts the overlay at `layout.merged`.
pub(super) fn mount(
    layout: &Layout,
    rootfs: &RootfsSpec,
    identity: &Identity<'_>,
) -> anyhow::Result<()> {
    let lower = match rootfs {
        RootfsSpec::Host => "/".to_owned(),
        RootfsSpec::Layers { lower } => lowerdir(lower)?,
    };
    for dir in [&layout.upper, &layout.work, &layout.merged] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    fill_upper(&layout.upper, identity)?;
    if matches!(rootfs, RootfsSpec::Host) {
        hide_host_secrets(&layout.upper, identity.hidden)?;
    }
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        checked(&layout.upper)?,
        checked(&layout.work)?
    );
    // `volatile` (Linux 5.10) skips syncing the upper layer's filesystem, which
    // overlayfs otherwise does on every sync and at unmount: the host's whole root
    // filesystem, tens of milliseconds per destroy. A container's own layer does not
    // outlive a host crash anyway.
    let volatile = format!("{options},volatile");
    let mount = |options: &str| {
        nix::mount::mount(
            Some("overlay"),
            &layout.merged,
            Some("overlay"),
            // Device nodes in image layers do not work: only /dev's do.
            MsFlags::MS_NODEV,
            Some(options),
        )
    };
    match mount(&volatile) {
        Err(Errno::EINVAL) => mount(&options),
        other => other,
    }
    .with_context(|| {
        format!(
            "mount -t overlay -o {options} overlay {}",
            layout.merged.display()
        )
    })
}

/// Unmounts the merged root if it is mounted. Lazily: a process that still holds it
/// (it should not) keeps it alive without keeping it in the mount table.
pub(super) fn unmount(layout: &Layout) -> anyhow::Result<()> {
    if !is_mount_point(&layout.merged) {
        return Ok(());
    }
    match nix::mount::umount2(&layout.merged, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", layout.merged.display())),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub(super) fn is_mount_point(path: &Path) -> bool {
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev() || own.ino() == parent.ino()
}

/// The `lowerdir=` value for layers listed bottom first (overlayfs lists top first). A
/// directory listed twice (an image may repeat a layer) is kept once, at its topmost
/// place: overlayfs refuses a lower directory twice, and the lower copy is shadowed.
fn lowerdir(lower: &[PathBuf]) -> anyhow::Result<String> {
    if lower.is_empty() {
        bail!("the rootfs has no layers");
    }
    let mut parts: Vec<&str> = Vec::with_capacity(lower.len());
    for dir in lower.iter().rev() {
        if !dir.is_absolute() {
            bail!("layer {} is not an absolute path", dir.display());
        }
        if !dir.is_dir() {
            bail!("layer {} is not a directory", dir.display());
        }
        let part = checked(dir)?;
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    Ok(parts.join(":"))
}

/// A path as overlayfs options can hold it: no separators, valid UTF-8.
fn checked(path: &Path) -> anyhow::Result<&str> {
    let s = path
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))?;
    if s.contains([',', ':', '\\']) {
        bail!("path {s} contains ',', ':' or '\\', which overlayfs options cannot hold");
    }
    Ok(s)
}

fn fill_upper(upper: &Path, identity: &Identity<'_>) -> anyhow::Result<()> {
    let etc = upper.join("etc");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&etc)
        .with_context(|| format!("creating {}", etc.display()))?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        identity.address, identity.hostname
    );
    write_file(&etc.join("hosts"), hosts.as_bytes())?;
    write_file(
        &etc.join("hostname"),
        format!("{}\n", identity.hostname).as_bytes(),
    )?;
    write_file(&etc.join("resolv.conf"), resolv_conf().as_bytes())?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// The host's resolvers without loopback ones (they do not answer inside the
/// container's network namespace); public resolvers when none is left, as Docker does.
fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => {
                let loopback = addr
                    .parse::<std::net::IpAddr>()
                    .map(|a| a.is_loopback())
                    .unwrap_or(true);
                if !loopback {
                    servers += 1;
                    out.push_str(line);
                    out.push('\n');
                }
            }
            (Some("search" | "domain" | "options"), _) => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// On the host's root, the container sees the host's files read-only; these it does
/// not see at all: temporary files, home directories, password hashes, host keys, and
/// `hidden` (the cell's state, with other containers' files).
fn hide_host_secrets(upper: &Path, hidden: &[&Path]) -> anyhow::Result<()> {
    for dir in ["tmp", "var/tmp"] {
        opaque_dir(upper, Path::new(dir), 0o1777)?;
    }
    for dir in ["root", "home"] {
        opaque_dir(upper, Path::new(dir), 0o755)?;
    }
    for dir in hidden {
        opaque_dir(upper, dir.strip_prefix("/").unwrap_or(dir), 0o755)?;
    }
    let mut files: Vec<PathBuf> = ["shadow", "shadow-", "gshadow", "gshadow-"]
        .iter()
        .map(|f| Path::new("etc").join(f))
        .collect();
    if let Ok(entries) = std::fs::read_dir("/etc/ssh") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with("_key") {
                files.push(Path::new("etc/ssh").join(name));
            }
        }
    }
    for file in files {
        if Path::new("/").join(&file).symlink_metadata().is_ok() {
            whiteout(upper, &file)?;
        }
    }
    Ok(())
}

/// Puts an overlayfs whiteout (a 0:0 character device) at `upper/relative`, which hides
/// the lower layers' file of that name.
fn whiteout(upper: &Path, relative: &Path) -> anyhow::Result<()> {
    let path = upper.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .with_context(|| format!("hiding {}", relative.display()))
}

/// Makes `upper/relative` (and its parents) and marks it opaque, so the lower layers'
/// contents of that directory do not show through.
fn opaque_dir(upper: &Path, relative: &Path, mode: u32) -> anyhow::Result<()> {
    let dir = upper.join(relative);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    let path = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("path {} holds a NUL byte", dir.display()))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated and live across the call; the value is a
    // one-byte buffer whose length is passed.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("marking {} opaque", dir.display()));
    }
    Ok(())
}

/// A user of the container, resolved from its `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// Resolves `user` in the container whose root is `root`: a name or a numeric uid, and
/// optionally `:GROUP` (a name or a numeric gid) for the primary group, as Docker's
/// `USER` has them; root when absent. Files are opened inside the root, so a symlink in
/// the container cannot point the lookup at a host file.
pub(super) fn lookup_user(root: &Path, user: Option<&str>) -> anyhow::Result<User> {
    let (user, group) = match user.and_then(|u| u.split_once(':')) {
        Some((user, group)) => (Some(user), Some(group)),
        None => (user, None),
    };
    let mut resolved = lookup_passwd(root, user.filter(|u| !u.is_empty()))?;
    if let Some(group) = group {
        resolved.gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(root, "etc/group")
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == group)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("group {group:?} is not in the container's /etc/group"))?,
        };
    }
    Ok(resolved)
}

fn lookup_passwd(root: &Path, user: Option<&str>) -> anyhow::Result<User> {
    let passwd = read_in_root(root, "etc/passwd").unwrap_or_default();
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let wanted = user.unwrap_or("0");
    let numeric = wanted.parse::<u32>().ok();
    let entry = entries.iter().find(|f| match numeric {
        Some(uid) => f[2].parse() == Ok(uid),
        None => f[0] == wanted,
    });
    let (uid, gid, name, home) = match (entry, numeric) {
        (Some(f), _) => {
            let uid = f[2]
                .parse()
                .with_context(|| format!("bad uid {:?} for user {} in /etc/passwd", f[2], f[0]))?;
            let gid = f[3]
                .parse()
                .with_context(|| format!("bad gid {:?} for user {} in /etc/passwd", f[3], f[0]))?;
            (uid, gid, Some(f[0]), Some(f[5].to_owned()))
        }
        // A uid that /etc/passwd does not know runs with group 0, as in Docker.
        (None, Some(uid)) => (uid, 0, None, None),
        (None, None) => bail!("user {wanted:?} is not in the container's /etc/passwd"),
    };
    let mut groups = Vec::new();
    if let Some(name) = name {
        let group = read_in_root(root, "etc/group").unwrap_or_default();
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4
                && f[3].split(',').any(|member| member == name)
                && let Ok(gid) = f[2].parse::<u32>()
                && !groups.contains(&gid)
            {
                groups.push(gid);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home,
    })
}

/// Reads a small file at `relative` inside the container's root, resolving symlinks
/// as if `root` were `/`.
fn read_in_root(root: &Path, relative: &str) -> Option<String> {
    let dir = File::open(root).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, relative, how).ok()?;
    let mut text = String::new();
    File::from(fd)
        .take(4 * 1024 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Bytes used by the writable layer: a walk of it, counting allocated blocks.
pub(super) fn disk_usage(upper: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![upper.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_listed_top_first() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let joined = lowerdir(&[a.path().to_path_buf(), b.path().to_path_buf()]).unwrap();
        assert_eq!(
            joined,
            format!("{}:{}", b.path().display(), a.path().display())
        );
        // A layer listed twice is stacked once, where it is topmost.
        let (a, b) = (a.path().to_path_buf(), b.path().to_path_buf());
        assert_eq!(
            lowerdir(&[a.clone(), b.clone(), a.clone()]).unwrap(),
            format!("{}:{}", a.display(), b.display())
        );
        assert!(lowerdir(&[]).is_err());
        assert!(lowerdir(&[PathBuf::from("relative")]).is_err());
    }

    #[test]
    fn users_resolve_by_name_and_uid() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nvcap:x:1000:1001::/home/vcap:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nvcap:x:1001:\nadm:x:4:vcap,other\n",
        )
        .unwrap();
        let vcap = lookup_user(root.path(), Some("vcap")).unwrap();
        assert_eq!(
            (vcap.uid, vcap.gid, vcap.groups.clone()),
            (1000, 1001, vec![4])
        );
        assert_eq!(vcap.home.as_deref(), Some("/home/vcap"));
        assert_eq!(lookup_user(root.path(), Some("1000")).unwrap(), vcap);
        assert_eq!(lookup_user(root.path(), None).unwrap().uid, 0);
        assert_eq!(lookup_user(root.path(), Some("4242")).unwrap().gid, 0);
        let err = lookup_user(root.path(), Some("nobody")).unwrap_err();
        assert!(err.to_string().contains("\"nobody\""), "{err}");
        // USER's uid:gid and user:group forms.
        let cases = [
            ("0:0", (0, 0)),
            ("vcap:adm", (1000, 4)),
            ("1000:5", (1000, 5)),
            ("4242:4242", (4242, 4242)),
        ];
        for (user, (uid, gid)) in cases {
            let got = lookup_user(root.path(), Some(user))
                .unwrap_or_else(|e| panic!("{user} resolves: {e:#}"));
            assert_eq!((got.uid, got.gid), (uid, gid), "{user}");
        }
        let err = lookup_user(root.path(), Some("vcap:nogroup")).unwrap_err();
        assert!(err.to_string().contains("\"nogroup\""), "{err}");
    }

    #[test]
    fn passwd_symlinks_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // A link to a host file resolves inside the root, where there is no such file.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc/passwd")).unwrap();
        assert!(lookup_user(root.path(), Some("evil")).is_err());
    }

    #[test]
    fn loopback_resolvers_are_dropped() {
        let conf = resolv_conf();
        assert!(conf.contains("nameserver"));
        assert!(!conf.contains("nameserver 127."));
    }
}
