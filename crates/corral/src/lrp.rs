//! The LRP verbs: `create`, `ls`, `status`, `scale`, `update`, `rm`.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::{LrpCreate, LrpPatch, LrpStatus, ResourcesInput};
use client::Client;
use model::{Action, HttpRoute, InstanceState, Lrp, Presence, Routes, TcpRoute, Timestamp};

use crate::cli::{CreateArgs, LsArgs, RmArgs, RouteArg, ScaleArgs, StatusArgs, UpdateArgs};
use crate::output::{self, ago, print_json, render, shell_word, table};

/// The port an LRP gets when it has routes but names no port, as Cloud Foundry does.
pub const DEFAULT_PORT: u16 = 8080;

pub async fn create(client: &Client, args: &CreateArgs) -> Result<()> {
    let request = lrp_create(args)?;
    let lrp = client
        .create_lrp(&request)
        .await
        .with_context(|| format!("create LRP {}", args.name))?;
    if args.read.json {
        return print_json(&lrp);
    }
    println!(
        "Created {}: {} desired, generation {}.",
        lrp.spec.name,
        instances(lrp.spec.instances),
        lrp.generation
    );
    let pulls = lrp.spec.rootfs.provider() == "docker";
    if pulls && lrp.spec.instances > 0 && std::io::stdout().is_terminal() {
        watch_start(client, lrp.spec.name.as_str(), lrp.spec.instances).await;
    }
    println!("See its instances with `corral status {}`.", lrp.spec.name);
    Ok(())
}

/// How long `create` shows an image's pull and the start before it leaves them be.
const WATCH_START: Duration = Duration::from_secs(600);

/// Shows, on one redrawn line, the image pull of the new LRP's instances and then how
/// many run, until all run, one crashes, or [`WATCH_START`] passes.
async fn watch_start(client: &Client, name: &str, desired: u32) {
    use std::io::Write as _;
    println!("Starting (Ctrl-C stops watching; the LRP stays):");
    let deadline = tokio::time::Instant::now() + WATCH_START;
    let mut line = String::new();
    let outcome = loop {
        if tokio::time::Instant::now() > deadline {
            break "still starting; see `corral status`".to_owned();
        }
        let Ok(status) = client.lrp_status(name).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if let Some(crashed) = status.instances.iter().find(|i| i.crash_count > 0) {
            break format!(
                "instance {} crashed: {}",
                crashed.index,
                crashed.crash_reason.as_deref().unwrap_or("no reason given")
            );
        }
        if status.running >= desired {
            break format!("{} running", instances(status.running));
        }
        let (done, total) = status
            .pulling
            .iter()
            .fold((0, 0), |(d, t), p| (d + p.done_bytes, t + p.total_bytes));
        line = if total > 0 {
            format!(
                "pulling image {} {}",
                progress_bar(done, total, 30),
                pull_progress(done, total)
            )
        } else {
            format!("{} of {} running", status.running, desired)
        };
        print!("\r  {line:<70}");
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !line.is_empty() {
        print!("\r{:<72}\r", "");
    }
    println!("  {outcome}");
}

/// A bar of `width` cells, filled by `done` of `total`.
fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as u128 * width as u128) / total as u128) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

pub async fn ls(client: &Client, args: &LsArgs) -> Result<()> {
    let lrps = client
        .lrps(args.domain.as_deref())
        .await
        .context("list LRPs")?;
    if args.read.json {
        return print_json(&api::List { items: lrps });
    }
    print!("{}", render_lrps(&lrps, args.domain.as_deref()));
    Ok(())
}

pub async fn status(client: &Client, args: &StatusArgs) -> Result<()> {
    let status = client
        .lrp_status_with_usage(&args.name)
        .await
        .with_context(|| format!("get the status of LRP {}", args.name))?;
    if args.read.json {
        return print_json(&status);
    }
    // Knowing whether any cell exists lets the status say why instances wait.
    let cells = client.cells().await.context("list cells")?;
    print!("{}", render_status(&status, cells.len(), output::now()));
    Ok(())
}

