//! `pull`: reference in, unpacked layers and config out, through the cache. Every
//! manifest and blob is verified against its digest before it is kept or used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::auth::Credentials;
use crate::cache::{Cache, Lease};
use crate::config::ImageConfig;
use crate::digest::{Digest, Hasher};
use crate::error::Error;
use crate::manifest::{Descriptor, ImageManifest, Manifest, current_architecture};
use crate::progress::{Phase, Progress, ProgressFn};
use crate::reference::Reference;
use crate::registry::{RegistryClient, Session};

/// How many layers download and unpack at once.
const PARALLEL_LAYERS: usize = 3;
const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// A pulled image, ready to run: its layers are unpacked in the cache and pinned
/// there (by `lease`) until this value is dropped.
#[derive(Debug)]
pub struct Image {
    pub reference: Reference,
    /// The digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// Unpacked layer directories, bottom first (overlayfs wants them top first).
    pub layers: Vec<PathBuf>,
    /// The layer blobs' digests, bottom first.
    pub layer_digests: Vec<Digest>,
    pub config: ImageConfig,
    /// Bytes fetched from the registry in this pull (manifests, config, layers).
    pub downloaded_bytes: u64,
    /// Bytes this pull found in the cache instead.
    pub cached_bytes: u64,
    pub lease: Lease,
}

#[derive(Default)]
struct Counters {
    downloaded: AtomicU64,
    cached: AtomicU64,
}

impl Counters {
    fn downloaded(&self, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
    }
    fn cached(&self, n: u64) {
        self.cached.fetch_add(n, Ordering::Relaxed);
    }
}

/// Pulls `reference` into `cache`: resolves the tag (an index to this machine's
/// platform), fetches what the cache lacks, verifies it and unpacks the layers.
pub async fn pull(
    client: &RegistryClient,
    reference: &Reference,
    credentials: &Credentials,
    cache: &Cache,
    progress: ProgressFn<'_>,
) -> Result<Image, Error> {
    let session = client.session(reference, credentials)?;
    let counters = Counters::default();
    let mut pinned = Vec::new();

    let (mut manifest, mut manifest_digest) =
        fetch_manifest(&session, cache, &reference.target(), &counters).await?;
    if let Manifest::Index(index) = &manifest {
        let chosen = index.select(current_architecture())?.digest.clone();
        pinned.push(manifest_digest);
        (manifest, manifest_digest) =
            fetch_manifest(&session, cache, &chosen.to_string(), &counters).await?;
    }
    let ImageManifest { config, layers } = match manifest {
        Manifest::Image(image) => image,
        // An index pointing at an index: refuse rather than recurse without end.
        Manifest::Index(_) => {
            return Err(
                crate::manifest::ManifestError::NoPlatform(current_architecture().into()).into(),
            );
        }
    };
    pinned.push(manifest_digest.clone());
    pinned.push(config.digest.clone());
    pinned.extend(layers.iter().map(|l| l.digest.clone()));
    let lease = cache.lease(pinned);

    let config_bytes = fetch_small_blob(&session, cache, &config, "config", &counters).await?;
    let image_config = ImageConfig::parse(&config_bytes)?;
    if !image_config.diff_ids.is_empty() && image_config.diff_ids.len() != layers.len() {
        return Err(Error::LayerCount {
            diff_ids: image_config.diff_ids.len(),
            layers: layers.len(),
        });
    }

    // After a failure no new layer starts, but those under way finish: returning
    // while one is still unpacking on a blocking thread would leave work behind.
    let failed = AtomicBool::new(false);
    // A layer listed twice (it happens) is pulled once. The futures are built into a
    // Vec first: a stream of closures over borrowed data makes the pull future
    // lose `Send` (rust-lang/rust#102211).
    let mut seen = std::collections::HashSet::new();
    let mut layer_futures = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if !seen.insert(&layer.digest) {
            continue;
        }
        let diff_id = image_config.diff_ids.get(i);
        let (session, counters, failed) = (&session, &counters, &failed);
        layer_futures.push(async move {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            let result = pull_layer(session, cache, layer, diff_id, counters, progress).await;
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            Some(result)
        });
    }
    let results: Vec<Option<Result<PathBuf, Error>>> = futures::stream::iter(layer_futures)
        .buffered(PARALLEL_LAYERS)
        .collect()
        .await;
    for result in results.into_iter().flatten() {
        result?;
    }
    let layer_paths: Vec<PathBuf> = layers.iter().map(|l| cache.layer_path(&l.digest)).collect();

    tracing::debug!(
        image = %reference,
        manifest = %manifest_digest,
        downloaded_bytes = counters.downloaded.load(Ordering::Relaxed),
        cached_bytes = counters.cached.load(Ordering::Relaxed),
        "pulled image"
    );
    Ok(Image {
        reference: reference.clone(),
        manifest_digest,
        layers: layer_paths,
        layer_digests: layers.iter().map(|l| l.digest.clone()).collect(),
        config: image_config,
        downloaded_bytes: counters.downloaded.into_inner(),
        cached_bytes: counters.cached.into_inner(),
        lease,
    })
}

/// A manifest by tag or digest, from the cache when its digest is known and cached
/// (a tag is resolved with a HEAD request, which downloads nothing).
async fn fetch_manifest(
    session: &Session,
    cache: &Cache,
    target: &str,
    counters: &Counters,
) -> Result<(Manifest, Digest), Error> {
    let known = match target.parse::<Digest>() {
        Ok(digest) => Some(digest),
        Err(_) => session.manifest_digest(target).await?,
    };
    if let Some(digest) = known
        && let Some(bytes) = cache.read_small_blob(&digest)
    {
        counters.cached(bytes.len() as u64);
        return Ok((Manifest::parse(&bytes, None)?, digest));
    }
    let fetched = session.manifest(target).await?;
    counters.downloaded(fetched.bytes.len() as u64);
    let manifest = Manifest::parse(&fetched.bytes, fetched.content_type.as_deref())?;
    cache.write_small_blob(&fetched.digest, &fetched.bytes)?;
    Ok((manifest, fetched.digest))
}

