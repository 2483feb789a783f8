//! The crate's error: each variant says what failed in words a cell can report as an
//! instance's crash reason. No variant ever carries credentials or tokens.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::digest::{Digest, Mismatch};
use crate::manifest::ManifestError;
use crate::reference::ReferenceError;
use crate::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry could not be reached or the connection broke. reqwest's message
    /// names the URL, which never holds credentials.
    #[error("cannot reach registry {registry}: {}", with_cause(source))]
    Http {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "registry {registry} refused access to {repository}: {}",
        if *.had_credentials { "wrong credentials (HTTP 401)" } else { "credentials required (HTTP 401)" }
    )]
    Unauthorized {
        registry: String,
        repository: String,
        had_credentials: bool,
    },
    #[error("registry {registry} denied access to {repository} (HTTP 403)")]
    Denied {
        registry: String,
        repository: String,
    },
    #[error("registry {registry} has no {what} in {repository} (HTTP 404)")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },
    #[error("registry {registry} answered HTTP {status} to {what}")]
    Status {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("authentication with registry {registry} failed: {reason}")]
    Auth { registry: String, reason: String },
    #[error("{what} from {registry} is larger than {limit} bytes")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} {digest} is corrupt: {mismatch}")]
    Corrupt {
        what: &'static str,
        digest: Digest,
        mismatch: Mismatch,
    },
    #[error("{what} {digest} is {got} bytes, the manifest says {expected}")]
    SizeMismatch {
        what: &'static str,
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("the config lists {diff_ids} layer digests but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("cannot unpack layer {digest}: {source}")]
    Unpack {
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "registry {registry} is reached over HTTPS, and this build has no TLS support (the image crate's `tls` feature)"
    )]
    NoTls { registry: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// An error with its innermost cause, which says what happened ("failed to lookup
/// address information", "Connection refused") where the outer one does not.
fn with_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if std::ptr::addr_eq(cause, error) {
        error.to_string()
    } else {
        format!("{error} ({cause})")
    }
}