pub async fn scale(client: &Client, args: &ScaleArgs) -> Result<()> {
    let patch = LrpPatch {
        instances: Some(i64::from(args.instances)),
        ..LrpPatch::default()
    };
    let lrp = client
        .update_lrp(&args.name, &patch)
        .await
        .with_context(|| format!("scale LRP {}", args.name))?;
    if args.read.json {
        return print_json(&lrp);
    }
    println!(
        "Scaled {} to {}, generation {}.",
        lrp.spec.name,
        instances(lrp.spec.instances),
        lrp.generation
    );
    Ok(())
}

pub async fn update(client: &Client, args: &UpdateArgs) -> Result<()> {
    if args.instances.is_none() && args.annotation.is_none() && args.routes.is_empty() {
        bail!("nothing to update: pass --instances, --annotation or --route");
    }
    // Routes replace the LRP's routes as a whole, so the current ones are needed to keep
    // its TCP routes, and its ports to fill in a route's missing port.
    let routes = if args.routes.is_empty() {
        None
    } else {
        let current = client
            .lrp(&args.name)
            .await
            .with_context(|| format!("read LRP {}", args.name))?;
        Some(updated_routes(&current, &args.routes)?)
    };
    let patch = LrpPatch {
        generation: args.generation,
        instances: args.instances.map(i64::from),
        routes,
        annotation: args.annotation.clone(),
    };
    let lrp = client
        .update_lrp(&args.name, &patch)
        .await
        .with_context(|| format!("update LRP {}", args.name))?;
    if args.read.json {
        return print_json(&lrp);
    }
    println!(
        "Updated {}: {} desired, generation {}.",
        lrp.spec.name,
        instances(lrp.spec.instances),
        lrp.generation
    );
    Ok(())
}

pub async fn rm(client: &Client, args: &RmArgs) -> Result<()> {
    client
        .delete_lrp(&args.name)
        .await
        .with_context(|| format!("remove LRP {}", args.name))?;
    println!("Removed {}.", args.name);
    Ok(())
}

/// The registry login the flags and CORRAL_REGISTRY_PASSWORD give, if any.
pub fn registry_login(
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Option<model::RegistryCredentials>> {
    match (username, password.filter(|p| !p.is_empty())) {
        (Some(username), Some(password)) => Ok(Some(model::RegistryCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })),
        (Some(_), None) => {
            bail!("--registry-username needs the password in CORRAL_REGISTRY_PASSWORD")
        }
        (None, _) => Ok(None),
    }
}

/// The action for the command after `--`; none (the image's own command) when there
/// is no command and the rootfs is an image.
pub fn command_action(command: &[String], rootfs: Option<&str>) -> Result<Option<Action>> {
    match command.split_first() {
        Some((path, rest)) => Ok(Some(Action::run(path, rest))),
        None if rootfs.is_some_and(|r| r.starts_with("docker://") || r.starts_with("oci:")) => {
            Ok(None)
        }
        None => {
            bail!("name the command to run after `--` (only a docker:// image has one of its own)")
        }
    }
}

