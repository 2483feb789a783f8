//! Manifests and indexes (OCI and Docker v2 schema 2), told apart by media type, and
//! the choice of the running platform's manifest from an index.

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header of a manifest request: every kind this crate understands.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A reference to content by digest and size, as manifests name their parts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform an index entry is built for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A single-platform image: its config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A multi-platform image: one manifest per platform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// A fetched manifest of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Index),
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest media type `{0}` is not supported (OCI or Docker v2 schema 2 only)")]
    UnsupportedMediaType(String),
    #[error("manifest is not valid JSON for its media type: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the image index has no manifest for linux/{0}")]
    NoPlatform(String),
    #[error("layer {0} is a foreign layer served from other URLs, which is not supported")]
    ForeignLayer(Digest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

impl Manifest {
    /// Parses a manifest body. The media type comes from the body when it says, else
    /// from the response's `Content-Type`, else from its shape (an index lists
    /// `manifests`).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let probe: Probe = serde_json::from_slice(body)?;
        let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        let media_type = match (probe.media_type.as_deref(), content_type) {
            (Some(m), _) if !m.is_empty() => m.to_owned(),
            (_, Some(c)) if c != "application/json" && !c.is_empty() => c.to_owned(),
            _ if probe.manifests.is_some() => OCI_INDEX.to_owned(),
            _ => OCI_MANIFEST.to_owned(),
        };
        match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let manifest: ImageManifest = serde_json::from_slice(body)?;
                if let Some(foreign) = manifest.layers.iter().find(|l| !l.urls.is_empty()) {
                    return Err(ManifestError::ForeignLayer(foreign.digest.clone()));
                }
                Ok(Manifest::Image(manifest))
            }
            OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(Manifest::Index(serde_json::from_slice(body)?)),
            other => Err(ManifestError::UnsupportedMediaType(
                other.chars().take(100).collect(),
            )),
        }
    }
}

/// The architecture of the running machine in OCI's words (`amd64`, `arm64`).
pub fn current_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl Index {
    /// The manifest for linux on `architecture`. A variant-less entry wins over one with
    /// a variant except on arm64, where `v8` is the usual variant.
    pub fn select(&self, architecture: &str) -> Result<&Descriptor, ManifestError> {
        let matching = self.manifests.iter().filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == architecture)
        });
        let mut best: Option<&Descriptor> = None;
        for candidate in matching {
            let variant = candidate
                .platform
                .as_ref()
                .and_then(|p| p.variant.as_deref());
            let preferred = matches!(variant, None | Some("v8"));
            if best.is_none() || preferred {
                best = Some(candidate);
                if preferred {
                    break;
                }
            }
        }
        best.ok_or_else(|| ManifestError::NoPlatform(architecture.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn kinds_by_media_type_or_shape() {
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":1}},"layers":[{{"digest":"{}","size":2}}]}}"#,
            digest(1),
            digest(2)
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":3,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest(3)
        );
        let cases: &[(&str, Option<&str>, &str)] = &[
            (&image, None, "image"),
            (&image, Some(DOCKER_MANIFEST), "image"),
            (&image, Some("application/json"), "image"),
            (&index, None, "index"),
            (&index, Some(DOCKER_MANIFEST_LIST), "index"),
            (
                &image,
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                "error: manifest media type `application/vnd.docker.distribution.manifest.v1+prettyjws` is not supported (OCI or Docker v2 schema 2 only)",
            ),
            ("{", None, "error"),
        ];
        for (body, content_type, expect) in cases {
            let got = match Manifest::parse(body.as_bytes(), *content_type) {
                Ok(Manifest::Image(_)) => "image".to_owned(),
                Ok(Manifest::Index(_)) => "index".to_owned(),
                Err(e) if expect.len() > 5 => format!("error: {e}"),
                Err(_) => "error".to_owned(),
            };
            assert_eq!(&got, expect, "body: {body}");
        }
    }

    #[test]
    fn platform_selection() {
        let entry = |n: u8, arch: &str, os: &str, variant: Option<&str>| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest(n).parse().expect("digest"),
            size: 1,
            urls: vec![],
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
        };
        let index = Index {
            manifests: vec![
                entry(1, "amd64", "windows", None),
                entry(2, "arm64", "linux", Some("v7")),
                entry(3, "amd64", "linux", None),
                entry(4, "arm64", "linux", Some("v8")),
            ],
        };
        let chosen = |arch| index.select(arch).map(|d| d.digest.to_string());
        assert_eq!(chosen("amd64").expect("amd64"), digest(3));
        assert_eq!(chosen("arm64").expect("arm64"), digest(4));
        assert_eq!(
            chosen("s390x").expect_err("none").to_string(),
            "the image index has no manifest for linux/s390x"
        );
    }
}
