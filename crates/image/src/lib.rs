//! Container images from OCI registries, for a cell to run containers on: parse a
//! reference, pull it through a content-addressed cache (every manifest and blob
//! verified), unpack its layers as overlayfs lower directories, and read its config.
//!
//! It knows registries, the cache directory and tar files; it does not know cells,
//! containers, the server or the store.
//!
//! - [`Reference::parse`] reads `docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]` and
//!   short names (`redis`, `library/redis:7`) against a default registry.
//! - [`pull`] returns an [`Image`]: layer directories bottom first (an overlayfs
//!   `lowerdir=` lists them top first), the [`ImageConfig`], and how many bytes came
//!   from the registry and from the cache. Progress arrives through a callback.
//! - The [`Cache`] holds verified blobs and unpacked layers. An `Image` holds a
//!   [`Lease`] on everything it uses; [`Cache::evict`] removes only unleased entries,
//!   least recently used first. Keep the `Image` (or a [`Cache::lease`] of its
//!   digests) for as long as a container runs on its layers.
//! - Registries on loopback are spoken to over plain HTTP; others need HTTPS and so
//!   the `tls` feature.
//!
//! ```no_run
//! # async fn example() -> Result<(), image::Error> {
//! let reference = image::Reference::parse("docker://127.0.0.1:5000/test/busybox:1", image::DOCKER_HUB)?;
//! let cache = image::Cache::open("/var/lib/corral/images")?;
//! let client = image::RegistryClient::new()?;
//! let image = image::pull(&client, &reference, &image::Credentials::Anonymous, &cache, &image::no_progress).await?;
//! println!("{} layers, command {:?}", image.layers.len(), image.config.command());
//! # Ok(()) }
//! ```

mod auth;
mod cache;
mod config;
mod digest;
mod error;
mod manifest;
mod progress;
mod pull;
mod reference;
mod registry;
mod unpack;
mod zstd;

pub use auth::Credentials;
pub use cache::{Cache, EntryKind, Evicted, Eviction, Lease};
pub use config::{ConfigError, ExposedPort, ImageConfig, Protocol};
pub use digest::{Digest, DigestError, Mismatch};
pub use error::Error;
pub use manifest::{ManifestError, current_architecture};
pub use progress::{Phase, Progress, ProgressFn, no_progress};
pub use pull::{Image, pull};
pub use reference::{DOCKER_HUB, Problem, Reference, ReferenceError};
pub use registry::RegistryClient;
pub use unpack::{UnpackError, Unpacked, unpack_layer, unpack_tar};
