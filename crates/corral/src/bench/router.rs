//! `corral bench router`: Corral's HTTP router against nginx proxying the same backend,
//! and how soon a new instance gets traffic through the router.
//!
//! One run, on one machine: a server on SQLite in a temporary directory and one cell
//! with the process backend, in this process. The backend is an LRP whose one instance
//! is nginx serving a small static file, routed as `bench.test`. Corral's router runs as
//! a child process (`corral router`) following the server; nginx, configured here as a
//! reverse proxy of the same instance (keepalive upstream, HTTP/1.1, no access log), on
//! another loopback port. wrk drives the backend directly, then nginx, then Corral's
//! router, each with `--connections` and then with one, `--rounds` times with the order
//! rotated each round, since the machine's few cores make back-to-back runs drift. The
//! figures are the medians over rounds: requests/s, wrk's p50 and p99 latency, the
//! ratio of Corral's requests/s to nginx's and what each proxy adds to the direct p50
//! and p99 of the same round (under load that is mostly queueing; with one connection,
//! the hop itself).
//!
//! Then route propagation: N LRPs created one after another, each with its own hostname,
//! each timed from the moment this process sees its instance RUNNING on the event stream
//! to the first 200 through the router for that hostname, polled every millisecond.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::LrpCreate;
use clap::Args;
use client::Client;
use futures::StreamExt;
use model::{
    Action, Check, CheckKind, Checks, HttpRoute, Instance, InstanceState, Presence, Routes,
};
use runtime::{ContainerRuntime, HelperClient};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::Record;
use super::cluster::Cluster;
use super::machine::{Machine, cpu_seconds};
use super::markdown::{self, Section, thousands};
use super::stats::{median, percentile};
use crate::cell_cmd::{BackendChoice, CellRunArgs};

#[derive(Debug, Clone, Args)]
pub struct RouterArgs {
    /// How long each wrk run lasts, in seconds
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub duration: u64,
    /// wrk's open connections
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub connections: u32,
    /// wrk's threads
    #[arg(long, value_name = "T", default_value_t = 2)]
    pub threads: u32,
    /// Rounds of direct, nginx and Corral, in a rotating order; the figures are the
    /// medians
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub rounds: u32,
    /// New instances timed from RUNNING to their first 200 through the router
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub propagations: u32,
    #[command(flatten)]
    pub record: Record,
}

const CELL: &str = "bench-router";
const BACKEND: &str = "backend";
const HOST: &str = "bench.test";
/// The container port the backend's instances declare and the routes name.
const PORT: u16 = 8080;
/// The static file the backend serves.
const BODY: &str = "Corral router benchmark: a small static response.\n";
/// How long the cell may take to join, an instance to start, and a proxy to answer.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the cell may take to stop the containers once their LRPs are deleted.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long after RUNNING the router may take to route an instance before the run fails.
const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
/// Design goals (issue #5).
const GOAL_RATIO: f64 = 1.0;
const GOAL_ADDED_P99_MS: f64 = 1.0;
const GOAL_PROPAGATION_P99_MS: f64 = 100.0;

/// What wrk drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Nginx,
    Corral,
}

impl Target {
    const ALL: [Target; 3] = [Target::Direct, Target::Nginx, Target::Corral];

    fn describe(self) -> &'static str {
        match self {
            Target::Direct => "direct to the backend",
            Target::Nginx => "through nginx",
            Target::Corral => "through Corral's router",
        }
    }
}

/// One wrk run, as its output says.
#[derive(Debug, Clone, PartialEq)]
struct Wrk {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    /// Non-2xx/3xx responses and socket errors.
    errors: u64,
}

/// One target's runs in one round: wrk with all its connections, the CPU the proxy
/// used meanwhile, and wrk with one connection.
#[derive(Debug, Clone)]
struct Load {
    wrk: Wrk,
    /// One connection at a time: the latency of a request that does not queue.
    single: Wrk,
    /// The proxy's CPU time per request, in µs (none for direct).
    cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Default)]
struct Figures {
    /// Per round, per target (in `Target::ALL`'s order).
    rounds: Vec<[Option<Load>; 3]>,
    /// RUNNING seen -> first 200 through the router, in µs.
    propagation: Vec<u64>,
    /// How many of those answered 200 before this process saw RUNNING (counted as 0).
    routed_before_running: u32,
}

