//! Rules of the workspace that the compiler does not enforce, checked on every test run:
//! pure crates have no IO dependencies (not even transitively), only `store` holds SQL,
//! unsafe code is forbidden outside `runtime`, and every source file says what it is for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that must stay pure: no IO, no async runtime, no clock. The design depends on
/// it: they are called from simulations with a fake clock and from property tests.
const PURE: &[&str] = &["model", "placement", "converge", "routes", "api"];

/// Crates that mean IO or an async runtime. A pure crate depending on any of them, even
/// through another crate, fails the build's tests.
const IO_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "sqlx",
    "sqlx-core",
    "reqwest",
    "hyper",
    "hyper-util",
    "h2",
    "axum",
    "socket2",
    "async-std",
    "smol",
    "libcontainer",
    "nix",
    "rustls",
    "tokio-rustls",
    "tower",
    "rusqlite",
    "libsqlite3-sys",
    "getrandom",
    "rand",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package name -> the names of its normal (non-dev, non-build) dependencies, as
/// resolved, for every package in the graph.
fn normal_dependency_graph(
    meta: &serde_json::Value,
) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let mut names = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        names.insert(
            package["id"].as_str().expect("id").to_owned(),
            package["name"].as_str().expect("name").to_owned(),
        );
    }
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let id = node["id"].as_str().expect("id").to_owned();
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|dep| dep["pkg"].as_str().expect("pkg").to_owned())
            .collect();
        graph.insert(id, deps);
    }
    (names, graph)
}

#[test]
fn pure_crates_have_no_io_dependencies() {
    let meta = metadata();
    let (names, graph) = normal_dependency_graph(&meta);
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("id"))
        .collect();
    let mut checked = 0;
    for id in &members {
        let name = &names[*id];
        if !PURE.contains(&name.as_str()) {
            continue;
        }
        checked += 1;
        // Walk the normal dependencies, remembering how each crate was reached.
        let mut via: BTreeMap<String, String> = BTreeMap::new();
        let mut stack = vec![id.to_string()];
        while let Some(current) = stack.pop() {
            for dep in &graph[&current] {
                if !via.contains_key(dep) {
                    via.insert(dep.clone(), current.clone());
                    stack.push(dep.clone());
                }
            }
        }
        for dep in via.keys() {
            let dep_name = &names[dep];
            if IO_CRATES.contains(&dep_name.as_str()) {
                let mut path = vec![dep_name.clone()];
                let mut at = dep;
                while let Some(parent) = via.get(at) {
                    path.push(names[parent].clone());
                    if parent == id {
                        break;
                    }
                    at = parent;
                }
                path.reverse();
                panic!(
                    "pure crate `{name}` depends on `{dep_name}` (IO): {}",
                    path.join(" -> ")
                );
            }
        }
    }
    assert!(
        checked >= 2,
        "expected to find the pure crates among the workspace members"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("crates"))
        .expect("crates dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    for dir in crate_dirs() {
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(
                    file.strip_prefix(workspace_root())
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files that do not start with a `//!` line saying what they are for:\n{}",
        missing.join("\n")
    );
}

#[test]
fn unsafe_code_is_forbidden_outside_runtime() {
    let mut missing = Vec::new();
    for dir in crate_dirs() {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name == "runtime" {
            continue;
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("read manifest");
        // Workspace lints forbid unsafe code for every crate that opts into them.
        if !manifest.contains("[lints]\nworkspace = true") {
            missing.push(name);
        }
    }
    let root = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("root manifest");
    assert!(
        root.contains("unsafe_code = \"forbid\""),
        "the workspace lints must forbid unsafe code"
    );
    assert!(
        missing.is_empty(),
        "crates that do not use the workspace lints (which forbid unsafe code): {missing:?}"
    );
}

#[test]
fn only_the_store_speaks_sql() {
    let keywords = [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "CREATE TABLE",
    ];
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        if dir.ends_with("store") || dir.ends_with("tidy") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for line in text.lines() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if keywords.iter().any(|k| line.contains(&format!("\"{k}"))) {
                    offenders.push(format!("{}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside crates/store:\n{}",
        offenders.join("\n")
    );
}
