//! Pulls from a real `docker-registry` on 127.0.0.1 with images the tests build and
//! push themselves: layers and whiteouts, index resolution, a corrupted blob, basic
//! auth, and the cache (a second pull downloads nothing; eviction).

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use image::{Cache, Credentials, Phase, Progress, Reference, RegistryClient};
use support::push::{Compression, Entry, Pusher, busybox_layer, index, layer};
use support::registry::{Htpasswd, Registry, skip_reason};

macro_rules! skip_unless_possible {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("{reason}");
            return;
        }
    };
}

fn reference(registry: &Registry, name: &str) -> Reference {
    Reference::parse(
        &format!("docker://{}/{name}", registry.addr),
        image::DOCKER_HUB,
    )
    .expect("valid reference")
}

async fn pull(
    registry: &Registry,
    name: &str,
    credentials: &Credentials,
    cache: &Cache,
) -> Result<(image::Image, Vec<Progress>), image::Error> {
    let client = RegistryClient::new().expect("client");
    let events = Mutex::new(Vec::new());
    let record = |p: Progress| events.lock().expect("progress lock").push(p);
    let image = image::pull(
        &client,
        &reference(registry, name),
        credentials,
        cache,
        &record,
    )
    .await?;
    Ok((image, events.into_inner().expect("progress lock")))
}

/// A three-layer image (gzip, zstd, plain tar) whose upper layers delete a file and
/// make a directory opaque, behind an index that also lists another platform.
async fn push_layered_image(pusher: &Pusher, tag: &str) {
    let base = busybox_layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/doomed", b"delete me", 0o644),
        Entry::File("etc/kept", b"keep me", 0o600),
        Entry::Dir("opq/"),
        Entry::File("opq/old", b"hidden by opaque", 0o644),
    ]);
    let whiteouts = layer(
        &[
            Entry::Dir("etc/"),
            Entry::File("etc/.wh.doomed", b"", 0o644),
            Entry::Dir("opq/"),
            Entry::File("opq/.wh..wh..opq", b"", 0o644),
            Entry::File("opq/new", b"after opaque", 0o644),
        ],
        Compression::Zstd,
    );
    let extra = layer(
        &[Entry::File("etc/added", b"top layer", 0o640)],
        Compression::None,
    );
    let decoy = pusher.image("decoy", &[busybox_layer(&[])]).await;
    let real = pusher.image("single", &[base, whiteouts, extra]).await;
    let index = index(&[("s390x", &decoy), (image::current_architecture(), &real)]);
    pusher.manifest(tag, support::push::OCI_INDEX, &index).await;
}