pub async fn run(args: &RouterArgs) -> Result<()> {
    if args.duration == 0 || args.rounds == 0 || args.threads == 0 {
        bail!("--duration, --rounds and --threads must be at least 1");
    }
    if args.connections < args.threads {
        bail!("wrk needs at least one connection per thread: --connections >= --threads");
    }
    let tools = Tools::find()?;
    let machine = Machine::read();
    let command = command(args);
    println!("corral bench router: {command}");
    println!(
        "Machine: {} (load average {} at the start; other work on it makes the figures noisy)",
        machine.describe(),
        machine.load
    );
    println!(
        "Backend: nginx serving a {}-byte file, as an LRP instance on a process-backend cell; wrk -t{} -c{} -d{}s, {} round(s); {} route propagations",
        BODY.len(),
        args.threads,
        args.connections,
        args.duration,
        args.rounds,
        args.propagations
    );

    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let files = Files::write(dir.path())?;
    let cell_args = CellRunArgs {
        id: Some(CELL.to_owned()),
        // nginx runs from the host's /usr/sbin: no container stack needed, nor root.
        backend: BackendChoice::Process,
        state_dir: Some(dir.path().join("cell")),
        ..CellRunArgs::defaults()
    };
    let cluster = Cluster::start(dir.path(), &cell_args).await?;
    let (api, token) = (cluster.api.clone(), cluster.token.clone());
    let bench = Bench {
        client: cluster.client()?,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("make an HTTP client")?,
        api,
        token,
        cursor: cluster.server.newest_event(),
        runtime: cluster.cell.runtime.clone(),
        tools,
        files,
        args: args.clone(),
    };
    let measured = bench.measure().await;
    cluster.stop().await?;
    match measured {
        Ok(figures) => report(args, &machine, &command, &figures),
        Err(e) => {
            // Keep the logs of nginx and the router to look into.
            let kept = dir.keep();
            eprintln!("The run's files are kept in {}.", kept.display());
            Err(e)
        }
    }
}

fn command(args: &RouterArgs) -> String {
    let mut command = format!(
        "corral bench router --duration {} --connections {}",
        args.duration, args.connections
    );
    if args.threads != 2 {
        command.push_str(&format!(" --threads {}", args.threads));
    }
    if args.rounds != 3 {
        command.push_str(&format!(" --rounds {}", args.rounds));
    }
    if args.propagations != 20 {
        command.push_str(&format!(" --propagations {}", args.propagations));
    }
    command
}

/// The programs the benchmark runs besides Corral.
#[derive(Debug, Clone)]
struct Tools {
    nginx: PathBuf,
    wrk: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let nginx = find_program("nginx");
        let wrk = find_program("wrk");
        match (nginx, wrk) {
            (Some(nginx), Some(wrk)) => Ok(Tools { nginx, wrk }),
            (nginx, wrk) => {
                let missing: Vec<&str> = [("nginx", nginx.is_none()), ("wrk", wrk.is_none())]
                    .into_iter()
                    .filter_map(|(name, gone)| gone.then_some(name))
                    .collect();
                bail!(
                    "corral bench router needs nginx and wrk; not found: {} \
                     (Debian packages nginx-light and wrk: apt-get install -y nginx-light wrk)",
                    missing.join(", ")
                )
            }
        }
    }
}

/// `name` on $PATH, or in the sbin directories a user's $PATH often lacks.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The files nginx needs, in the run's temporary directory.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    /// The backend's configuration with `@PORT@` for the port the cell gives it.
    backend_template: PathBuf,
}

impl Files {
    fn write(dir: &Path) -> Result<Files> {
        use std::os::unix::fs::PermissionsExt;
        // nginx's workers run as an unprivileged user when the master runs as root: they
        // must be able to read the static file below the temporary directory.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("make {} readable", dir.display()))?;
        for sub in ["www", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("www/index.html"), BODY).context("write the static file")?;
        let backend_template = dir.join("backend.conf.in");
        let conf = nginx_conf(
            dir,
            "worker_processes 1;\npid @DIR@/backend-@PORT@.pid;",
            "listen 127.0.0.1:@PORT@;\n        root @DIR@/www;\n        location / {}",
            "",
        );
        std::fs::write(&backend_template, conf).context("write the backend's nginx.conf")?;
        Ok(Files {
            dir: dir.to_owned(),
            backend_template,
        })
    }

    /// The backend's process: nginx on `$PORT`, in the foreground.
    fn backend_action(&self, nginx: &Path) -> Action {
        let dir = self.dir.display();
        let script = format!(
            "sed \"s/@PORT@/$PORT/g\" '{template}' > '{dir}/backend-'$PORT'.conf' && \
             exec '{nginx}' -p '{dir}' -e stderr -c '{dir}/backend-'$PORT'.conf' -g 'daemon off;'",
            template = self.backend_template.display(),
            nginx = nginx.display(),
        );
        Action::run("sh", ["-c", &script])
    }
}

/// An nginx.conf: `main` at the top level, `server` in the one server block, `http`
/// in the http block; `@DIR@` is the run's directory.
fn nginx_conf(dir: &Path, main: &str, server: &str, http: &str) -> String {
    let conf = format!(
        "# Written by corral bench router.
{main}
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    # A benchmark's connections stay open for its whole run.
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_body_temp_path @DIR@/tmp/body;
    proxy_temp_path @DIR@/tmp/proxy;
    fastcgi_temp_path @DIR@/tmp/fastcgi;
    uwsgi_temp_path @DIR@/tmp/uwsgi;
    scgi_temp_path @DIR@/tmp/scgi;
{http}
    server {{
        {server}
    }}
}}
"
    );
    conf.replace("@DIR@", &dir.display().to_string())
}

