//! The content-addressed cache on disk: verified blobs in `blobs/sha256/<hex>`,
//! unpacked layers in `layers/sha256/<hex>/` (named by the layer blob's digest), and
//! `tmp/` where everything is written before it is renamed into place, so an entry
//! that exists is complete and verified.
//!
//! Use is tracked by leases: a [`Lease`] pins digests (blobs and layers) until it is
//! dropped, and [`Cache::evict`] removes only unpinned entries, least recently used
//! first. A pull leases what it uses before checking what is cached, so eviction can
//! never remove a layer between the check and its use. One `Cache` value (cloned as
//! needed) should own a directory in a process: leases live in memory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::digest::Digest;
use crate::error::Error;

/// A layer directory's size is recorded next to it (`<hex>.size`) when it is made, so
/// eviction need not walk every tree; that file's mtime is the layer's last use.
const SIZE_SUFFIX: &str = ".size";

#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    leases: Mutex<HashMap<Digest, usize>>,
}

/// Digests pinned against eviction until dropped.
#[derive(Debug)]
pub struct Lease {
    cache: Cache,
    digests: Vec<Digest>,
}

/// One thing eviction removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub digest: Digest,
    pub kind: EntryKind,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Blob,
    Layer,
}

/// What [`Cache::evict`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eviction {
    pub removed: Vec<Evicted>,
    /// Bytes the cache holds afterwards; above the limit when leased entries alone
    /// exceed it.
    pub remaining_bytes: u64,
}

struct Entry {
    digest: Digest,
    kind: EntryKind,
    bytes: u64,
    last_used: SystemTime,
}

