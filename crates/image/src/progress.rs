//! Pull progress, reported per blob through a callback so a CLI can draw bars (or
//! forward the events over a channel).

use crate::digest::Digest;

/// One step of one blob's journey into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub digest: Digest,
    pub phase: Phase,
    /// Bytes downloaded so far (equal to `total` once cached or downloaded).
    pub done: u64,
    /// The size the manifest gives.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bytes are arriving; reported every chunk or so.
    Downloading,
    /// Already in the cache: nothing to download.
    Cached,
    /// Downloaded and verified; the layer is being unpacked.
    Unpacking,
    /// The layer is ready to use.
    Ready,
}

/// Receives progress. Called from the pulling task; keep it quick (update a bar or
/// `try_send` on a channel).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// A progress callback that ignores everything.
pub fn no_progress(_: Progress) {}