/// The reverse proxy's configuration: every request to `backend` over kept-alive
/// HTTP/1.1 connections.
fn proxy_conf(dir: &Path, listen: SocketAddr, backend: SocketAddr, connections: u32) -> String {
    nginx_conf(
        dir,
        "worker_processes auto;\npid @DIR@/proxy.pid;",
        &format!(
            "listen {listen};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}"
        ),
        &format!(
            "    upstream backend {{
        server {backend};
        keepalive {connections};
        keepalive_requests 10000000;
    }}"
        ),
    )
}

/// A child process the benchmark started: nginx or Corral's router.
struct Started {
    name: &'static str,
    child: Child,
    /// Its stdout and stderr.
    log: PathBuf,
    /// How to ask it to stop (nginx's own `-s stop`), else SIGKILL.
    stop: Option<Command>,
}

impl Started {
    async fn stop(mut self) {
        if let Some(mut stop) = self.stop.take() {
            let _ = stop
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        if let Err(e) = self.child.kill().await {
            eprintln!("Could not stop {}: {e}", self.name);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until `url` answers 200 to `Host: bench.test`; fails at once if the
    /// process exits first.
    async fn until_serving(&mut self, http: &reqwest::Client, url: &str) -> Result<()> {
        tokio::select! {
            ok = first_ok(http.clone(), url.to_owned(), HOST.to_owned(), START_DEADLINE) => ok
                .map(drop)
                .with_context(|| format!("wait for {} to answer 200 at {url}", self.name)),
            status = self.child.wait() => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} exited ({}) before answering at {url}; its output ({}):\n{}",
                    self.name,
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    self.log.display(),
                    tail.join("\n")
                )
            }
        }
    }
}

/// What a run needs once the server and the cell are up.
struct Bench {
    client: Client,
    http: reqwest::Client,
    api: String,
    token: String,
    /// The newest event before the benchmark's first create.
    cursor: u64,
    /// The cell's runtime helper, to see its containers gone at the end.
    runtime: Arc<HelperClient>,
    tools: Tools,
    files: Files,
    args: RouterArgs,
}