#[tokio::test]
async fn multi_layer_image_with_whiteouts_shows_the_right_files() {
    skip_unless_possible!();
    let registry = Registry::start(None).await;
    push_layered_image(&Pusher::new(&registry.addr, "test/layered", None), "1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("cache");

    let (image, progress) = pull(&registry, "test/layered:1", &Credentials::Anonymous, &cache)
        .await
        .expect("pull");

    assert_eq!(
        image.layers.len(),
        3,
        "the index resolved to this platform's manifest"
    );
    assert!(image.cached_bytes == 0 && image.downloaded_bytes > 1_000_000);
    assert_eq!(
        image.config.command(),
        ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    );
    assert_eq!(image.config.working_dir.as_deref(), Some("/www"));
    assert_eq!(image.config.exposed_ports[0].port, 8080);
    for digest in &image.layer_digests {
        assert!(
            progress
                .iter()
                .any(|p| &p.digest == digest && p.phase == Phase::Ready)
        );
    }
    let downloading = progress.iter().filter(|p| p.phase == Phase::Downloading);
    assert!(downloading.clone().all(|p| p.done <= p.total));
    assert!(
        downloading
            .clone()
            .any(|p| p.done == p.total && p.total > 1_000_000)
    );

    // The layer directories in overlayfs form.
    let [bottom, middle, top] = &image.layers[..] else {
        panic!("three layers")
    };
    let doomed = std::fs::symlink_metadata(middle.join("etc/doomed")).expect("whiteout");
    assert!(doomed.file_type().is_char_device() && doomed.rdev() == 0);
    assert_eq!(
        rustix::fs::lgetxattr(middle.join("opq"), "trusted.overlay.opaque", &mut [0u8; 4])
            .expect("opaque xattr"),
        1
    );
    let kept = std::fs::metadata(bottom.join("etc/kept")).expect("kept");
    assert_eq!(kept.mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read(top.join("etc/added")).expect("added"),
        b"top layer"
    );

    // Stacked by the kernel, they show the image's files.
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).expect("mkdir");
    let lower: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", lower.join(":")))
        .arg(&merged)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("overlayfs mount failed here; checked the layer directories only");
        return;
    }
    let check = || {
        let exists = |p: &str| merged.join(p).symlink_metadata().is_ok();
        assert!(!exists("etc/doomed"), "whiteout hides the file");
        assert!(
            !exists("opq/old"),
            "opaque directory hides the lower contents"
        );
        assert!(exists("opq/new") && exists("etc/kept") && exists("etc/added"));
        let output = Command::new("chroot")
            .arg(&merged)
            .args(["/bin/sh", "-c", "cat /www/index.html; ls /etc"])
            .output()
            .expect("chroot");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "hello from the image\nadded\nkept\n"
        );
    };
    let result = std::panic::catch_unwind(check);
    let _ = Command::new("umount").arg(&merged).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn a_second_pull_downloads_nothing_and_eviction_frees_unused_layers() {
    skip_unless_possible!();
    let registry = Registry::start(None).await;
    push_layered_image(&Pusher::new(&registry.addr, "test/layered", None), "1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("cache");

    let (first, _) = pull(&registry, "test/layered:1", &Credentials::Anonymous, &cache)
        .await
        .expect("pull");
    let (second, progress) = pull(&registry, "test/layered:1", &Credentials::Anonymous, &cache)
        .await
        .expect("second pull");
    assert_eq!(second.downloaded_bytes, 0);
    assert_eq!(second.cached_bytes, first.downloaded_bytes);
    assert_eq!(second.layers, first.layers);
    assert!(
        progress
            .iter()
            .all(|p| matches!(p.phase, Phase::Cached | Phase::Ready))
    );

    // Leased by the pulled images: nothing can go.
    let size = cache.size().expect("size");
    let eviction = cache.evict(0).expect("evict");
    assert!(eviction.removed.is_empty());
    assert_eq!(eviction.remaining_bytes, size);

    drop((first, second));
    let eviction = cache.evict(0).expect("evict");
    assert_eq!(eviction.remaining_bytes, 0);
    assert!(
        eviction
            .removed
            .iter()
            .any(|e| e.kind == image::EntryKind::Layer)
    );
    let (third, _) = pull(&registry, "test/layered:1", &Credentials::Anonymous, &cache)
        .await
        .expect("pull");
    assert_eq!(third.cached_bytes, 0);
    assert!(third.layers.iter().all(|l| l.is_dir()));
}

#[tokio::test]
async fn a_corrupted_blob_fails_and_leaves_no_cache_entry() {
    skip_unless_possible!();
    let registry = Registry::start(None).await;
    let pusher = Pusher::new(&registry.addr, "test/corrupt", None);
    let good = busybox_layer(&[]);
    let bad = layer(
        &[Entry::File("data", &[7u8; 100_000], 0o644)],
        Compression::Gzip,
    );
    let bad_digest = bad.digest();
    pusher.image("1", &[good, bad]).await;
    // Same length, other bytes: only the digest can tell.
    let stored = registry.blob_file(&bad_digest);
    let mut bytes = std::fs::read(&stored).expect("stored blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("tamper");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("cache");

    let error = pull(&registry, "test/corrupt:1", &Credentials::Anonymous, &cache)
        .await
        .expect_err("a corrupt blob fails the pull");

    let message = error.to_string();
    let expected = format!(
        "blob {bad_digest} is corrupt: digest mismatch: expected {bad_digest}, got {}",
        image::Digest::of(&bytes)
    );
    assert_eq!(message, expected);
    assert!(!cache.blob_path(&bad_digest).exists(), "no blob entry");
    assert!(!cache.layer_path(&bad_digest).exists(), "no layer entry");
    assert_eq!(
        empty_or_list(&cache.root().join("tmp")),
        "",
        "no temporary leftovers"
    );
}

fn empty_or_list(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn basic_auth_accepts_the_right_password_and_never_shows_it() {
    skip_unless_possible!();
    let password = "correct-horse-battery";
    let registry = Registry::start(Some(Htpasswd {
        username: "alice",
        password,
    }))
    .await;
    let pusher = Pusher::new(&registry.addr, "test/private", Some(("alice", password)));
    pusher.image("1", &[busybox_layer(&[])]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("cache");

    let wrong_password = "wrong-password-123";
    let wrong = Credentials::basic("alice", wrong_password);
    let error = pull(&registry, "test/private:1", &wrong, &cache)
        .await
        .expect_err("wrong credentials fail");
    let message = error.to_string();
    assert_eq!(
        message,
        format!(
            "registry {} refused access to test/private: wrong credentials (HTTP 401)",
            registry.addr
        )
    );
    let debug = format!("{error:?} {wrong:?}");
    assert!(!debug.contains(wrong_password) && !message.contains(wrong_password));

    let error = pull(&registry, "test/private:1", &Credentials::Anonymous, &cache)
        .await
        .expect_err("anonymous fails");
    assert!(
        error
            .to_string()
            .ends_with("credentials required (HTTP 401)"),
        "{error}"
    );

    let (image, _) = pull(
        &registry,
        "test/private:1",
        &Credentials::basic("alice", password),
        &cache,
    )
    .await
    .expect("the right password pulls");
    assert_eq!(image.layers.len(), 1);
}

#[tokio::test]
async fn a_missing_tag_is_a_clear_error() {
    skip_unless_possible!();
    let registry = Registry::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("cache");
    let error = pull(&registry, "test/nothing:9", &Credentials::Anonymous, &cache)
        .await
        .expect_err("no such image");
    assert_eq!(
        error.to_string(),
        format!(
            "registry {} has no manifest `9` in test/nothing (HTTP 404)",
            registry.addr
        )
    );
}
