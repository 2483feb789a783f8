//! `corral bench image`: an instance started from a `docker://` image with the cell's
//! image cache empty (a cold start: manifest, config and layers downloaded, verified
//! and unpacked) against the same image already cached (a warm start).
//!
//! One run, in this process: Debian's docker-registry on 127.0.0.1 with its storage in a
//! temporary directory, an image pushed to it by this benchmark (a busybox-static layer
//! and a layer of `--layer-mb` MB of incompressible bytes, gzip, busybox `httpd` as its
//! command), a server on SQLite and one linux cell. After an untimed warm-up of the
//! cell, `--runs` times: the cell's image cache is emptied and an LRP of one instance
//! created from the image (cold), then another LRP from the same image (warm); each
//! timed from just before its create request to the moment this process sees its
//! instance RUNNING on the event stream, and deleted once it runs.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::LrpCreate;
use clap::Args;
use client::Client;
use image::Digest;
use runtime::HelperClient;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::Record;
use super::cluster::{Cluster, until_cell_joined};
use super::machine::Machine;
use super::markdown::{self, Section};
use super::router::find_program;
use super::start::{Seen, micros, ms, sorted, until_no_containers, watch};
use super::stats::percentile;
use crate::cell_cmd::{self, BackendChoice, CellRunArgs};

#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Cold starts, each followed by a warm one
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: u32,
    /// Size of the image's second layer, of incompressible bytes, in MB
    #[arg(long, value_name = "MB", default_value_t = 32)]
    pub layer_mb: u32,
    #[command(flatten)]
    pub record: Record,
}

const CELL: &str = "bench-image";
const REPOSITORY: &str = "bench/busybox-httpd";
const REGISTRY: &str = "docker-registry";
/// How long the cell may take to join, one instance to start, the registry to answer.
const START_DEADLINE: Duration = Duration::from_secs(120);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

pub async fn run(args: &ImageArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (backend, fallback) = cell_cmd::choose_backend(BackendChoice::Auto)?;
    if backend != BackendChoice::Linux {
        bail!(
            "corral bench image needs the linux backend (images are overlayfs layers): {}",
            fallback.unwrap_or_else(|| "it is not available".to_owned())
        );
    }
    let registry_binary = find_program(REGISTRY).with_context(|| {
        format!("corral bench image needs {REGISTRY} (Debian package docker-registry)")
    })?;
    let machine = Machine::read();
    let command = format!(
        "corral bench image --runs {} --layer-mb {}",
        args.runs, args.layer_mb
    );
    println!("corral bench image: {command}");
    println!(
        "Machine: {} (load average {} at the start; other work on it makes the figures noisy)",
        machine.describe(),
        machine.load
    );
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let registry = Registry::start(&registry_binary, dir.path()).await?;
    let image = build_image(args.layer_mb)?;
    image.push(&registry.addr).await?;
    let reference = format!("docker://{}/{REPOSITORY}:1", registry.addr);
    println!(
        "Image {reference}: {} layers, {:.1} MB compressed, {:.1} MB unpacked\n",
        image.layers.len(),
        image.compressed_bytes() as f64 / 1e6,
        image.unpacked_bytes as f64 / 1e6
    );

    let state_dir = dir.path().join("cell");
    let cell_args = CellRunArgs {
        id: Some(CELL.to_owned()),
        backend,
        state_dir: Some(state_dir.clone()),
        ..CellRunArgs::defaults()
    };
    let cluster = Cluster::start(dir.path(), &cell_args).await?;
    let bench = Bench {
        client: cluster.client()?,
        cursor: cluster.server.newest_event(),
        state_dir,
        reference,
        runs: args.runs,
    };
    let measured = bench.measure().await;
    cluster.stop().await?;
    drop(registry);
    let (cold, warm) = measured?;
    report(args, &machine, &command, &image, &cold, &warm)
}

struct Bench {
    client: Client,
    cursor: u64,
    state_dir: PathBuf,
    reference: String,
    runs: u32,
}