impl Bench {
    async fn measure(&self) -> Result<Figures> {
        self.until_cell_joined().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch(self.client.clone(), self.cursor, tx));
        let mut seen = Seen::new(rx);
        let mut children = Vec::new();
        let result = self.phases(&mut seen, &mut children).await;
        for child in children {
            child.stop().await;
        }
        watcher.abort();
        self.remove_lrps().await;
        result
    }

    async fn phases(&self, seen: &mut Seen, children: &mut Vec<Started>) -> Result<Figures> {
        self.client
            .create_lrp(&self.lrp(BACKEND, HOST))
            .await
            .context("create the backend LRP")?;
        let (_, instance) = seen.until_running(BACKEND, START_DEADLINE).await?;
        let backend = instance_addr(&instance)?;
        let direct = format!("http://{backend}/");
        self.until_ok(&direct, "the backend").await?;

        let proxy_addr = free_port()?;
        let nginx = format!("http://{proxy_addr}/");
        let proxy = children.push_mut(self.start_proxy(proxy_addr, backend)?);
        proxy.until_serving(&self.http, &nginx).await?;
        let proxy_pid = proxy.pid();

        let router_addr = free_port()?;
        let corral = format!("http://{router_addr}/");
        let router = children.push_mut(self.start_router(router_addr)?);
        router.until_serving(&self.http, &corral).await?;
        let pids = [None, proxy_pid, router.pid()];
        println!(
            "Backend {backend} (direct), nginx {proxy_addr} (pid {}), Corral's router {router_addr} (pid {}; to profile it: perf record -g -p PID)\n",
            pid_text(pids[1]),
            pid_text(pids[2])
        );
        let urls = [direct, nginx, corral.clone()];

        // Untimed: the first seconds fill caches and pools on every path.
        for url in &urls {
            self.wrk(url, 1, self.args.threads, self.args.connections)
                .await?;
        }
        let mut figures = Figures::default();
        for round in 0..self.args.rounds as usize {
            let mut loads: [Option<Load>; 3] = [None, None, None];
            for k in 0..3 {
                let i = (round + k) % 3;
                let before = pids[i].map(process_tree_cpu);
                let wrk = self
                    .wrk(
                        &urls[i],
                        self.args.duration,
                        self.args.threads,
                        self.args.connections,
                    )
                    .await?;
                let cpu_us_per_request = match (pids[i], before) {
                    (Some(pid), Some(before)) if wrk.requests > 0 => {
                        Some((process_tree_cpu(pid) - before) * 1e6 / wrk.requests as f64)
                    }
                    _ => None,
                };
                let single = self.wrk(&urls[i], self.args.duration, 1, 1).await?;
                println!(
                    "round {}: {:<24} {:>9.0} requests/s, p50 {} ms, p99 {} ms{}; one connection p50 {} ms, p99 {} ms",
                    round + 1,
                    Target::ALL[i].describe(),
                    wrk.requests_per_sec,
                    ms3(wrk.p50_us),
                    ms3(wrk.p99_us),
                    if wrk.errors > 0 {
                        format!(", {} errors", wrk.errors)
                    } else {
                        String::new()
                    },
                    ms3(single.p50_us),
                    ms3(single.p99_us),
                );
                loads[i] = Some(Load {
                    wrk,
                    single,
                    cpu_us_per_request,
                });
            }
            figures.rounds.push(loads);
        }
        println!();
        self.propagation(seen, &corral, &mut figures).await?;
        Ok(figures)
    }

    /// N LRPs, each with its own hostname: RUNNING seen -> first 200 through the router.
    async fn propagation(
        &self,
        seen: &mut Seen,
        router: &str,
        figures: &mut Figures,
    ) -> Result<()> {
        for i in 0..self.args.propagations {
            let name = format!("p{i}");
            let host = format!("p{i}.{HOST}");
            self.client
                .create_lrp(&self.lrp(&name, &host))
                .await
                .with_context(|| format!("create LRP {name}"))?;
            // Polling starts at once: a router quicker than this process's event stream
            // shows as 0.
            let poller = tokio::spawn(first_ok(
                self.http.clone(),
                router.to_owned(),
                host.clone(),
                START_DEADLINE + ROUTE_DEADLINE,
            ));
            let running = match seen.until_running(&name, START_DEADLINE).await {
                Ok((running, _)) => running,
                Err(e) => {
                    poller.abort();
                    return Err(e);
                }
            };
            let routed = match tokio::time::timeout(ROUTE_DEADLINE, poller).await {
                Ok(joined) => joined.context("the router poller failed")??,
                Err(_) => bail!(
                    "{host}: no 200 through the router {ROUTE_DEADLINE:?} after its instance was RUNNING"
                ),
            };
            if routed < running {
                figures.routed_before_running += 1;
            }
            figures
                .propagation
                .push(micros(routed.saturating_duration_since(running)));
            self.client
                .delete_lrp(&name)
                .await
                .with_context(|| format!("delete LRP {name}"))?;
        }
        let sorted = sorted(&figures.propagation);
        println!(
            "route propagation: {} instances, RUNNING -> first 200 through the router p50 {} ms, p99 {} ms\n",
            sorted.len(),
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0))
        );
        Ok(())
    }

    fn lrp(&self, name: &str, hostname: &str) -> LrpCreate {
        LrpCreate {
            image_credentials: None,
            name: name.to_owned(),
            domain: None,
            rootfs: Some("preloaded:host".to_owned()),
            instances: 1,
            resources: Default::default(),
            setup: None,
            action: Some(self.files.backend_action(&self.tools.nginx)),
            env: vec![],
            ports: vec![PORT],
            // RUNNING once nginx accepts connections, not merely once it was started.
            checks: Some(Checks {
                liveness: Some(Check {
                    kind: CheckKind::Tcp { port: PORT },
                    interval_ms: 30_000,
                    timeout_ms: 1_000,
                }),
                ..Checks::default()
            }),
            routes: Some(Routes {
                http: vec![HttpRoute {
                    hostname: hostname.to_owned(),
                    port: PORT,
                }],
                tcp: vec![],
            }),
            placement_tags: vec![],
            crash_policy: None,
            annotation: String::new(),
        }
    }

    fn start_proxy(&self, listen: SocketAddr, backend: SocketAddr) -> Result<Started> {
        let dir = &self.files.dir;
        let conf = dir.join("proxy.conf");
        std::fs::write(
            &conf,
            proxy_conf(dir, listen, backend, self.args.connections),
        )
        .context("write the proxy's nginx.conf")?;
        let log = std::fs::File::create(dir.join("proxy.log")).context("create proxy.log")?;
        let child = Command::new(&self.tools.nginx)
            .arg("-p")
            .arg(dir)
            .args(["-e", "stderr", "-c"])
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.tools.nginx.display()))?;
        let mut stop = Command::new(&self.tools.nginx);
        stop.arg("-p")
            .arg(dir)
            .args(["-e", "stderr", "-c"])
            .arg(&conf)
            .args(["-s", "stop"]);
        Ok(Started {
            name: "nginx",
            child,
            log: dir.join("proxy.log"),
            stop: Some(stop),
        })
    }

    /// `corral router` following the server, in a child process of its own as nginx is.
    fn start_router(&self, listen: SocketAddr) -> Result<Started> {
        let dir = &self.files.dir;
        let log = std::fs::File::create(dir.join("router.log")).context("create router.log")?;
        let child = Command::new(std::env::current_exe().context("find this program")?)
            .args(["router", "--server", &self.api, "--http"])
            .arg(listen.to_string())
            .env("CORRAL_TOKEN", &self.token)
            // Like the nginx it is compared with: no access log. The router writes one
            // line per request to stderr at info otherwise.
            .env("RUST_LOG", "info,access=off")
            .env("CORRAL_HOME", dir.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start corral router")?;
        Ok(Started {
            name: "corral router",
            child,
            log: dir.join("router.log"),
            stop: None,
        })
    }

    /// One wrk run against `url` with `Host: bench.test`.
    async fn wrk(&self, url: &str, seconds: u64, threads: u32, connections: u32) -> Result<Wrk> {
        let mut command = Command::new(&self.tools.wrk);
        command
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .args(["-H", &format!("Host: {HOST}")])
            .arg(url)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let limit = Duration::from_secs(seconds + 30);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .with_context(|| format!("wrk against {url} ran longer than {limit:?}"))?
            .context("run wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk against {url} failed ({}): {}{}",
                output.status,
                text,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let wrk = parse_wrk(&text).with_context(|| format!("read wrk's output:\n{text}"))?;
        // An error page is cheaper than the file: more than a few would flatter a proxy.
        if wrk.errors * 100 > wrk.requests {
            bail!(
                "wrk against {url}: {} of {} requests failed:\n{text}",
                wrk.errors,
                wrk.requests
            );
        }
        Ok(wrk)
    }

    /// Deletes the LRPs the run created and waits until the cell stopped their
    /// containers, so none is left when its runtime helper is shut down.
    async fn remove_lrps(&self) {
        let lrps = self.client.lrps(None).await.unwrap_or_default();
        for lrp in &lrps {
            if let Err(e) = self.client.delete_lrp(lrp.spec.name.as_str()).await {
                eprintln!("Could not delete LRP {}: {e}", lrp.spec.name);
            }
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            match self.runtime.list().await {
                Ok(held) if !held.is_empty() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return,
            }
        }
        eprintln!(
            "The cell still holds containers {STOP_DEADLINE:?} after their LRPs were deleted."
        );
    }

    /// Waits until `url` answers 200 to `Host: bench.test`.
    async fn until_ok(&self, url: &str, what: &str) -> Result<()> {
        first_ok(
            self.http.clone(),
            url.to_owned(),
            HOST.to_owned(),
            START_DEADLINE,
        )
        .await
        .with_context(|| format!("wait for {what} to answer 200 at {url}"))
        .map(drop)
    }

    async fn until_cell_joined(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let cells = self.client.cells().await.unwrap_or_default();
            if cells.iter().any(|c| c.id.as_str() == CELL) {
                return Ok(());
            }
            if started.elapsed() > START_DEADLINE {
                bail!("the cell did not join within {START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `url` with `Host: host` every millisecond until it answers 200; returns when
/// the 200's headers arrived.
async fn first_ok(
    http: reqwest::Client,
    url: String,
    host: String,
    within: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = match http
            .get(&url)
            .header(reqwest::header::HOST, &host)
            .send()
            .await
        {
            Ok(response) => {
                let at = Instant::now();
                let status = response.status();
                // Read to the end, so the connection is kept for the next poll.
                let _ = response.bytes().await;
                if status == reqwest::StatusCode::OK {
                    return Ok(at);
                }
                format!("the last answer was {status}")
            }
            Err(e) => format!("the last request failed: {e}"),
        };
        if Instant::now() > deadline {
            bail!("{host} at {url}: no 200 within {within:?}; {last}");
        }
    }
}

/// Where the cell says an instance's `PORT` is reachable.
fn instance_addr(instance: &Instance) -> Result<SocketAddr> {
    let address = instance
        .address
        .as_deref()
        .context("the backend's instance has no address")?;
    let port = instance
        .ports
        .iter()
        .find(|p| p.container_port == PORT)
        .with_context(|| format!("the backend's instance has no host port for {PORT}"))?
        .host_port;
    format!("{address}:{port}")
        .parse()
        .with_context(|| format!("the backend's address {address}:{port}"))
}

/// A loopback port nothing listens on now (the kernel's pick; free again once dropped).
fn free_port() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("find a free loopback port")
}

/// The CPU time of `pid` and its children (nginx's workers), in seconds.
fn process_tree_cpu(pid: u32) -> f64 {
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_pid(child) == Some(pid))
        .map(cpu_seconds)
        .sum();
    cpu_seconds(pid) + children
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, then the parent's pid.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Reads wrk's `--latency` report: requests/s, the 50% and 99% latencies, the request
/// count, and non-2xx/3xx responses plus socket errors.
fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut requests_per_sec = None;
    let (mut p50_us, mut p99_us) = (None, None);
    let mut requests = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = rest.trim().parse::<f64>().ok();
        } else if let Some(rest) = line.strip_prefix("50%") {
            p50_us = parse_duration_us(rest.trim());
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99_us = parse_duration_us(rest.trim());
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = count.trim().parse::<u64>().ok();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match (requests_per_sec, p50_us, p99_us, requests) {
        (Some(requests_per_sec), Some(p50_us), Some(p99_us), Some(requests)) => Ok(Wrk {
            requests_per_sec,
            p50_us,
            p99_us,
            requests,
            errors,
        }),
        _ => bail!("no Requests/sec, 50%, 99% or request count in wrk's output"),
    }
}

/// wrk's durations (`550.00us`, `1.50ms`, `2.00s`, `1.00m`) in µs.
fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// An instance's change as the event stream showed it, when this process saw it.
#[derive(Debug)]
struct Change {
    instance: Instance,
    at: Instant,
}

/// Follows instance events after `cursor`, noting when each arrived, until the stream
/// ends or nobody listens.
async fn watch(client: Client, cursor: u64, changes: mpsc::UnboundedSender<Change>) {
    let mut events = client.events(Some(cursor), &["instance"]);
    while let Some(Ok(event)) = events.next().await {
        let at = Instant::now();
        if !matches!(event.kind.as_str(), "instance_created" | "instance_changed") {
            continue;
        }
        let Ok(instance) = serde_json::from_str::<Instance>(event.data.get()) else {
            continue;
        };
        if instance.presence != Presence::Ordinary {
            continue;
        }
        if changes.send(Change { instance, at }).is_err() {
            return;
        }
    }
}

/// The first RUNNING seen of each LRP's instance 0.
struct Seen {
    changes: mpsc::UnboundedReceiver<Change>,
    running: HashMap<String, (Instant, Instance)>,
}

impl Seen {
    fn new(changes: mpsc::UnboundedReceiver<Change>) -> Seen {
        Seen {
            changes,
            running: HashMap::new(),
        }
    }

    /// Waits until `lrp`'s instance 0 has been seen RUNNING: when, and the instance
    /// then. Fails when it crashes or `within` passes.
    async fn until_running(&mut self, lrp: &str, within: Duration) -> Result<(Instant, Instance)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(seen) = self.running.get(lrp) {
                return Ok(seen.clone());
            }
            let change = match tokio::time::timeout_at(deadline, self.changes.recv()).await {
                Ok(Some(change)) => change,
                Ok(None) => bail!("the event stream ended"),
                Err(_) => bail!("{lrp}: not RUNNING after {within:?}"),
            };
            let instance = change.instance;
            if instance.index != 0 {
                continue;
            }
            match instance.state {
                InstanceState::Running => {
                    self.running
                        .entry(instance.lrp.to_string())
                        .or_insert((change.at, instance));
                }
                InstanceState::Crashed if instance.lrp.as_str() == lrp => bail!(
                    "{lrp}'s instance crashed: {}",
                    instance
                        .crash_reason
                        .as_deref()
                        .unwrap_or("no reason given")
                ),
                _ => {}
            }
        }
    }
}

