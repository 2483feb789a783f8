//! Layer unpacking: a (gzip, zstd or plain) tar unpacked into a fresh directory usable
//! as a read-only overlayfs lower directory, OCI whiteouts turned into overlayfs ones,
//! and every path kept inside the directory.
//!
//! The destination is private to the unpacker (a temporary directory the cache renames
//! into place afterwards), so checking a path's parents and then creating the entry
//! cannot race with anyone planting a symlink in between.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use tar::EntryType;

use crate::digest::{Digest, Hasher};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What went wrong unpacking a layer. Paths are the entry's path inside the layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the layer: {0}")]
    Read(#[source] io::Error),
    #[error("entry `{0}` escapes the layer directory (absolute path or `..`)")]
    Escape(String),
    #[error("entry `{path}` goes through `{through}`, which is a symlink")]
    ThroughSymlink { path: String, through: String },
    #[error("entry `{path}` goes through `{through}`, which is not a directory")]
    ThroughFile { path: String, through: String },
    #[error("hard link `{path}` points to `{target}`, which is not in the layer")]
    HardlinkTarget { path: String, target: String },
    #[error("entry `{path}` has type {kind:?}, which is not supported")]
    Unsupported { path: String, kind: EntryType },
    #[error("cannot create `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A layer unpacked: the digest of its uncompressed tar (the config's diff id) and the
/// disk space its files take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub diff_id: Digest,
    pub disk_bytes: u64,
}

/// Unpacks the layer blob at `blob` into the existing empty directory `dest`.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<Unpacked, UnpackError> {
    let file = File::open(blob).map_err(UnpackError::Read)?;
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let tar: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(crate::zstd::ZstdFrames::new(buffered))
    } else {
        Box::new(buffered)
    };
    let diff_id = unpack_tar(tar, dest)?;
    Ok(Unpacked {
        diff_id,
        disk_bytes: disk_usage(dest).map_err(UnpackError::Read)?,
    })
}

/// Unpacks an uncompressed tar stream into `dest`, returning the stream's digest.
pub fn unpack_tar(tar: impl Read, dest: &Path) -> Result<Digest, UnpackError> {
    // The layer root is the container's `/` when no layer says otherwise (a `./`
    // entry does): readable by everyone, not a temporary directory's 0700.
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(write_error(dest, dest))?;
    let mut archive = tar::Archive::new(HashingReader {
        inner: tar,
        hasher: Hasher::default(),
    });
    let mut directory_times = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        if let Some(times) = unpack_entry(&mut entry, dest)? {
            directory_times.push(times);
        }
    }
    // Directory times last: creating their children changed them.
    for (path, mtime) in directory_times.iter().rev() {
        let _ = set_mtime(path, *mtime);
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(rest.hasher.finish())
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry's path made relative and checked: `None` for the layer root itself.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::Escape(raw.display().to_string()));
            }
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// Makes sure every parent of `rel` under `dest` is a real directory (creating missing
/// ones as root-owned 0755, as container engines do), never a symlink.
fn prepare_parents(dest: &Path, rel: &Path, create: bool) -> Result<(), UnpackError> {
    let mut at = dest.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink {
                    path: rel.display().to_string(),
                    through: shown(dest, &at),
                });
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::ThroughFile {
                    path: rel.display().to_string(),
                    through: shown(dest, &at),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&at).map_err(write_error(dest, &at))?;
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
                    .map_err(write_error(dest, &at))?;
            }
            Err(e) => return Err(write_error(dest, &at)(e)),
        }
    }
    Ok(())
}