impl Bench {
    /// Cold and warm create -> RUNNING, in microseconds.
    async fn measure(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        until_cell_joined(&self.client, CELL, START_DEADLINE).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch(self.client.clone(), self.cursor, tx));
        let mut seen = Seen::new(rx);
        let helper = HelperClient::connect(&runtime::client::helper_paths(&self.state_dir).0)
            .await
            .context("connect to the runtime helper a second time")?;
        let result = self.rounds(&mut seen, &helper).await;
        watcher.abort();
        result
    }

    async fn rounds(&self, seen: &mut Seen, helper: &HelperClient) -> Result<(Vec<u64>, Vec<u64>)> {
        // The cell's first container pays for the bridge and the page cache of the
        // busybox stack: not measured.
        self.start(seen, "warmup", "preloaded:busybox").await?;
        until_no_containers(helper).await?;
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for round in 0..self.runs {
            self.empty_cache()?;
            cold.push(
                self.start(seen, &format!("cold-{round}"), &self.reference)
                    .await?,
            );
            until_no_containers(helper).await?;
            warm.push(
                self.start(seen, &format!("warm-{round}"), &self.reference)
                    .await?,
            );
            until_no_containers(helper).await?;
            println!(
                "round {}: cold {} ms, warm {} ms",
                round + 1,
                ms(cold.last().copied()),
                ms(warm.last().copied())
            );
        }
        Ok((cold, warm))
    }

    /// Creates an LRP of one instance on `rootfs`, waits until it runs and deletes it;
    /// the time from the create request to RUNNING.
    async fn start(&self, seen: &mut Seen, name: &str, rootfs: &str) -> Result<u64> {
        let create = LrpCreate {
            image_credentials: None,
            name: name.to_owned(),
            domain: None,
            rootfs: Some(rootfs.to_owned()),
            instances: 1,
            resources: Default::default(),
            setup: None,
            action: (!rootfs.starts_with("docker://"))
                .then(|| model::Action::run("sleep", ["1000"])),
            env: vec![],
            ports: vec![],
            checks: None,
            routes: None,
            placement_tags: vec![],
            crash_policy: None,
            annotation: String::new(),
        };
        let asked = Instant::now();
        self.client
            .create_lrp(&create)
            .await
            .with_context(|| format!("create LRP {name}"))?;
        let started = seen.until_running(name, 1, START_DEADLINE).await?;
        self.client
            .delete_lrp(name)
            .await
            .with_context(|| format!("delete LRP {name}"))?;
        Ok(micros(started[0].running - asked))
    }

    /// Removes every blob and layer from the cell's image cache (no container uses
    /// one between rounds).
    fn empty_cache(&self) -> Result<()> {
        let cache = self.state_dir.join("images");
        for kind in ["blobs/sha256", "layers/sha256"] {
            let dir = cache.join(kind);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry
                    .with_context(|| format!("list {}", dir.display()))?
                    .path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("remove {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// The benchmark's image: its blobs, ready to push.
struct Image {
    layers: Vec<Vec<u8>>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    unpacked_bytes: u64,
}

impl Image {
    fn compressed_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.len() as u64).sum()
    }

    /// Pushes the blobs and the manifest (tag `1`) with the distribution API.
    async fn push(&self, registry: &str) -> Result<()> {
        let http = reqwest::Client::new();
        let base = format!("http://{registry}/v2/{REPOSITORY}");
        for blob in self.layers.iter().chain([&self.config]) {
            let digest = Digest::of(blob);
            let started = http
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .context("start a blob upload")?;
            if !started.status().is_success() {
                bail!("the registry refused an upload: HTTP {}", started.status());
            }
            let location = started
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .context("the registry named no upload location")?;
            let mut url = reqwest::Url::parse(&format!("http://{registry}"))?.join(location)?;
            url.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let put = http
                .put(url)
                .header("content-type", "application/octet-stream")
                .body(blob.clone())
                .send()
                .await
                .context("upload a blob")?;
            if !put.status().is_success() {
                bail!("the registry refused blob {digest}: HTTP {}", put.status());
            }
        }
        let put = http
            .put(format!("{base}/manifests/1"))
            .header("content-type", OCI_MANIFEST)
            .body(self.manifest.clone())
            .send()
            .await
            .context("push the manifest")?;
        if !put.status().is_success() {
            bail!("the registry refused the manifest: HTTP {}", put.status());
        }
        Ok(())
    }
}

/// A busybox-static layer with `httpd`'s page, and a layer of `layer_mb` MB of
/// pseudo-random bytes (xorshift, fixed seed: the same image every run).
fn build_image(layer_mb: u32) -> Result<Image> {
    let busybox = std::fs::read("/bin/busybox")
        .context("read /bin/busybox (Debian package busybox-static)")?;
    let page = b"corral bench image\n";
    let base = tar_gz(&[
        ("bin/busybox", &busybox, 0o755),
        ("www/index.html", page, 0o644),
    ])?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = vec![0u8; layer_mb as usize * 1024 * 1024];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let bulk = tar_gz(&[("data/bulk", &data, 0o644)])?;
    let layers = vec![base.0, bulk.0];
    let diff_ids = [base.1.to_string(), bulk.1.to_string()];
    let config = serde_json::to_vec(&json!({
        "architecture": image::current_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox", "httpd"],
            "Cmd": ["-f", "-p", "8080", "-h", "/www"],
            "ExposedPorts": {"8080/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))?;
    let descriptor = |media_type: &str, blob: &[u8]| json!({"mediaType": media_type, "digest": Digest::of(blob).to_string(), "size": blob.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
    }))?;
    Ok(Image {
        layers,
        config,
        manifest,
        unpacked_bytes: (busybox.len() + page.len() + data.len()) as u64,
    })
}

/// A gzip-compressed tar of regular files (parent directories added), and the digest
/// of the uncompressed tar (the layer's diff id).
fn tar_gz(files: &[(&str, &[u8], u32)]) -> Result<(Vec<u8>, Digest)> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<&str> = Vec::new();
    for (path, bytes, mode) in files {
        if let Some((dir, _)) = path.rsplit_once('/')
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(1_700_000_000);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_size(bytes.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, path, *bytes)?;
    }
    let tar = builder.into_inner()?;
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    Ok((gz.finish()?, diff_id))
}

/// docker-registry on a free loopback port, its storage under the benchmark's
/// directory; killed when dropped.
struct Registry {
    addr: String,
    _child: Child,
}

impl Registry {
    async fn start(binary: &Path, dir: &Path) -> Result<Registry> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port")?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.join("registry").display()
            ),
        )
        .context("write the registry's config")?;
        let log = std::fs::File::create(dir.join("registry.log")).context("create registry.log")?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                bail!("{REGISTRY} exited with {status}: {log}");
            }
            if let Ok(response) = http.get(format!("http://{addr}/v2/")).send().await
                && response.status().is_success()
            {
                return Ok(Registry {
                    addr,
                    _child: child,
                });
            }
            if started.elapsed() > START_DEADLINE {
                bail!("{REGISTRY} did not answer on {addr} within {START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn report(
    args: &ImageArgs,
    machine: &Machine,
    command: &str,
    image: &Image,
    cold: &[u64],
    warm: &[u64],
) -> Result<()> {
    let cold = sorted(cold);
    let warm = sorted(warm);
    let p = |v: &[u64], q: f64| ms(percentile(v, q));
    let both = |v: &[u64]| format!("{} / {}", p(v, 50.0), p(v, 99.0));
    let saved = match (percentile(&cold, 50.0), percentile(&warm, 50.0)) {
        (Some(c), Some(w)) => ms(Some(c.saturating_sub(w))),
        _ => "-".to_owned(),
    };
    let size = format!(
        "{:.1} MB in {} layers ({:.1} MB unpacked)",
        image.compressed_bytes() as f64 / 1e6,
        image.layers.len(),
        image.unpacked_bytes as f64 / 1e6
    );
    println!(
        "\n{:<30} {:>9} {:>9} {:>9} {:>9}",
        "(ms)", "p50", "p99", "min", "max"
    );
    for (what, v) in [("cold: pull + start", &cold), ("warm: cached image", &warm)] {
        println!(
            "{what:<30} {:>9} {:>9} {:>9} {:>9}",
            p(v, 50.0),
            p(v, 99.0),
            ms(v.first().copied()),
            ms(v.last().copied())
        );
    }
    println!("\nImage: {size}. The pull costs {saved} ms at p50.");
    if !args.record.no_record {
        let row = vec![
            machine.date.clone(),
            format!("`{command}`"),
            size,
            args.runs.to_string(),
            both(&cold),
            both(&warm),
            saved,
            machine.table_cell(),
        ];
        markdown::record(&args.record.out, &SECTION, row)?;
    }
    Ok(())
}

const SECTION: Section<'static> = Section {
    title: "Image start",
    intro: "`sudo corral bench image [--runs N] [--layer-mb MB]`: Debian's docker-registry on 127.0.0.1 and an image pushed to it by the benchmark (a busybox-static layer and a layer of MB megabytes of incompressible bytes, gzip; busybox httpd as its command), a server on SQLite and one linux cell, in one process. N times: the cell's image cache emptied and an LRP of one instance created from the image, timed from the create request to its instance RUNNING on the event stream (cold: manifest, config and layers downloaded over loopback, verified and unpacked); then another LRP from the same image (warm: only the tag is resolved). Interleaved so drift hits both alike.",
    header: &[
        "Date",
        "Command",
        "Image",
        "Runs",
        "Cold p50 / p99 (ms)",
        "Warm p50 / p99 (ms)",
        "Pull cost p50 (ms)",
        "Machine (load)",
    ],
    key: &[1],
    outro: "Issue #6 asks for the two side by side; it sets no goal.",
};