/// Medians over rounds of one target's figures, and of what it adds to direct.
#[derive(Debug, Default)]
struct Summary {
    requests_per_sec: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    added_p50_us: Option<f64>,
    added_p99_us: Option<f64>,
    /// The same with one connection.
    single_p50_us: Option<f64>,
    single_p99_us: Option<f64>,
    single_added_p50_us: Option<f64>,
    single_added_p99_us: Option<f64>,
    cpu_us_per_request: Option<f64>,
    errors: u64,
}

fn summarize(figures: &Figures, target: Target) -> Summary {
    let i = Target::ALL
        .iter()
        .position(|&t| t == target)
        .expect("every target is in ALL");
    let loads = || figures.rounds.iter().filter_map(move |r| r[i].as_ref());
    let added = |f: fn(&Load) -> f64| {
        let rounds = figures.rounds.iter().filter_map(|r| {
            let (direct, this) = (r[0].as_ref()?, r[i].as_ref()?);
            Some(f(this) - f(direct))
        });
        median(rounds).filter(|_| target != Target::Direct)
    };
    Summary {
        requests_per_sec: median(loads().map(|l| l.wrk.requests_per_sec)),
        p50_us: median(loads().map(|l| l.wrk.p50_us)),
        p99_us: median(loads().map(|l| l.wrk.p99_us)),
        added_p50_us: added(|l| l.wrk.p50_us),
        added_p99_us: added(|l| l.wrk.p99_us),
        single_p50_us: median(loads().map(|l| l.single.p50_us)),
        single_p99_us: median(loads().map(|l| l.single.p99_us)),
        single_added_p50_us: added(|l| l.single.p50_us),
        single_added_p99_us: added(|l| l.single.p99_us),
        cpu_us_per_request: median(loads().filter_map(|l| l.cpu_us_per_request)),
        errors: loads().map(|l| l.wrk.errors).sum(),
    }
}

