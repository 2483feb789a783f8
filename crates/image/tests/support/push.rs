//! Builds images in memory (busybox-static layers, configs, manifests, indexes) and
//! pushes them with plain distribution-API calls.

use std::io::Write;

use image::Digest;
use serde_json::json;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A tar entry of a test layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// A layer blob: its uncompressed digest, the compressed bytes and their media type.
pub struct Layer {
    pub diff_id: Digest,
    pub bytes: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn digest(&self) -> Digest {
        Digest::of(&self.bytes)
    }
}

pub fn layer(entries: &[Entry<'_>], compression: Compression) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, &[][..])
                    .expect("append dir");
            }
            Entry::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, *data)
                    .expect("append file");
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("append symlink");
            }
        }
    }
    let tar = builder.into_inner().expect("finish tar");
    let diff_id = Digest::of(&tar);
    let (bytes, media_type) = match compression {
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&tar).expect("gzip");
            (
                encoder.finish().expect("gzip"),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            ruzstd::encoding::compress_to_vec(
                &tar[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        Compression::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
    };
    Layer {
        diff_id,
        bytes,
        media_type,
    }
}

/// A busybox-static base layer: `/bin/busybox`, a few applet links, `/www`.
pub fn busybox_layer(extra: &[Entry<'_>]) -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = vec![
        Entry::Dir("bin/"),
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "busybox"),
        Entry::Symlink("bin/cat", "busybox"),
        Entry::Dir("www/"),
        Entry::File("www/index.html", b"hello from the image\n", 0o644),
    ];
    entries.extend(extra.iter().map(|e| match e {
        Entry::Dir(p) => Entry::Dir(p),
        Entry::File(p, d, m) => Entry::File(p, d, *m),
        Entry::Symlink(p, t) => Entry::Symlink(p, t),
    }));
    layer(&entries, Compression::Gzip)
}

/// The config blob of an image with these layers.
pub fn config(layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": image::current_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox", "httpd"],
            "Cmd": ["-f", "-p", "8080", "-h", "/www"],
            "Env": ["PATH=/bin", "GREETING=hello"],
            "WorkingDir": "/www",
            "User": "0:0",
            "ExposedPorts": {"8080/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .expect("config JSON")
}

pub fn manifest(config: &[u8], layers: &[Layer]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest().to_string(), "size": l.bytes.len()}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(config).to_string(),
            "size": config.len()
        },
        "layers": layers
    }))
    .expect("manifest JSON")
}

/// An index with one entry per `(architecture, manifest bytes)`.
pub fn index(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(arch, manifest)| {
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": Digest::of(manifest).to_string(),
                "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .expect("index JSON")
}

/// Pushes blobs and manifests to one repository of a registry.
pub struct Pusher {
    http: reqwest::Client,
    base: reqwest::Url,
    repository: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    pub fn new(addr: &str, repository: &str, auth: Option<(&str, &str)>) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            base: reqwest::Url::parse(&format!("http://{addr}/v2/")).expect("base URL"),
            repository: repository.to_owned(),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => {
                use base64::Engine as _;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request.header("authorization", format!("Basic {encoded}"))
            }
            None => request,
        }
    }

    /// POST an upload session, then PUT the bytes with their digest (monolithic).
    pub async fn blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let start = self
            .base
            .join(&format!("{}/blobs/uploads/", self.repository))
            .expect("URL");
        let response = self
            .authorized(self.http.post(start))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(
            response.status(),
            202,
            "start upload: {}",
            response.text().await.unwrap_or_default()
        );
        let location = response.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let mut url = self.base.join(&location).expect("upload URL");
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .authorized(self.http.put(url))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(
            response.status(),
            201,
            "upload: {}",
            response.text().await.unwrap_or_default()
        );
        digest
    }

    pub async fn manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
        let url = self
            .base
            .join(&format!("{}/manifests/{reference}", self.repository))
            .expect("URL");
        let response = self
            .authorized(self.http.put(url))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(
            response.status(),
            201,
            "manifest: {}",
            response.text().await.unwrap_or_default()
        );
        Digest::of(bytes)
    }

    /// Pushes a whole single-platform image; returns its manifest bytes.
    pub async fn image(&self, tag: &str, layers: &[Layer]) -> Vec<u8> {
        for layer in layers {
            self.blob(&layer.bytes).await;
        }
        let config = config(layers);
        self.blob(&config).await;
        let manifest = manifest(&config, layers);
        self.manifest(tag, OCI_MANIFEST, &manifest).await;
        manifest
    }
}