/// The create request for the flags. Ports follow Diego's habits: a route without a
/// port goes to the first `--port`, or to 8080 when there is none; a route's explicit
/// port is exposed too; and the process learns its first port from `$PORT` unless the
/// user set it.
pub fn lrp_create(args: &CreateArgs) -> Result<LrpCreate> {
    let action = command_action(&args.command, args.rootfs.as_deref())?;
    let default_port = args.ports.first().copied().unwrap_or(DEFAULT_PORT);
    let http: Vec<HttpRoute> = args
        .routes
        .iter()
        .map(|route| HttpRoute {
            hostname: route.host.clone(),
            port: route.port.unwrap_or(default_port),
        })
        .collect();
    let tcp: Vec<TcpRoute> = args
        .tcp_routes
        .iter()
        .map(|&(external_port, port)| TcpRoute {
            external_port,
            container_port: port.unwrap_or(default_port),
        })
        .collect();
    let mut ports = args.ports.clone();
    let routed = http
        .iter()
        .map(|r| r.port)
        .chain(tcp.iter().map(|r| r.container_port));
    for port in routed {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let mut env = args.env.clone();
    if let Some(first) = ports.first()
        && !env.iter().any(|(key, _)| key == "PORT")
    {
        env.push(("PORT".to_owned(), first.to_string()));
    }
    Ok(LrpCreate {
        image_credentials: registry_login(
            args.registry_username.as_deref(),
            args.registry_password.as_ref().map(|p| p.0.as_str()),
        )?,
        name: args.name.clone(),
        domain: args.domain.clone(),
        rootfs: args.rootfs.clone(),
        instances: args.instances.map_or(1, i64::from),
        resources: ResourcesInput {
            memory_mb: args.memory.map(megabytes),
            disk_mb: args.disk.map(megabytes),
            cpu_weight: args.cpu_weight.map(i64::from),
            max_pids: args.max_pids.map(i64::from),
        },
        setup: None,
        action,
        env,
        ports,
        checks: checks(args),
        routes: (!http.is_empty() || !tcp.is_empty()).then_some(Routes { http, tcp }),
        placement_tags: vec![],
        crash_policy: None,
        annotation: args.annotation.clone().unwrap_or_default(),
    })
}

/// The checks the flags ask for; none without any of them.
fn checks(args: &CreateArgs) -> Option<model::Checks> {
    if args.check.is_none() && args.ready.is_none() && args.start_timeout.is_none() {
        return None;
    }
    let check = |kind: &Option<model::CheckKind>| {
        kind.clone().map(|kind| model::Check {
            kind,
            interval_ms: 30_000,
            timeout_ms: 1_000,
        })
    };
    let mut checks = model::Checks {
        liveness: check(&args.check),
        readiness: check(&args.ready),
        ..model::Checks::default()
    };
    if let Some(s) = args.start_timeout {
        checks.start_timeout_ms = s.saturating_mul(1000);
    }
    // Readiness matters for traffic: look often.
    if let Some(ready) = &mut checks.readiness {
        ready.interval_ms = 2_000;
    }
    Some(checks)
}

/// A size in MB as the API takes it. Values past `i64::MAX` are sent saturated, and the
/// server refuses them with its limit.
pub fn megabytes(mb: u64) -> i64 {
    i64::try_from(mb).unwrap_or(i64::MAX)
}

/// The LRP's routes with the HTTP ones replaced by `routes`; ports missing from them are
/// the LRP's first port.
fn updated_routes(lrp: &Lrp, routes: &[RouteArg]) -> Result<Routes> {
    let first_port = lrp.spec.ports.first().copied();
    let http = routes
        .iter()
        .map(|route| match route.port.or(first_port) {
            Some(port) => Ok(HttpRoute {
                hostname: route.host.clone(),
                port,
            }),
            None => bail!(
                "{} exposes no ports, so the route {} needs one: write {}:PORT",
                lrp.spec.name,
                route.host,
                route.host
            ),
        })
        .collect::<Result<_>>()?;
    Ok(Routes {
        http,
        tcp: lrp.spec.routes.tcp.clone(),
    })
}

/// The `ls` table.
pub fn render_lrps(lrps: &[Lrp], domain: Option<&str>) -> String {
    if lrps.is_empty() {
        return match domain {
            Some(domain) => format!("No LRPs in domain {domain}.\n"),
            None => "No LRPs yet. Create one with `corral create web -- sleep 1000`.\n".to_owned(),
        };
    }
    let mut t = table(["NAME", "INSTANCES", "MEMORY", "DISK", "DOMAIN", "ROUTES"]);
    for lrp in lrps {
        let spec = &lrp.spec;
        t.add_row([
            spec.name.to_string(),
            spec.instances.to_string(),
            format!("{} MB", spec.resources.memory_mb),
            format!("{} MB", spec.resources.disk_mb),
            spec.domain.to_string(),
            dash_if_empty(route_list(&spec.routes)),
        ]);
    }
    render(&t)
}

/// The `status` page: a summary of the LRP, a table of its instances, and why they wait
/// when no cell can take them. `cells` is how many cells have joined.
/// A span of time for people: `45s`, `3m20s`, `16m`.
fn duration(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m, s % 60) {
        (0, 0, 0, s) => format!("{s}s"),
        (0, 0, m, 0) => format!("{m}m"),
        (0, 0, m, s) => format!("{m}m{s}s"),
        (0, h, 0, _) => format!("{h}h"),
        (0, h, m, _) => format!("{h}h{m}m"),
        (d, 0, _, _) => format!("{d}d"),
        (d, h, _, _) => format!("{d}d{h}h"),
    }
}