/// The median over rounds of Corral's requests/s over nginx's in the same round.
fn ratio(figures: &Figures) -> Option<f64> {
    median(figures.rounds.iter().filter_map(|r| {
        let (nginx, corral) = (r[1].as_ref()?, r[2].as_ref()?);
        (nginx.wrk.requests_per_sec > 0.0)
            .then(|| corral.wrk.requests_per_sec / nginx.wrk.requests_per_sec)
    }))
}

fn report(args: &RouterArgs, machine: &Machine, command: &str, figures: &Figures) -> Result<()> {
    let [direct, nginx, corral] = Target::ALL.map(|t| summarize(figures, t));
    let ratio = ratio(figures);
    let propagation = sorted(&figures.propagation);
    let (prop_p50, prop_p99) = (
        percentile(&propagation, 50.0),
        percentile(&propagation, 99.0),
    );
    let ratio_text = ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    let within = |us: Option<f64>| yes(us.is_some_and(|us| us <= GOAL_ADDED_P99_MS * 1000.0));
    let goals = format!(
        "requests/s >= 1.0x nginx: {} ({ratio_text}); added p99 <= 1 ms: {} at {} connections ({} ms), {} at one ({} ms); propagation p99 <= 100 ms: {} ({} ms)",
        yes(ratio.is_some_and(|r| r >= GOAL_RATIO) && corral.errors == 0),
        within(corral.added_p99_us),
        args.connections,
        opt_ms3(corral.added_p99_us),
        within(corral.single_added_p99_us),
        opt_ms3(corral.single_added_p99_us),
        yes(prop_p99.is_some_and(|us| us as f64 <= GOAL_PROPAGATION_P99_MS * 1000.0)),
        ms(prop_p99),
    );

    println!(
        "{:<26} {:>11} {:>9} {:>9} {:>10} {:>10} {:>12} {:>7}",
        format!("(medians of {} rounds)", figures.rounds.len()),
        "requests/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "CPU µs/req",
        "errors"
    );
    for (target, s) in Target::ALL.iter().zip([&direct, &nginx, &corral]) {
        println!(
            "{:<26} {:>11} {:>9} {:>9} {:>10} {:>10} {:>12} {:>7}",
            target.describe(),
            s.requests_per_sec
                .map_or_else(|| "-".to_owned(), |r| thousands(r.round() as u64)),
            opt_ms3(s.p50_us),
            opt_ms3(s.p99_us),
            opt_ms3(s.added_p50_us),
            opt_ms3(s.added_p99_us),
            s.cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}")),
            s.errors
        );
    }
    println!(
        "\n{:<26} {:>9} {:>9} {:>10} {:>10}",
        "(one connection)", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"
    );
    for (target, s) in Target::ALL.iter().zip([&direct, &nginx, &corral]) {
        println!(
            "{:<26} {:>9} {:>9} {:>10} {:>10}",
            target.describe(),
            opt_ms3(s.single_p50_us),
            opt_ms3(s.single_p99_us),
            opt_ms3(s.single_added_p50_us),
            opt_ms3(s.single_added_p99_us),
        );
    }
    println!(
        "\nCorral / nginx requests/s: {ratio_text}. Added latency is over direct in the same round; CPU is the proxy's (all its processes) per request."
    );
    let mut propagation_line = format!(
        "Route propagation, {} instances, RUNNING seen -> first 200 through the router (ms): p50 {}, p99 {}, min {}, max {}",
        propagation.len(),
        ms(prop_p50),
        ms(prop_p99),
        ms(propagation.first().copied()),
        ms(propagation.last().copied())
    );
    if figures.routed_before_running > 0 {
        let _ = write!(
            propagation_line,
            " ({} routed before this process saw RUNNING, counted as 0)",
            figures.routed_before_running
        );
    }
    println!("{propagation_line}.");
    println!("Goals (issue #5): {goals}");

    if !args.record.no_record {
        let both = |a: Option<f64>, b: Option<f64>| format!("{} / {}", opt_ms3(a), opt_ms3(b));
        let rate = |s: &Summary| {
            s.requests_per_sec
                .map_or_else(|| "-".to_owned(), |r| thousands(r.round() as u64))
        };
        let cpu = |s: &Summary| {
            s.cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"))
        };
        let row = vec![
            machine.date.clone(),
            format!("`{command}`"),
            rate(&direct),
            rate(&nginx),
            rate(&corral),
            ratio_text,
            both(direct.p50_us, direct.p99_us),
            both(nginx.added_p50_us, nginx.added_p99_us),
            both(corral.added_p50_us, corral.added_p99_us),
            both(direct.single_p50_us, direct.single_p99_us),
            both(nginx.single_added_p50_us, nginx.single_added_p99_us),
            both(corral.single_added_p50_us, corral.single_added_p99_us),
            format!("{} / {}", cpu(&nginx), cpu(&corral)),
            format!("{} / {}", ms(prop_p50), ms(prop_p99)),
            goals,
            machine.table_cell(),
        ];
        markdown::record(&args.record.out, &SECTION, row)?;
    }
    Ok(())
}

