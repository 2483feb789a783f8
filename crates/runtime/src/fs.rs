//! Files inside a container's root, opened from the cell without ever leaving that root.
//!
//! A container may plant symlinks (`/tmp/result -> /etc/shadow`), so every path is
//! resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`: `..` and absolute symlinks
//! stay inside the container's root, whatever the container wrote.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

fn open_root(root: &Path) -> anyhow::Result<OwnedFd> {
    let root = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    Ok(OwnedFd::from(root))
}

fn in_root(root: &OwnedFd, path: &str, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, path, how)
}

/// Reads at most `limit` bytes of `path` inside `root`; longer files are an error that
/// says so.
pub fn read_in_root(root: &Path, path: &str, limit: usize) -> anyhow::Result<Vec<u8>> {
    let dir = open_root(root)?;
    let fd = in_root(
        &dir,
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .with_context(|| format!("opening {path}"))?;
    let mut file = File::from(fd);
    if !file.metadata()?.is_file() {
        bail!("{path} is not a regular file");
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {path}"))?;
    if bytes.len() > limit {
        bail!("{path} is larger than {limit} bytes");
    }
    Ok(bytes)
}

/// Creates (or truncates) `path` inside `root` with `mode`, making missing parent
/// directories.
pub fn create_in_root(root: &Path, path: &str, mode: u32) -> anyhow::Result<File> {
    let dir = open_root(root)?;
    let relative = Path::new(path);
    let mut parent = String::from("/");
    let components: Vec<_> = relative.components().collect();
    let Some((Component::Normal(_), parents)) = components.split_last() else {
        bail!("{path} does not name a file");
    };
    for part in parents {
        match part {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => {
                let name = name.to_str().context("path is not UTF-8")?;
                let parent_fd = in_root(
                    &dir,
                    &parent,
                    OFlag::O_DIRECTORY | OFlag::O_PATH,
                    Mode::empty(),
                )
                .with_context(|| format!("opening {parent}"))?;
                match mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("making {parent}{name}")),
                }
                parent.push_str(name);
                parent.push('/');
            }
            Component::ParentDir | Component::Prefix(_) => bail!("{path} must not contain '..'"),
        }
    }
    let fd = in_root(
        &dir,
        path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )
    .with_context(|| format!("creating {path}"))?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("tmp/result"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../..", root.path().join("tmp/up")).unwrap();
        // The final symlink is refused; a climbing one stays inside the root.
        assert!(read_in_root(root.path(), "/tmp/result", 100).is_err());
        std::fs::write(root.path().join("inside"), "mine").unwrap();
        assert_eq!(
            read_in_root(root.path(), "/tmp/up/inside", 100).unwrap(),
            b"mine"
        );
        assert!(read_in_root(root.path(), "/tmp/up/secret", 100).is_err());
    }

    #[test]
    fn reads_are_bounded_and_creates_make_parents() {
        let root = tempfile::tempdir().unwrap();
        {
            use std::io::Write;
            let mut file = create_in_root(root.path(), "/a/b/c.txt", 0o644).unwrap();
            file.write_all(b"0123456789").unwrap();
        }
        assert_eq!(
            read_in_root(root.path(), "a/b/c.txt", 10).unwrap(),
            b"0123456789"
        );
        let err = read_in_root(root.path(), "/a/b/c.txt", 9).unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err:#}");
        assert!(create_in_root(root.path(), "/a/../../x", 0o644).is_err());
    }
}
