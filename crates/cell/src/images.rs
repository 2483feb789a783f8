//! Images for `docker://` rootfses: pulled through the cell's one content-addressed
//! cache (shared by every container), their layers stacked below each container's own
//! writable layer, their config giving what the LRP or task leaves open.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{Cache, Credentials, Protocol, Reference, RegistryClient};
use model::ImageCommand;

/// Where images come from, as a cell is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// Registry of short names (`library/redis`, `redis:7`).
    pub default_registry: String,
    /// Registries spoken to over plain HTTP besides loopback ones (`HOST:PORT`).
    pub insecure_registries: Vec<String>,
    /// Most bytes the cache may hold; what containers use stays even beyond it.
    pub cache_limit_bytes: u64,
}

/// A pulled image, held for as long as a container runs on it: its layers cannot be
/// evicted from the cache meanwhile.
#[derive(Debug)]
pub struct Pulled {
    pub image: image::Image,
}

impl Pulled {
    /// The digests of its layers, as a container's record keeps them.
    pub fn layer_digests(&self) -> Vec<String> {
        self.image
            .layer_digests
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The image's command, working directory and user, for `run_image` actions.
    pub fn command(&self) -> ImageCommand {
        let config = &self.image.config;
        ImageCommand {
            entrypoint: config.entrypoint.clone(),
            cmd: config.cmd.clone(),
            working_dir: config.working_dir.clone(),
            user: config.user.clone(),
        }
    }

    /// The image's environment, given to every process before the LRP's own.
    pub fn env(&self) -> Vec<(String, String)> {
        self.image.config.env.clone()
    }

    /// The TCP ports the image exposes, published when the LRP declares none.
    pub fn exposed_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .image
            .config
            .exposed_ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The cell's image cache and registry client.
#[derive(Debug)]
pub struct Images {
    source: ImageSource,
    cache: Cache,
    client: RegistryClient,
    /// One lock per image being pulled: instances of a new image started together
    /// pull it once, the others wait and then find it cached.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Images {
    pub fn open(dir: &Path, source: ImageSource) -> anyhow::Result<Images> {
        let cache = Cache::open(dir)?;
        let client = RegistryClient::new()?.with_plain_http(source.insecure_registries.clone());
        Ok(Images {
            source,
            cache,
            client,
            pulling: Mutex::new(HashMap::new()),
        })
    }

    /// Pulls `image` (a `docker://` rootfs without its scheme): only what the cache
    /// lacks is downloaded. The error says what went wrong in a user's words and never
    /// holds credentials.
    pub async fn pull(
        &self,
        image: &str,
        credentials: &Credentials,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Pulled, String> {
        let reference = Reference::parse(image, &self.source.default_registry)
            .map_err(|e| format!("image {image}: {e}"))?;
        let lock = {
            let mut pulling = self.pulling.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are of pulls that ended.
            pulling.retain(|_, lock| Arc::strong_count(lock) > 1);
            pulling.entry(reference.to_string()).or_default().clone()
        };
        let _turn = lock.lock().await;
        let started = Instant::now();
        let tracker = Mutex::new(PullTracker::default());
        let report = |step: image::Progress| {
            let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((done, total)) = tracker.update(&step, Instant::now()) {
                progress(done, total);
            }
        };
        let pulled = image::pull(&self.client, &reference, credentials, &self.cache, &report)
            .await
            .map_err(|e| format!("pulling image {image} failed: {e}"))?;
        tracing::info!(
            image,
            layers = pulled.layers.len(),
            downloaded_bytes = pulled.downloaded_bytes,
            cached_bytes = pulled.cached_bytes,
            ms = started.elapsed().as_millis() as u64,
            "image ready"
        );
        Ok(Pulled { image: pulled })
    }

    /// Removes what no container uses, least recently used first, until the cache is
    /// within its limit. `in_use` lists the layers of containers that may hold no
    /// pulled image in this agent (re-adopted ones; images pulled by this agent pin
    /// themselves); it is asked only when the cache is over its limit, which is rare.
    pub fn evict(&self, in_use: impl FnOnce() -> Vec<String>) {
        match self.cache.size() {
            Ok(size) if size <= self.source.cache_limit_bytes => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "measuring the image cache failed");
                return;
            }
        }
        let held = self.cache.lease(
            in_use()
                .iter()
                .filter_map(|d| d.parse::<image::Digest>().ok()),
        );
        match self.cache.evict(self.source.cache_limit_bytes) {
            Ok(eviction) if !eviction.removed.is_empty() => tracing::info!(
                removed = eviction.removed.len(),
                freed_bytes = eviction.removed.iter().map(|e| e.bytes).sum::<u64>(),
                remaining_bytes = eviction.remaining_bytes,
                "image cache trimmed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "trimming the image cache failed"),
        }
        drop(held);
    }
}

/// How often a pull's progress is passed on at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Sums a pull's progress over its blobs (reported one blob at a time) and says when
/// the sum is worth passing on: at most every [`PROGRESS_EVERY`], and once all is in.
#[derive(Debug, Default)]
struct PullTracker {
    blobs: HashMap<image::Digest, (u64, u64)>,
    last: Option<Instant>,
}

impl PullTracker {
    fn update(&mut self, step: &image::Progress, now: Instant) -> Option<(u64, u64)> {
        let done = match step.phase {
            image::Phase::Downloading => step.done.min(step.total),
            _ => step.total,
        };
        self.blobs.insert(step.digest.clone(), (done, step.total));
        let (done, total) = self
            .blobs
            .values()
            .fold((0, 0), |(d, t), (done, total)| (d + done, t + total));
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= PROGRESS_EVERY);
        (due || done == total).then(|| {
            self.last = Some(now);
            (done, total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(digest_byte: char, phase: image::Phase, done: u64, total: u64) -> image::Progress {
        let digest = format!("sha256:{}", digest_byte.to_string().repeat(64));
        image::Progress {
            digest: digest.parse().unwrap(),
            phase,
            done,
            total,
        }
    }

    #[test]
    fn progress_sums_blobs_and_is_throttled() {
        use image::Phase::*;
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut tracker = PullTracker::default();
        let cases = [
            (step('a', Downloading, 10, 100), 0, Some((10, 100))),
            (step('b', Cached, 0, 50), 100, None),
            (step('a', Downloading, 60, 100), 300, Some((110, 150))),
            (step('a', Unpacking, 100, 100), 320, Some((150, 150))),
            (step('a', Ready, 100, 100), 330, Some((150, 150))),
        ];
        for (i, (step, at, expect)) in cases.into_iter().enumerate() {
            assert_eq!(tracker.update(&step, ms(at)), expect, "step {i}");
        }
    }
}