fn sorted(samples: &[u64]) -> Vec<u64> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds as milliseconds with one decimal, or `-`.
fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0))
}

/// Microseconds as milliseconds with three decimals: wrk reports µs.
fn ms3(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn opt_ms3(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_owned(), ms3)
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

const SECTION: Section<'static> = Section {
    title: "Router",
    intro: "\
`corral bench router [--duration S] [--connections C] [--rounds R] [--propagations N]`: a server on SQLite and \
one process-backend cell in one process, on one machine. The backend is an LRP whose one instance is nginx \
(one worker) serving a one-line static file, routed as `bench.test`. Corral's router (`corral router`, a child \
process following the server, its access log off with `RUST_LOG=info,access=off`) and nginx (`worker_processes \
auto`, configured by the benchmark as a reverse proxy of the same instance: keepalive upstream, HTTP/1.1, no \
access log) proxy it on other loopback ports. wrk (`-t2 -cC -dS --latency`, `Host: bench.test`) drives the \
backend directly, nginx and Corral's router in turn, then each again with one connection (`-t1 -c1`), R rounds \
with the order rotated each round; the figures are the medians over rounds. Added latency is the proxy's wrk \
p50 / p99 less the direct one of the same round: with C connections kept busy it mostly reflects throughput, \
with one connection it is the hop itself. CPU is the proxy's CPU time (all its processes) per request. Route \
propagation: N LRPs created one after another, each with its own hostname, timed from the moment the \
benchmark sees the instance RUNNING on the event stream to the first 200 for that hostname through the \
router, polled every millisecond. wrk, both proxies and the backend share the machine's cores, so the figures \
are noisy.",
    header: &[
        "Date",
        "Command",
        "Direct req/s",
        "nginx req/s",
        "Corral req/s",
        "Corral / nginx",
        "Direct p50 / p99 (ms)",
        "nginx added p50 / p99 (ms)",
        "Corral added p50 / p99 (ms)",
        "1 connection: direct p50 / p99 (ms)",
        "1 connection: nginx added p50 / p99 (ms)",
        "1 connection: Corral added p50 / p99 (ms)",
        "CPU µs/req nginx / Corral",
        "Propagation p50 / p99 (ms)",
        "Goals",
        "Machine (load)",
    ],
    key: &[1],
    outro: "Goals (issue #5): at least 1.0x nginx's requests/s, added p99 <= 1 ms, route propagation p99 <= 100 ms.",
};

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "\
Running 10s test @ http://127.0.0.1:41234/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   605.12us  300.00us  10.00ms   90.00%
    Req/Sec    50.00k     2.00k   60.00k    70.00%
  Latency Distribution
     50%  550.00us
     75%  700.00us
     90%  900.00us
     99%    1.50ms
  1000000 requests in 10.00s, 200.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 100000.50