async fn fetch_small_blob(
    session: &Session,
    cache: &Cache,
    descriptor: &Descriptor,
    what: &'static str,
    counters: &Counters,
) -> Result<Vec<u8>, Error> {
    if let Some(bytes) = cache.read_small_blob(&descriptor.digest) {
        counters.cached(bytes.len() as u64);
        return Ok(bytes);
    }
    let response = session.blob(&descriptor.digest).await?;
    let limit = descriptor.size.min(MAX_CONFIG_BYTES);
    let bytes = session
        .read_limited(response, &format!("{what} {}", descriptor.digest), limit)
        .await?;
    counters.downloaded(bytes.len() as u64);
    descriptor
        .digest
        .verify(&bytes)
        .map_err(|mismatch| Error::Corrupt {
            what,
            digest: descriptor.digest.clone(),
            mismatch,
        })?;
    cache.write_small_blob(&descriptor.digest, &bytes)?;
    Ok(bytes)
}

/// A compile-time check that a pull can run in a spawned task.
#[cfg(test)]
#[allow(dead_code)]
fn pull_is_send(client: &RegistryClient, reference: &Reference, cache: &Cache) {
    fn send<T: Send>(_: T) {}
    send(pull(
        client,
        reference,
        &Credentials::Anonymous,
        cache,
        &crate::no_progress,
    ));
}

/// One layer: unpacked already, or unpacked from the cached blob, or downloaded,
/// verified and unpacked.
async fn pull_layer(
    session: &Session,
    cache: &Cache,
    layer: &Descriptor,
    diff_id: Option<&Digest>,
    counters: &Counters,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, Error> {
    let digest = &layer.digest;
    let report = |phase, done| {
        progress(Progress {
            digest: digest.clone(),
            phase,
            done,
            total: layer.size,
        })
    };
    let path = cache.layer_path(digest);
    if cache.has_layer(digest) {
        counters.cached(layer.size);
        report(Phase::Cached, layer.size);
        report(Phase::Ready, layer.size);
        return Ok(path);
    }
    if cache.has_blob(digest) {
        counters.cached(layer.size);
        report(Phase::Cached, layer.size);
    } else {
        download_blob(session, cache, layer, counters, &report).await?;
    }
    report(Phase::Unpacking, layer.size);

    let tmp = cache.tmp_dir();
    let unpack_dir = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(&tmp)
        .map_err(Error::io("create a directory in", &tmp))?;
    let blob = cache.blob_path(digest);
    let (unpack_dir, unpacked) = tokio::task::spawn_blocking(move || {
        let unpacked = crate::unpack::unpack_layer(&blob, unpack_dir.path());
        (unpack_dir, unpacked)
    })
    .await
    .map_err(|e| Error::Io {
        action: "unpack",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let unpacked = unpacked.map_err(|source| Error::Unpack {
        digest: digest.clone(),
        source,
    })?;
    if let Some(expected) = diff_id {
        expected
            .check(unpacked.diff_id.clone())
            .map_err(|mismatch| Error::Corrupt {
                what: "uncompressed layer",
                digest: digest.clone(),
                mismatch,
            })?;
    }
    cache.commit_layer(digest, &unpack_dir.keep(), unpacked.disk_bytes)?;
    report(Phase::Ready, layer.size);
    Ok(path)
}

/// Streams a blob into a temporary file in the cache while hashing it, and moves it
/// into place only when its size and digest are right; otherwise nothing is kept.
async fn download_blob(
    session: &Session,
    cache: &Cache,
    layer: &Descriptor,
    counters: &Counters,
    report: &(dyn Fn(Phase, u64) + Send + Sync),
) -> Result<(), Error> {
    let digest = &layer.digest;
    let mut response = session.blob(digest).await?;
    let tmp = cache.tmp_dir();
    let temp = tempfile::Builder::new()
        .prefix("blob-")
        .tempfile_in(&tmp)
        .map_err(Error::io("create a file in", &tmp))?;
    let std_file = temp.reopen().map_err(Error::io("open", temp.path()))?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hasher = Hasher::default();
    let mut done: u64 = 0;
    report(Phase::Downloading, 0);
    while let Some(chunk) = response.chunk().await.map_err(|e| session.http_error(e))? {
        done += chunk.len() as u64;
        counters.downloaded(chunk.len() as u64);
        if done > layer.size {
            return Err(Error::SizeMismatch {
                what: "blob",
                digest: digest.clone(),
                expected: layer.size,
                got: done,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(Error::io("write", temp.path()))?;
        report(Phase::Downloading, done);
    }
    file.sync_all()
        .await
        .map_err(Error::io("write", temp.path()))?;
    drop(file);
    if done != layer.size {
        return Err(Error::SizeMismatch {
            what: "blob",
            digest: digest.clone(),
            expected: layer.size,
            got: done,
        });
    }
    digest
        .check(hasher.finish())
        .map_err(|mismatch| Error::Corrupt {
            what: "blob",
            digest: digest.clone(),
            mismatch,
        })?;
    let path = cache.blob_path(digest);
    temp.persist(&path)
        .map_err(|e| Error::io("store", &path)(e.error))?;
    Ok(())
}
