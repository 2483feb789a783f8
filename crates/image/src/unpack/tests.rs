//! Unpacking as data: a list of tar entries in, a listing of the directory (or the
//! error) out. Needs root (device nodes, ownership, `trusted.*` xattrs).

use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;

use super::*;

/// A tar entry written with raw header bytes, so hostile names can be built too.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    FileOwned(&'a str, &'a str, u32, u32, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, data, link, mode, uid, gid) = match entry {
            E::Dir(n) => (*n, EntryType::Directory, "", "", 0o755, 0, 0),
            E::File(n, d) => (*n, EntryType::Regular, *d, "", 0o644, 0, 0),
            E::FileOwned(n, d, mode, uid, gid) => {
                (*n, EntryType::Regular, *d, "", *mode, *uid, *gid)
            }
            E::Symlink(n, l) => (*n, EntryType::Symlink, "", *l, 0o777, 0, 0),
            E::Hardlink(n, l) => (*n, EntryType::Link, "", *l, 0o644, 0, 0),
        };
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(1_000_000);
        header.set_cksum();
        builder
            .append(&header, data.as_bytes())
            .expect("append to a Vec");
    }
    builder.into_inner().expect("finish a Vec")
}

/// One line per path: kind, mode, owner, and content, link target or opaque marker.
fn listing(root: &Path) -> String {
    let mut paths = vec![PathBuf::from(".")];
    collect(root, root, &mut paths);
    paths.sort();
    let mut out = String::new();
    for rel in paths {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).expect("stat");
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            let opaque = rustix::fs::lgetxattr(&path, OPAQUE_XATTR, &mut [0u8; 8]).is_ok();
            if opaque {
                "dir opaque".to_owned()
            } else {
                "dir".to_owned()
            }
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                fs::read_link(&path).expect("readlink").display()
            )
        } else if ft.is_char_device() {
            format!("chardev {}", meta.rdev())
        } else {
            format!(
                "file {:?} links={}",
                fs::read_to_string(&path).expect("read"),
                meta.nlink()
            )
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            meta.mode() & 0o7777
        };
        let _ = writeln!(
            out,
            "{} {what} {mode:o} {}:{}",
            rel.display(),
            meta.uid(),
            meta.gid()
        );
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        if fs::symlink_metadata(&path).expect("stat").is_dir() {
            collect(root, &path, out);
        }
    }
}

fn check(entries: &[E<'_>], expect: &str) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: unpacking needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let got = match unpack_tar(&tar_of(entries)[..], dir.path()) {
        Ok(_) => listing(dir.path()),
        Err(e) => format!("error: {e}\n"),
    };
    assert_eq!(got, expect);
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    check(
        &[
            E::Dir("etc/"),
            E::File("etc/.wh.passwd", ""),
            E::File("./etc/.wh..wh..opq", ""),
            E::File("var/lib/.wh..wh.plnk", ""),
            E::File("keep", "k"),
        ],
        ". dir 755 0:0\n\
         etc dir opaque 755 0:0\n\
         etc/passwd chardev 0 0 0:0\n\
         keep file \"k\" links=1 644 0:0\n\
         var dir 755 0:0\n\
         var/lib dir 755 0:0\n",
    );
}

#[test]
fn files_links_and_ownership() {
    check(
        &[
            E::Dir("./"),
            E::Dir("bin/"),
            E::FileOwned("bin/busybox", "bb", 0o4755, 1000, 1001),
            E::Symlink("bin/sh", "/bin/busybox"),
            E::Hardlink("bin/ls", "bin/busybox"),
            E::File("bin/replaced", "old"),
            E::File("bin/replaced", "new"),
        ],
        ". dir 755 0:0\n\
         bin dir 755 0:0\n\
         bin/busybox file \"bb\" links=2 4755 1000:1001\n\
         bin/ls file \"bb\" links=2 4755 1000:1001\n\
         bin/replaced file \"new\" links=1 644 0:0\n\
         bin/sh symlink -> /bin/busybox 0 0:0\n",
    );
}

#[test]
fn hostile_paths_are_refused() {
    let cases: &[(&[E<'_>], &str)] = &[
        (
            &[E::File("/etc/passwd", "x")],
            "error: entry `/etc/passwd` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[E::File("a/../../x", "x")],
            "error: entry `a/../../x` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[E::File("..", "x")],
            "error: entry `..` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[E::File("a/.wh...", "")],
            "error: entry `a/.wh...` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[E::Symlink("etc", "/etc"), E::File("etc/passwd", "x")],
            "error: entry `etc/passwd` goes through `etc`, which is a symlink\n",
        ),
        (
            &[E::Symlink("up", ".."), E::File("up/x", "x")],
            "error: entry `up/x` goes through `up`, which is a symlink\n",
        ),
        (
            &[E::File("f", "x"), E::File("f/g", "x")],
            "error: entry `f/g` goes through `f`, which is not a directory\n",
        ),
        (
            &[E::Hardlink("shadow", "/etc/shadow")],
            "error: entry `/etc/shadow` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[E::Hardlink("shadow", "../etc/shadow")],
            "error: entry `../etc/shadow` escapes the layer directory (absolute path or `..`)\n",
        ),
        (
            &[
                E::Symlink("etc", "/etc"),
                E::Hardlink("shadow", "etc/shadow"),
            ],
            "error: hard link `shadow` points to `etc/shadow`, which is not in the layer\n",
        ),
        (
            &[E::Hardlink("missing", "nothing")],
            "error: hard link `missing` points to `nothing`, which is not in the layer\n",
        ),
    ];
    for (entries, expect) in cases {
        check(entries, expect);
    }
}

#[test]
fn digest_is_of_the_uncompressed_stream() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: unpacking needs root");
        return;
    }
    let tar = tar_of(&[E::File("a", "hello")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let blob = dir.path().join("blob.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut encoder, &tar).expect("compress");
    fs::write(&blob, encoder.finish().expect("compress")).expect("write blob");
    let dest = dir.path().join("layer");
    fs::create_dir(&dest).expect("mkdir");
    let unpacked = unpack_layer(&blob, &dest).expect("unpack");
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    assert!(unpacked.disk_bytes > 0);
    assert_eq!(fs::read_to_string(dest.join("a")).expect("read"), "hello");
}