Transfer/sec:     20.00MB
";

    #[test]
    fn wrk_reports_are_read() {
        assert_eq!(
            parse_wrk(WRK).expect("parses"),
            Wrk {
                requests_per_sec: 100_000.5,
                p50_us: 550.0,
                p99_us: 1500.0,
                requests: 1_000_000,
                errors: 8,
            }
        );
        assert!(parse_wrk("Running 10s test\n").is_err());
    }

    #[test]
    fn wrk_durations() {
        let cases = [
            ("550.00us", Some(550.0)),
            ("1.50ms", Some(1500.0)),
            ("2.00s", Some(2e6)),
            ("1.00m", Some(60e6)),
            ("12", None),
            ("3.0parsecs", None),
        ];
        for (text, expect) in cases {
            assert_eq!(parse_duration_us(text), expect, "{text}");
        }
    }

    #[test]
    fn the_recorded_command_names_what_differs_from_the_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: RouterArgs,
        }
        let cases: &[(&[&str], &str)] = &[
            (&[], "corral bench router --duration 10 --connections 64"),
            (
                &["--rounds", "5", "--threads", "1", "--no-record"],
                "corral bench router --duration 10 --connections 64 --threads 1 --rounds 5",
            ),
            (
                &["--duration", "3", "--propagations", "4"],
                "corral bench router --duration 3 --connections 64 --propagations 4",
            ),
        ];
        for (argv, expect) in cases {
            let args = Cli::try_parse_from(std::iter::once("router").chain(argv.iter().copied()))
                .expect("parses")
                .args;
            assert_eq!(command(&args), *expect, "{argv:?}");
        }
    }

    #[test]
    fn the_proxy_keeps_connections_to_the_backend() {
        let conf = proxy_conf(
            Path::new("/tmp/x"),
            "127.0.0.1:1000".parse().expect("an address"),
            "127.0.0.1:2000".parse().expect("an address"),
            64,
        );
        for line in [
            "listen 127.0.0.1:1000;",
            "server 127.0.0.1:2000;",
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "access_log off;",
            "pid /tmp/x/proxy.pid;",
        ] {
            assert!(conf.contains(line), "{line} not in\n{conf}");
        }
    }

    #[test]
    fn ratios_and_added_latency_are_medians_of_rounds() {
        let load = |rps: f64, p50: f64, p99: f64| {
            let wrk = Wrk {
                requests_per_sec: rps,
                p50_us: p50,
                p99_us: p99,
                requests: 1000,
                errors: 0,
            };
            Some(Load {
                single: Wrk {
                    p50_us: p50 / 10.0,
                    ..wrk.clone()
                },
                wrk,
                cpu_us_per_request: None,
            })
        };
        let figures = Figures {
            rounds: vec![
                [
                    load(100.0, 10.0, 20.0),
                    load(50.0, 30.0, 60.0),
                    load(40.0, 40.0, 90.0),
                ],
                [
                    load(200.0, 20.0, 30.0),
                    load(100.0, 25.0, 80.0),
                    load(100.0, 30.0, 100.0),
                ],
                [
                    load(150.0, 15.0, 25.0),
                    load(80.0, 20.0, 45.0),
                    load(40.0, 60.0, 95.0),
                ],
            ],
            ..Figures::default()
        };
        assert_eq!(ratio(&figures), Some(0.8));
        let corral = summarize(&figures, Target::Corral);
        assert_eq!(corral.requests_per_sec, Some(40.0));
        assert_eq!(corral.added_p50_us, Some(30.0));
        assert_eq!(corral.added_p99_us, Some(70.0));
        assert_eq!(corral.single_added_p50_us, Some(3.0));
        assert_eq!(summarize(&figures, Target::Direct).added_p50_us, None);
    }
}
