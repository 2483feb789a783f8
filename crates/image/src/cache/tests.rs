//! Eviction: least recently used first, never a leased entry, down to the limit.

use std::time::Duration;

use super::*;

fn blob(cache: &Cache, content: &str, age_secs: u64) -> Digest {
    let digest = Digest::of(content.as_bytes());
    cache
        .write_small_blob(&digest, content.as_bytes())
        .expect("write blob");
    let file = fs::File::options()
        .append(true)
        .open(cache.blob_path(&digest))
        .expect("open blob");
    file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
        .expect("set mtime");
    digest
}

#[test]
fn evicts_least_recently_used_unleased_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("open");
    let oldest = blob(&cache, &"a".repeat(100), 300);
    let leased = blob(&cache, &"b".repeat(100), 200);
    let newer = blob(&cache, &"c".repeat(100), 100);
    let newest = blob(&cache, &"d".repeat(100), 0);
    assert_eq!(cache.size().expect("size"), 400);

    let lease = cache.lease([leased.clone()]);
    let eviction = cache.evict(250).expect("evict");
    let removed: Vec<_> = eviction.removed.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(removed, [oldest.clone(), newer.clone()]);
    assert_eq!(eviction.remaining_bytes, 200);
    assert!(cache.has_blob(&leased) && cache.has_blob(&newest));

    // Leased entries stay even when they alone exceed the limit.
    let eviction = cache.evict(0).expect("evict");
    assert_eq!(eviction.removed.len(), 1);
    assert_eq!(eviction.remaining_bytes, 100);
    drop(lease);
    assert_eq!(cache.evict(0).expect("evict").remaining_bytes, 0);
}

#[test]
fn layers_are_evicted_whole_and_counted_by_recorded_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(dir.path().join("cache")).expect("open");
    let digest = Digest::of(b"layer");
    let unpacked = tempfile::tempdir_in(cache.tmp_dir())
        .expect("tempdir")
        .keep();
    fs::create_dir(unpacked.join("etc")).expect("mkdir");
    fs::write(unpacked.join("etc/hostname"), "x").expect("write");
    cache
        .commit_layer(&digest, &unpacked, 12_345)
        .expect("commit");
    assert!(cache.has_layer(&digest));
    assert_eq!(cache.size().expect("size"), 12_345);

    let eviction = cache.evict(0).expect("evict");
    assert_eq!(
        eviction.removed,
        [Evicted {
            digest: digest.clone(),
            kind: EntryKind::Layer,
            bytes: 12_345
        }]
    );
    assert!(!cache.layer_path(&digest).exists());
    assert_eq!(fs::read_dir(cache.tmp_dir()).expect("tmp").count(), 0);
}