fn shown(dest: &Path, path: &Path) -> String {
    path.strip_prefix(dest)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn write_error(dest: &Path, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = shown(dest, path);
    move |source| UnpackError::Write { path, source }
}

/// Removes whatever is at `path` (not following a symlink there).
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks one entry; returns a directory's path and mtime to set at the end.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
) -> Result<Option<(PathBuf, u64)>, UnpackError> {
    let raw_path = entry.path().map_err(UnpackError::Read)?.into_owned();
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
        return Ok(None);
    }
    let Some(rel) = clean_path(&raw_path)? else {
        // The layer root: only its metadata matters.
        apply_metadata(entry, dest, dest)?;
        return Ok(None);
    };
    prepare_parents(dest, &rel, true)?;
    let name = rel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
    if name == OPAQUE_WHITEOUT {
        rustix::fs::lsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| write_error(dest, &parent)(e.into()))?;
        return Ok(None);
    }
    if name.starts_with(".wh..wh.") {
        // aufs bookkeeping (`.wh..wh.plnk` and the like): meaningless to overlayfs.
        return Ok(None);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::Escape(raw_path.display().to_string()));
        }
        let target = parent.join(hidden);
        remove_existing(&target).map_err(write_error(dest, &target))?;
        rustix::fs::mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| write_error(dest, &target)(e.into()))?;
        return Ok(None);
    }
    let path = dest.join(&rel);
    let existing = fs::symlink_metadata(&path).ok();
    let keep_directory =
        kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
    if existing.is_some() && !keep_directory {
        remove_existing(&path).map_err(write_error(dest, &path))?;
    }
    let header_mode = entry.header().mode().map_err(UnpackError::Read)?;
    let mode = Mode::from_bits_truncate(header_mode & 0o7777);
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(write_error(dest, &path))?;
            io::copy(entry, &mut file).map_err(write_error(dest, &path))?;
        }
        EntryType::Directory => {
            if !keep_directory {
                fs::create_dir(&path).map_err(write_error(dest, &path))?;
            }
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| UnpackError::Escape(raw_path.display().to_string()))?;
            std::os::unix::fs::symlink(&target, &path).map_err(write_error(dest, &path))?;
        }
        EntryType::Link => {
            let link = entry.link_name().map_err(UnpackError::Read)?;
            let target = link.as_deref().map(clean_path).transpose()?.flatten();
            let bad_target = || UnpackError::HardlinkTarget {
                path: rel.display().to_string(),
                target: link
                    .as_deref()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default(),
            };
            let target = target.ok_or_else(bad_target)?;
            prepare_parents(dest, &target, false).map_err(|_| bad_target())?;
            let source = dest.join(&target);
            fs::symlink_metadata(&source).map_err(|_| bad_target())?;
            // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
            fs::hard_link(&source, &path).map_err(write_error(dest, &path))?;
            return Ok(None);
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let header = entry.header();
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let file_type = match kind {
                EntryType::Char => FileType::CharacterDevice,
                EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let device = rustix::fs::makedev(major, minor);
            rustix::fs::mknodat(CWD, &path, file_type, mode, device)
                .map_err(|e| write_error(dest, &path)(e.into()))?;
        }
        other => {
            return Err(UnpackError::Unsupported {
                path: rel.display().to_string(),
                kind: other,
            });
        }
    }
    apply_metadata(entry, dest, &path)?;
    let mtime = entry.header().mtime().unwrap_or(0);
    if kind == EntryType::Directory {
        return Ok(Some((path, mtime)));
    }
    set_mtime(&path, mtime).map_err(write_error(dest, &path))?;
    Ok(None)
}

/// Owner, mode and extended attributes, in that order: changing the owner clears
/// set-id bits and file capabilities, so they come after it.
fn apply_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    path: &Path,
) -> Result<(), UnpackError> {
    let header = entry.header();
    let uid = header.uid().map_err(UnpackError::Read)?;
    let gid = header.gid().map_err(UnpackError::Read)?;
    let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
    let is_symlink = header.entry_type() == EntryType::Symlink;
    let ids = u32::try_from(uid).ok().zip(u32::try_from(gid).ok());
    if let Some((uid, gid)) = ids {
        rustix::fs::chownat(
            CWD,
            path,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| write_error(dest, path)(e.into()))?;
    }
    if !is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(write_error(dest, path))?;
    }
    if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for extension in extensions {
            let extension = extension.map_err(UnpackError::Read)?;
            let Ok(key) = extension.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                rustix::fs::lsetxattr(path, name, extension.value_bytes(), XattrFlags::empty())
                    .map_err(|e| write_error(dest, path)(e.into()))?;
            }
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let time = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

/// The disk space a tree takes (allocated blocks), not following symlinks.
pub(crate) fn disk_usage(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            total += disk_usage(&entry?.path())?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