impl Cache {
    /// Opens (creating) the cache at `root` and clears leftovers of interrupted writes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache, Error> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io("clear", &tmp))?;
        }
        for dir in [root.join("blobs/sha256"), root.join("layers/sha256"), tmp] {
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                root,
                leases: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(digest.hex())
    }

    /// The unpacked layer of the layer blob `digest`: a directory fit to be an
    /// overlayfs lower directory (no `:` or `,` in the path).
    pub fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.inner.root.join("layers/sha256").join(digest.hex())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    fn layer_size_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("layers/sha256")
            .join(format!("{}{SIZE_SUFFIX}", digest.hex()))
    }

    /// Pins `digests` until the lease is dropped (for instance, the layers of the
    /// images a re-adopted container runs on).
    pub fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let digests: Vec<Digest> = digests.into_iter().collect();
        let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        for digest in &digests {
            *leases.entry(digest.clone()).or_default() += 1;
        }
        Lease {
            cache: self.clone(),
            digests,
        }
    }

    /// A cached blob's bytes, re-verified (for the small blobs: manifests, configs).
    pub(crate) fn read_small_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).ok()?;
        if digest.verify(&bytes).is_err() {
            // Damaged on disk: forget it, it will be fetched again.
            let _ = fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    /// Stores verified bytes as the blob `digest`.
    pub(crate) fn write_small_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        let tmp = self.tmp_dir();
        let mut file =
            tempfile::NamedTempFile::new_in(&tmp).map_err(Error::io("create a file in", &tmp))?;
        io::Write::write_all(&mut file, bytes).map_err(Error::io("write", file.path()))?;
        let path = self.blob_path(digest);
        file.persist(&path)
            .map_err(|e| Error::io("store", &path)(e.error))?;
        Ok(())
    }

    /// Whether the blob is cached; marks it used.
    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        let path = self.blob_path(digest);
        let present = path.is_file();
        if present {
            touch(&path);
        }
        present
    }

    /// Whether the layer is unpacked; marks it used.
    pub(crate) fn has_layer(&self, digest: &Digest) -> bool {
        let present = self.layer_path(digest).is_dir();
        if present {
            touch(&self.layer_size_path(digest));
        }
        present
    }

    /// Moves a completely unpacked layer from `tmp` into place. When another pull
    /// finished the same layer first, keeps that one.
    pub(crate) fn commit_layer(
        &self,
        digest: &Digest,
        unpacked: &Path,
        disk_bytes: u64,
    ) -> Result<(), Error> {
        let size_path = self.layer_size_path(digest);
        fs::write(&size_path, disk_bytes.to_string()).map_err(Error::io("write", &size_path))?;
        let path = self.layer_path(digest);
        match fs::rename(unpacked, &path) {
            Ok(()) => Ok(()),
            Err(_) if path.is_dir() => {
                let _ = fs::remove_dir_all(unpacked);
                Ok(())
            }
            Err(e) => Err(Error::io("store", &path)(e)),
        }
    }

    /// The bytes the cache holds: blobs and unpacked layers.
    pub fn size(&self) -> Result<u64, Error> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Removes least recently used entries that no lease pins until the cache holds at
    /// most `limit_bytes`.
    pub fn evict(&self, limit_bytes: u64) -> Result<Eviction, Error> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        entries.sort_by_key(|e| e.last_used);
        let mut removed = Vec::new();
        for entry in entries {
            if total <= limit_bytes {
                break;
            }
            if !self.remove(&entry)? {
                continue;
            }
            total = total.saturating_sub(entry.bytes);
            removed.push(Evicted {
                digest: entry.digest,
                kind: entry.kind,
                bytes: entry.bytes,
            });
        }
        Ok(Eviction {
            removed,
            remaining_bytes: total,
        })
    }

    /// Removes an entry unless it is leased; whether it was removed (it may also be
    /// gone already: another eviction took it).
    fn remove(&self, entry: &Entry) -> Result<bool, Error> {
        // Out of sight first (one rename), then deleted at leisure: a half deleted tree
        // is never visible under its name. The lease check and the rename happen under
        // the leases' lock, so a pull that leased the entry before looking for it
        // either sees it and keeps it, or does not see it and fetches it again.
        let doomed = tempfile::Builder::new()
            .prefix("evicted-")
            .tempdir_in(self.tmp_dir())
            .map_err(Error::io("create a directory in", self.tmp_dir()))?;
        let target = doomed.path().join("entry");
        let path = match entry.kind {
            EntryKind::Blob => self.blob_path(&entry.digest),
            EntryKind::Layer => self.layer_path(&entry.digest),
        };
        {
            let leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
            if leases.get(&entry.digest).is_some_and(|n| *n > 0) {
                return Ok(false);
            }
            match fs::rename(&path, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io("remove", &path)(e)),
            }
            if entry.kind == EntryKind::Layer {
                let _ = fs::remove_file(self.layer_size_path(&entry.digest));
            }
        }
        fs::remove_dir_all(doomed.path()).map_err(Error::io("remove", doomed.path()))?;
        Ok(true)
    }

    fn entries(&self) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        let blobs = self.inner.root.join("blobs/sha256");
        for item in fs::read_dir(&blobs).map_err(Error::io("list", &blobs))? {
            let item = item.map_err(Error::io("list", &blobs))?;
            let Some(digest) = digest_of_name(&item.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok(meta) = item.metadata() else { continue };
            entries.push(Entry {
                digest,
                kind: EntryKind::Blob,
                bytes: meta.len(),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        let layers = self.inner.root.join("layers/sha256");
        for item in fs::read_dir(&layers).map_err(Error::io("list", &layers))? {
            let item = item.map_err(Error::io("list", &layers))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(digest) = digest_of_name(&name) else {
                continue;
            };
            let size_path = self.layer_size_path(&digest);
            let recorded = fs::read_to_string(&size_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let bytes = match recorded {
                Some(bytes) => bytes,
                None => crate::unpack::disk_usage(&item.path()).unwrap_or(0),
            };
            let last_used = fs::metadata(&size_path)
                .or_else(|_| item.metadata())
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push(Entry {
                digest,
                kind: EntryKind::Layer,
                bytes,
                last_used,
            });
        }
        Ok(entries)
    }
}

fn digest_of_name(name: &str) -> Option<Digest> {
    format!("sha256:{name}").parse().ok()
}

/// Marks a file used now (its mtime is the last use). Best effort: a failure only
/// makes eviction a little less fair.
fn touch(path: &Path) {
    if let Ok(file) = fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self
            .cache
            .inner
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for digest in &self.digests {
            if let Some(count) = leases.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    leases.remove(digest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