/// Bytes as people read them: `512 B`, `3.4 MB`, `1.2 GB` (powers of 1000, as `ps`-less
/// dashboards and `docker stats` show them).
fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

pub fn render_status(status: &LrpStatus, cells: usize, now: Timestamp) -> String {
    let lrp = &status.lrp;
    let spec = &lrp.spec;
    let mut out = format!(
        "{}: {} desired, {} running, {} claimed, {} unclaimed, {} crashed",
        spec.name,
        instances(spec.instances),
        status.running,
        status.claimed,
        status.unclaimed,
        status.crashed
    );
    for (count, what) in [
        (status.evacuating, "evacuating"),
        (status.suspect, "suspect"),
    ] {
        if count > 0 {
            out.push_str(&format!(", {count} {what}"));
        }
    }
    out.push('\n');
    let mut fields = vec![
        ("domain", spec.domain.to_string()),
        ("generation", lrp.generation.to_string()),
        ("command", describe_action(&spec.action)),
        ("rootfs", spec.rootfs.to_string()),
        (
            "resources",
            format!(
                "{} MB memory, {} MB disk, CPU weight {}",
                spec.resources.memory_mb, spec.resources.disk_mb, spec.resources.cpu_weight
            ),
        ),
    ];
    if !spec.ports.is_empty() {
        let ports: Vec<String> = spec.ports.iter().map(u16::to_string).collect();
        fields.push(("ports", ports.join(", ")));
    }
    if !spec.routes.is_empty() {
        fields.push(("routes", route_list(&spec.routes)));
    }
    if !spec.annotation.is_empty() {
        fields.push(("annotation", spec.annotation.clone()));
    }
    fields.push(("updated", ago(lrp.updated_at, now)));
    for (label, value) in fields {
        out.push_str(&format!("  {label:<11} {value}\n"));
    }
    out.push('\n');
    if status.instances.is_empty() {
        out.push_str("No instances.\n");
        return out;
    }
    let mut t = table([
        "INDEX",
        "STATE",
        "CELL",
        "ADDRESS",
        "CPU",
        "MEMORY",
        "DISK",
        "UPTIME",
        "CRASHES",
        "REASON / PLACEMENT ERROR",
    ]);
    let mut sorted: Vec<_> = status.instances.iter().collect();
    sorted.sort_by_key(|i| (i.index, i.presence));
    for instance in sorted {
        let pulling = status.pulling.iter().find(|p| {
            p.index == instance.index
                && instance.state == InstanceState::Claimed
                && instance
                    .key
                    .as_ref()
                    .is_some_and(|k| k.instance_id == p.instance_id)
        });
        let state = match (instance.presence, pulling) {
            (Presence::Ordinary, Some(pull)) => format!(
                "{} (pulling image {})",
                instance.state,
                pull_progress(pull.done_bytes, pull.total_bytes)
            ),
            (Presence::Ordinary, None) => instance.state.to_string(),
            (presence, _) => format!("{} ({presence})", instance.state),
        };
        let address = match (&instance.address, instance.ports.first()) {
            (Some(address), Some(port)) => format!("{address}:{}", port.host_port),
            (Some(address), None) => address.clone(),
            (None, _) => String::new(),
        };
        let mut reason = instance
            .placement_error
            .as_ref()
            .or(instance.crash_reason.as_ref())
            .cloned()
            .unwrap_or_default();
        if instance.state == InstanceState::Crashed {
            // When the crash policy lets it start again, as Diego's backoff schedule says.
            let next = match instance.restart_at(&spec.crash_policy) {
                Some(at) if at > now => format!("restarts in {}", duration(at.millis_since(now))),
                Some(_) => "restarting".to_owned(),
                None => format!("not restarted after {} crashes", instance.crash_count),
            };
            reason = if reason.is_empty() {
                next
            } else {
                format!("{reason}; {next}")
            };
        }
        let usage = status.usage.iter().find(|u| {
            u.index == instance.index
                && instance
                    .key
                    .as_ref()
                    .is_some_and(|k| k.instance_id == u.instance_id)
        });
        let (cpu, memory, disk) = match usage {
            Some(u) => (
                u.cpu_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%")),
                bytes(u.memory_bytes),
                bytes(u.disk_bytes),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        // Uptime is how long it has been RUNNING; other states show how long they
        // have lasted in the reason column's words, or not at all.
        let uptime = match instance.state {
            InstanceState::Running => duration(now.millis_since(instance.since)),
            _ => "-".to_owned(),
        };
        t.add_row([
            instance.index.to_string(),
            state,
            dash_if_empty(
                instance
                    .key
                    .as_ref()
                    .map(|k| k.cell_id.to_string())
                    .unwrap_or_default(),
            ),
            dash_if_empty(address),
            cpu,
            memory,
            disk,
            uptime,
            instance.crash_count.to_string(),
            dash_if_empty(reason),
        ]);
    }
    out.push_str(&render(&t));
    let unclaimed = status
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Unclaimed)
        .count();
    if cells == 0 && unclaimed > 0 {
        out.push_str(&format!(
            "\nNo cells have joined this cluster yet, so {} stay UNCLAIMED: there is nowhere \
             to run {}.\n",
            if unclaimed == 1 {
                "the instance".to_owned()
            } else {
                format!("these {unclaimed} instances")
            },
            if unclaimed == 1 { "it" } else { "them" }
        ));
    }
    out
}

/// How far a pull got: `12.3/34.8 MB`.
pub fn pull_progress(done: u64, total: u64) -> String {
    format!("{:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
}

/// An action in one line: a run as the command line it is, other kinds by their shape.
pub fn describe_action(action: &Action) -> String {
    match action {
        Action::Run(run) => std::iter::once(&run.path)
            .chain(&run.args)
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" "),
        Action::RunImage(run) if run.args.is_empty() => "the image's command".to_owned(),
        Action::RunImage(run) => format!(
            "the image's entrypoint with {}",
            run.args
                .iter()
                .map(|w| shell_word(w))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Action::Download(download) => format!("download {} to {}", download.from, download.to),
        Action::Serial(actions) => format!("serial: {}", describe_all(actions)),
        Action::Parallel(actions) => format!("parallel: {}", describe_all(actions)),
        Action::Codependent(actions) => format!("codependent: {}", describe_all(actions)),
        Action::Timeout { action, timeout_ms } => {
            format!("{} (timeout {} ms)", describe_action(action), timeout_ms)
        }
        Action::Try(action) => format!("try {}", describe_action(action)),
    }
}

fn describe_all(actions: &[Action]) -> String {
    actions
        .iter()
        .map(describe_action)
        .collect::<Vec<_>>()
        .join("; ")
}

fn route_list(routes: &Routes) -> String {
    let http = routes
        .http
        .iter()
        .map(|r| format!("{} -> {}", r.hostname, r.port));
    let tcp = routes
        .tcp
        .iter()
        .map(|r| format!("tcp:{} -> {}", r.external_port, r.container_port));
    http.chain(tcp).collect::<Vec<_>>().join(", ")
}

fn instances(n: u32) -> String {
    if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
    }
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use model::{Instance, InstanceKey, Name, PortMapping};

    use super::*;
    use crate::cli::{Cli, Command};

    fn create_args(args: &[&str]) -> CreateArgs {
        let cli = Cli::try_parse_from(["corral", "create"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{args:?} parses: {e}"));
        match cli.command {
            Command::Create(create) => create,
            other => panic!("not create: {other:?}"),
        }
    }

    /// The create request for `args`, as the JSON the API receives.
    fn check(args: &[&str], expect: serde_json::Value) {
        let request = lrp_create(&create_args(args)).expect("builds");
        let got = serde_json::to_value(&request).expect("serializes");
        assert_eq!(got, expect, "args {args:?}");
        // What the CLI builds, the API accepts.
        request.into_spec().expect("a valid LRP");
    }

    #[test]
    fn create_requests_from_flags() {
        use serde_json::json;
        check(
            &["web", "--", "sleep", "1000"],
            json!({"name": "web", "instances": 1, "resources": {},
                   "action": {"run": {"path": "sleep", "args": ["1000"]}}}),
        );
        check(
            &[
                "web",
                "-i",
                "3",
                "--memory",
                "256",
                "--disk",
                "512",
                "--rootfs",
                "docker://library/python:3",
                "--env",
                "A=1",
                "-e",
                "B=x=y",
                "--domain",
                "cf",
                "--annotation",
                "team a",
                "--",
                "python3",
                "-m",
                "http.server",
            ],
            json!({"name": "web", "domain": "cf", "rootfs": "docker://library/python:3",
                   "instances": 3, "resources": {"memory_mb": 256, "disk_mb": 512},
                   "action": {"run": {"path": "python3", "args": ["-m", "http.server"]}},
                   "env": {"A": "1", "B": "x=y"}, "annotation": "team a"}),
        );
        // No command: a docker:// image runs its own; anything else needs one.
        check(
            &["web", "--rootfs", "docker://127.0.0.1:5000/web:1"],
            json!({"name": "web", "rootfs": "docker://127.0.0.1:5000/web:1", "instances": 1,
                   "resources": {}}),
        );
        assert_eq!(
            lrp_create(&create_args(&["web"])).unwrap_err().to_string(),
            "name the command to run after `--` (only a docker:// image has one of its own)"
        );
        // A TCP route names the router's port and, like --route, the container port
        // or the first --port.
        check(
            &[
                "echo",
                "-p",
                "9000",
                "--tcp-route",
                "10001",
                "--tcp-route",
                "10002:9001",
                "--",
                "srv",
            ],
            json!({"name": "echo", "instances": 1, "resources": {},
                   "action": {"run": {"path": "srv", "args": []}},
                   "env": {"PORT": "9000"}, "ports": [9000, 9001],
                   "routes": {"tcp": [{"external_port": 10001, "container_port": 9000},
                                      {"external_port": 10002, "container_port": 9001}]}}),
        );
        // A route without any port: 8080, with PORT set for the process.
        check(
            &["web", "--route", "web.test", "--", "srv"],
            json!({"name": "web", "instances": 1, "resources": {},
                   "action": {"run": {"path": "srv", "args": []}},
                   "env": {"PORT": "8080"}, "ports": [8080],
                   "routes": {"http": [{"hostname": "web.test", "port": 8080}]}}),
        );
        // A route without a port takes the first --port; an explicit route port is
        // exposed too; a PORT the user set is kept.
        check(
            &[
                "web",
                "-p",
                "9000",
                "-p",
                "9001",
                "-r",
                "a.test",
                "-r",
                "b.test:9100",
                "-e",
                "PORT=1",
                "--",
                "srv",
            ],
            json!({"name": "web", "instances": 1, "resources": {},
                   "action": {"run": {"path": "srv", "args": []}},
                   "env": {"PORT": "1"}, "ports": [9000, 9001, 9100],
                   "routes": {"http": [{"hostname": "a.test", "port": 9000},
                                       {"hostname": "b.test", "port": 9100}]}}),
        );
        // Ports without routes still tell the process its port.
        check(
            &["web", "--port", "3000", "--", "srv"],
            json!({"name": "web", "instances": 1, "resources": {},
                   "action": {"run": {"path": "srv", "args": []}},
                   "env": {"PORT": "3000"}, "ports": [3000]}),
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        for (args, expect) in [
            (
                &["web", "--port", "0", "--", "x"][..],
                "for '--port <PORT>': port \"0\"",
            ),
            (
                &["web", "--instances=-1", "--", "x"][..],
                "'--instances <N>'",
            ),
            (
                &["web", "--route", "a b", "--", "x"][..],
                "is not a hostname",
            ),
        ] {
            let err = Cli::try_parse_from(["corral", "create"].iter().chain(args))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{args:?}: {err}");
        }
    }

    fn lrp() -> Lrp {
        let mut spec = lrp_create(&create_args(&[
            "web",
            "-i",
            "3",
            "-r",
            "web.test",
            "--",
            "python3",
            "-c",
            "print('hi')",
        ]))
        .expect("builds")
        .into_spec()
        .expect("valid");
        spec.annotation = "team a".into();
        Lrp {
            spec,
            generation: 2,
            created_at: Timestamp(1_000),
            updated_at: Timestamp(50_000),
        }
    }

    fn instance(index: u32, state: InstanceState) -> Instance {
        let name = |s: &str| Name::parse("name", s).expect("valid name");
        let mut instance =
            Instance::unclaimed(name("web"), index, name("default"), Timestamp(40_000));
        instance.state = state;
        if state != InstanceState::Unclaimed {
            instance.key = Some(InstanceKey {
                instance_id: format!("i-{index}"),
                cell_id: name("cell-1"),
            });
            instance.address = Some("10.0.0.7".into());
            instance.ports = vec![PortMapping {
                container_port: 8080,
                host_port: 61001 + index as u16,
            }];
        }
        instance
    }

    #[test]
    fn status_of_unclaimed_instances_without_cells() {
        let mut waiting = instance(2, InstanceState::Unclaimed);
        waiting.placement_error =
            Some("insufficient memory: wants 128 MB, best cell has 64 MB".into());
        let status = LrpStatus::new(
            lrp(),
            vec![
                instance(1, InstanceState::Unclaimed),
                instance(0, InstanceState::Unclaimed),
                waiting,
            ],
        );
        let expect = "\
web: 3 instances desired, 0 running, 0 claimed, 3 unclaimed, 0 crashed
  domain      default
  generation  2
  command     python3 -c 'print('\\''hi'\\'')'
  rootfs      preloaded:host
  resources   128 MB memory, 1024 MB disk, CPU weight 10
  ports       8080
  routes      web.test -> 8080
  annotation  team a
  updated     10s ago

INDEX  STATE      CELL  ADDRESS  CPU  MEMORY  DISK  UPTIME  CRASHES  REASON / PLACEMENT ERROR
0      UNCLAIMED  -     -        -    -       -     -       0        -
1      UNCLAIMED  -     -        -    -       -     -       0        -
2      UNCLAIMED  -     -        -    -       -     -       0        insufficient memory: wants 128 MB, best cell has 64 MB

No cells have joined this cluster yet, so these 3 instances stay UNCLAIMED: there is nowhere to run them.
";
        assert_eq!(render_status(&status, 0, Timestamp(60_000)), expect);
    }

    #[test]
    fn durations_and_sizes_read_short() {
        let cases = [
            (0, "0s"),
            (1, "1s"),
            (59_000, "59s"),
            (60_000, "1m"),
            (61_000, "1m1s"),
            (3_600_000, "1h"),
            (3_900_000, "1h5m"),
            (86_400_000, "1d"),
            (90_000_000, "1d1h"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
        let sizes = [
            (0, "0 B"),
            (999, "999 B"),
            (1_000, "1.0 kB"),
            (23_456_789, "23.5 MB"),
            (1_500_000_000, "1.50 GB"),
        ];
        for (n, want) in sizes {
            assert_eq!(bytes(n), want, "{n} bytes");
        }
    }

    #[test]
    fn status_of_placed_instances() {
        let mut crashed = instance(1, InstanceState::Crashed);
        crashed.crash_count = 4;
        crashed.crash_reason = Some("exited with status 1".into());
        crashed.since = Timestamp(80_000);
        let mut given_up = instance(2, InstanceState::Crashed);
        given_up.crash_count = 200;
        let mut evacuating = instance(0, InstanceState::Running);
        evacuating.presence = Presence::Evacuating;
        if let Some(key) = &mut evacuating.key {
            key.instance_id = "i-0-before".into();
        }
        let mut status = LrpStatus::new(
            lrp(),
            vec![
                instance(0, InstanceState::Running),
                crashed,
                evacuating,
                given_up,
            ],
        );
        status.usage = vec![api::InstanceUsage {
            index: 0,
            instance_id: "i-0".into(),
            cpu_percent: Some(12.345),
            memory_bytes: 23_456_789,
            disk_bytes: 4_096,
        }];
        let rendered = render_status(&status, 2, Timestamp(100_000));
        let table = rendered
            .split("\n\n")
            .nth(1)
            .expect("a table after the summary");
        assert_eq!(
            table,
            "\
INDEX  STATE                 CELL    ADDRESS         CPU    MEMORY   DISK    UPTIME  CRASHES  REASON / PLACEMENT ERROR
0      RUNNING               cell-1  10.0.0.7:61001  12.3%  23.5 MB  4.1 kB  1m      0        -
0      RUNNING (EVACUATING)  cell-1  10.0.0.7:61001  -      -        -       1m      0        -
1      CRASHED               cell-1  10.0.0.7:61002  -      -        -       -       4        exited with status 1; restarts in 40s
2      CRASHED               cell-1  10.0.0.7:61003  -      -        -       -       200      not restarted after 200 crashes
"
        );
        assert!(rendered.starts_with(
            "web: 3 instances desired, 1 running, 0 claimed, 0 unclaimed, 2 crashed, 1 evacuating\n"
        ));
    }

    #[test]
    fn progress_bars_fill_by_bytes() {
        let cases = [
            (0, 100, "[----------]"),
            (55, 100, "[#####-----]"),
            (100, 100, "[##########]"),
            (150, 100, "[##########]"),
            (5, 0, "[----------]"),
        ];
        for (done, total, expect) in cases {
            assert_eq!(progress_bar(done, total, 10), expect, "{done}/{total}");
        }
    }

    #[test]
    fn status_shows_image_pulls() {
        let mut pulling = instance(0, InstanceState::Claimed);
        pulling.address = None;
        let mut status = LrpStatus::new(lrp(), vec![pulling, instance(1, InstanceState::Claimed)]);
        status.pulling = vec![
            api::Pulling {
                index: 0,
                instance_id: "i-0".into(),
                done_bytes: 12_345_678,
                total_bytes: 34_800_000,
            },
            // A pull by a container that no longer holds the instance shows nothing.
            api::Pulling {
                index: 1,
                instance_id: "i-old".into(),
                done_bytes: 1,
                total_bytes: 2,
            },
        ];
        let rendered = render_status(&status, 2, Timestamp(100_000));
        let rows: Vec<&str> = rendered
            .lines()
            .filter(|l| l.starts_with(['0', '1']))
            .collect();
        assert!(
            rows[0].contains("CLAIMED (pulling image 12.3/34.8 MB)"),
            "{rendered}"
        );
        assert!(!rows[1].contains("pulling"), "{rendered}");
    }

    #[test]
    fn ls_table() {
        assert_eq!(
            render_lrps(&[lrp()], None),
            "\
NAME  INSTANCES  MEMORY  DISK     DOMAIN   ROUTES
web   3          128 MB  1024 MB  default  web.test -> 8080
"
        );
        assert_eq!(render_lrps(&[], Some("cf")), "No LRPs in domain cf.\n");
    }

    #[test]
    fn update_routes_keep_tcp_and_default_to_the_first_port() {
        let mut lrp = lrp();
        lrp.spec.routes.tcp.push(model::TcpRoute {
            external_port: 6000,
            container_port: 8080,
        });
        let routes = updated_routes(
            &lrp,
            &[RouteArg {
                host: "new.test".into(),
                port: None,
            }],
        )
        .expect("routes");
        assert_eq!(
            routes.http,
            vec![HttpRoute {
                hostname: "new.test".into(),
                port: 8080
            }]
        );
        assert_eq!(routes.tcp.len(), 1);

        lrp.spec.ports.clear();
        let err = updated_routes(
            &lrp,
            &[RouteArg {
                host: "x.test".into(),
                port: None,
            }],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "web exposes no ports, so the route x.test needs one: write x.test:PORT"
        );
    }
}
