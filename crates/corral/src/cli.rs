//! The command line: clap types for every subcommand, and the parsers of values that
//! have a shape of their own (`--env KEY=VALUE`, `--route HOST[:PORT]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The address `corral server` and `corral dev` listen on, and the CLI talks to, unless
/// told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Corral: run one-off tasks and long-running processes on a cluster of cells.",
    long_about = None,
    after_help = "Start with `corral dev`, then `corral create web --instances 3 -- sleep 1000`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API is and how to authenticate. Each is taken from the flag, else the
/// environment variable, else the config file.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// URL of the Corral API [env: CORRAL_API] [default: from the config file, else
    /// http://127.0.0.1:7070]
    #[arg(long, global = true, value_name = "URL")]
    pub api: Option<String>,
    /// API token [env: CORRAL_TOKEN] [default: the config file's token_file]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CLI config file [env: CORRAL_CONFIG] [default: $CORRAL_HOME/config.json, with
    /// CORRAL_HOME defaulting to ~/.corral]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: the API server on SQLite or PostgreSQL
    Server(ServerArgs),
    /// Run Corral on this machine for development: the server on SQLite in
    /// $CORRAL_HOME/dev, a cell and a router
    Dev(DevArgs),
    /// Create an LRP: COMMAND kept running in N instances
    Create(CreateArgs),
    /// List LRPs
    Ls(LsArgs),
    /// Show an LRP and its instances
    Status(StatusArgs),
    /// Set how many instances of an LRP should run
    Scale(ScaleArgs),
    /// Change an LRP's instances, routes or annotation
    Update(UpdateArgs),
    /// Remove an LRP and its instances
    Rm(RmArgs),
    /// Print an LRP's log: its instances' output and what happened to them (placed,
    /// running, crashed, scaled): the newest lines, then with -f each new one
    Logs(LrpLogsArgs),
    /// Run a command in an instance's container: `corral exec web/0 -- ps`, or a shell
    /// with `corral exec -it web/0 sh`
    Exec(ExecArgs),
    /// Submit, list, inspect, cancel and remove one-off tasks
    #[command(subcommand)]
    Task(TaskCommand),
    /// List the cells that have joined the cluster
    Cells(ReadArgs),
    /// List the domains and their freshness
    Domains(ReadArgs),
    /// Draw each cell with its instances as coloured marks, redrawn every second
    Visualize(VisualizeArgs),
    /// Print the event stream: every change to LRPs, instances, tasks, domains and cells
    Events(EventsArgs),
    /// Run a cell: join the cluster and run its work in containers (`corral cell drain
    /// ID` evacuates one)
    Cell(crate::cell_cmd::CellArgs),
    /// The cell's runtime helper, started by `corral cell` (not for direct use)
    #[command(hide = true)]
    CellHelper(crate::cell_cmd::HelperArgs),
    /// Run a fleet of simulated cells that join the cluster and "run" its work
    SimCells(crate::sim_cells::SimCellsArgs),
    /// Run the router: HTTP by hostname and TCP by port to the instances of LRPs
    Router(crate::router_cmd::RouterArgs),
    /// Run a benchmark and record its figures in BENCHMARKS.md
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Print the version of this binary
    Version,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The store: sqlite:PATH or postgres://USER@HOST/DB
    #[arg(long, value_name = "URL")]
    pub db: String,
    /// Address the API listens on
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the server keeps its files (the API token) [default: the SQLite file's
    /// directory, else $CORRAL_HOME/server]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub timings: TimingArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address the API listens on (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The dev cell's container backend
    #[arg(long, value_enum, default_value_t = crate::cell_cmd::BackendChoice::Auto)]
    pub backend: crate::cell_cmd::BackendChoice,
    /// Run the server alone, without the dev cell (cells join with `corral cell`)
    #[arg(long)]
    pub no_cell: bool,
    /// Address the dev router serves HTTP on (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = crate::router_cmd::DEFAULT_HTTP)]
    pub router: SocketAddr,
    /// External ports of TCP routes the dev router listens on, FIRST-LAST
    #[arg(long, value_name = "FIRST-LAST", default_value = "10000-10999", value_parser = crate::router_cmd::parse_port_range)]
    pub router_tcp_ports: (u16, u16),
    /// Run without the router
    #[arg(long, conflicts_with_all = ["router", "router_tcp_ports"])]
    pub no_router: bool,
    #[command(flatten)]
    pub timings: TimingArgs,
}

/// How fast the control plane notices things: cell heartbeats, how long a cell's
/// presence outlives its last heartbeat, and the convergence timer.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// How often cells send heartbeats, in ms
    #[arg(long, value_name = "MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,
    /// How long a cell's presence lives without a heartbeat, in ms (a dead cell is
    /// noticed within this)
    #[arg(long, value_name = "MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub presence_ttl_ms: u64,
    /// How often the leader converges even when nothing expired, in ms
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub convergence_ms: u64,
}

impl TimingArgs {
    /// The server's timings; a presence that would expire before the next heartbeat
    /// could arrive is refused.
    pub fn timings(&self) -> anyhow::Result<server::Timings> {
        if self.presence_ttl_ms <= self.heartbeat_ms {
            anyhow::bail!(
                "--presence-ttl-ms ({}) must be longer than --heartbeat-ms ({}), or every cell \
                 would expire between two heartbeats",
                self.presence_ttl_ms,
                self.heartbeat_ms
            );
        }
        Ok(server::Timings {
            heartbeat_interval_ms: self.heartbeat_ms,
            presence_ttl_ms: self.presence_ttl_ms,
            convergence_interval_ms: self.convergence_ms,
            ..server::Timings::default()
        })
    }
}

/// `--json` for verbs that read: the API's JSON instead of a table.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ReadArgs {
    /// Print the API's JSON, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Name of the LRP: letters, digits, '_' and '-'
    pub name: String,
    /// How many instances to keep running [default: 1]
    #[arg(long, short = 'i', value_name = "N")]
    pub instances: Option<u32>,
    /// Memory of each instance, in MB [default: 128]
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// Disk of each instance, in MB [default: 1024]
    #[arg(long, value_name = "MB")]
    pub disk: Option<u64>,
    /// Filesystem of the containers: preloaded:STACK, docker://REPO:TAG or oci:PATH
    /// [default: preloaded:host]
    #[arg(long, value_name = "URL")]
    pub rootfs: Option<String>,
    /// Username for a docker:// registry that wants a login; the password comes from
    /// CORRAL_REGISTRY_PASSWORD (never from the command line, where `ps` would show it)
    #[arg(long, value_name = "USER")]
    pub registry_username: Option<String>,
    #[arg(skip = std::env::var("CORRAL_REGISTRY_PASSWORD").ok().map(Secret))]
    pub registry_password: Option<Secret>,
    /// An environment variable of the process (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// An HTTP route to the instances (repeatable); without PORT, the first --port, or
    /// 8080 (with PORT=8080 in the environment) when there is none
    #[arg(long = "route", short = 'r', value_name = "HOST[:PORT]", value_parser = parse_route)]
    pub routes: Vec<RouteArg>,
    /// A container port the process listens on (repeatable); the first is $PORT
    #[arg(long = "port", short = 'p', value_name = "PORT", value_parser = parse_port)]
    pub ports: Vec<u16>,
    /// A TCP route (repeatable): connections to EXTERNAL on a router (within its
    /// --tcp-ports) reach the instances' container PORT; without PORT, as --route
    #[arg(long = "tcp-route", value_name = "EXTERNAL[:PORT]", value_parser = parse_tcp_route)]
    pub tcp_routes: Vec<(u16, Option<u16>)>,
    /// Domain of the LRP [default: default]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Free text kept with the LRP
    #[arg(long, value_name = "TEXT")]
    pub annotation: Option<String>,
    /// Liveness check: tcp:PORT or http:PORT[/PATH]; it must pass within the start
    /// timeout, then every 30 s, or the instance crashes
    #[arg(long, value_name = "CHECK", value_parser = parse_check)]
    pub check: Option<model::CheckKind>,
    /// Readiness check (same forms): while it fails the instance gets no traffic
    #[arg(long, value_name = "CHECK", value_parser = parse_check)]
    pub ready: Option<model::CheckKind>,
    /// How long an instance may take to pass its liveness check, in seconds [default: 60]
    #[arg(long, value_name = "S")]
    pub start_timeout: Option<u64>,
    /// Relative CPU share of each instance, 1-100 [default: 10]
    #[arg(long, value_name = "N")]
    pub cpu_weight: Option<u8>,
    /// Most processes each instance may hold [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_pids: Option<u32>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// The command to run, after `--`; without one, a docker:// image's own
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only LRPs of this domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Name of the LRP
    pub name: String,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct VisualizeArgs {
    /// Draw once, without colour, and exit (for scripts and pipes)
    #[arg(long)]
    pub once: bool,
    /// How often to redraw, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct LrpLogsArgs {
    /// Name of the LRP
    pub name: String,
    #[command(flatten)]
    pub logs: LogsArgs,
}

#[derive(Debug, Args)]
pub struct TaskLogsArgs {
    /// Id of the task
    pub id: String,
    #[command(flatten)]
    pub logs: LogsArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines until interrupted (or the LRP is deleted, the task done)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the newest lines to print first [default: 100]
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
    /// Print one JSON log entry per line, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The instance: the LRP's name and the instance's index, such as web/0
    #[arg(value_name = "NAME/INDEX")]
    pub target: String,
    #[command(flatten)]
    pub run: ExecRun,
}

#[derive(Debug, Args)]
pub struct TaskExecArgs {
    /// Id of the task (it must be RUNNING)
    pub id: String,
    #[command(flatten)]
    pub run: ExecRun,
}

/// What `corral exec` and `corral task exec` run, and how.
#[derive(Debug, Args)]
pub struct ExecRun {
    /// Pass stdin to the command
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command on a terminal (with -i, for a shell: `-it`)
    #[arg(short, long)]
    pub tty: bool,
    /// Add KEY=VALUE to the command's environment (repeatable)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The command and its arguments (after `--` when they start with `-`)
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Name of the LRP
    pub name: String,
    /// How many instances to keep running
    pub instances: u32,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Name of the LRP
    pub name: String,
    /// How many instances to keep running
    #[arg(long, short = 'i', value_name = "N")]
    pub instances: Option<u32>,
    /// Free text kept with the LRP (replaces the old one)
    #[arg(long, value_name = "TEXT")]
    pub annotation: Option<String>,
    /// The HTTP routes (repeatable; replaces the old ones); without PORT, the LRP's
    /// first port
    #[arg(long = "route", short = 'r', value_name = "HOST[:PORT]", value_parser = parse_route)]
    pub routes: Vec<RouteArg>,
    /// Apply only if the LRP is still at this generation (see `corral status`)
    #[arg(long, value_name = "G")]
    pub generation: Option<u64>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Name of the LRP
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task: COMMAND run once on some cell
    Submit(TaskSubmitArgs),
    /// List tasks
    Ls(TaskLsArgs),
    /// Show a task
    Get(TaskIdArgs),
    /// Cancel a pending or running task
    Cancel(TaskIdArgs),
    /// Remove a completed task
    Rm(TaskIdArgs),
    /// Print a task's log (with -f, until it completes)
    Logs(TaskLogsArgs),
    /// Run a command in a running task's container, as `corral exec` does in an
    /// instance's
    Exec(TaskExecArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TaskSubmitArgs {
    /// Id of the task [default: one the server makes up]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Filesystem of the container [default: preloaded:host]
    #[arg(long, value_name = "URL")]
    pub rootfs: Option<String>,
    /// Username for a docker:// registry that wants a login; the password comes from
    /// CORRAL_REGISTRY_PASSWORD (never from the command line, where `ps` would show it)
    #[arg(long, value_name = "USER")]
    pub registry_username: Option<String>,
    #[arg(skip = std::env::var("CORRAL_REGISTRY_PASSWORD").ok().map(Secret))]
    pub registry_password: Option<Secret>,
    /// Memory of the container, in MB [default: 128]
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// Disk of the container, in MB [default: 1024]
    #[arg(long, value_name = "MB")]
    pub disk: Option<u64>,
    /// A file in the container whose contents become the task's result
    #[arg(long, value_name = "PATH")]
    pub result_file: Option<String>,
    /// An environment variable of the process (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Domain of the task [default: default]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Free text kept with the task
    #[arg(long, value_name = "TEXT")]
    pub annotation: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// The command to run, after `--`; without one, a docker:// image's own
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskLsArgs {
    /// Only tasks in this state
    #[arg(long, value_enum, value_name = "STATE")]
    pub state: Option<TaskStateArg>,
    /// Only tasks of this domain
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Only tasks on this cell
    #[arg(long, value_name = "CELL")]
    pub cell: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct TaskIdArgs {
    /// Id of the task
    pub id: String,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskStateArg {
    Pending,
    Running,
    Completed,
    Resolving,
}

impl From<TaskStateArg> for model::TaskState {
    fn from(state: TaskStateArg) -> model::TaskState {
        match state {
            TaskStateArg::Pending => model::TaskState::Pending,
            TaskStateArg::Running => model::TaskState::Running,
            TaskStateArg::Completed => model::TaskState::Completed,
            TaskStateArg::Resolving => model::TaskState::Resolving,
        }
    }
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events after this sequence number [default: only new events with -f, all
    /// kept events without]
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// Only these topics, comma-separated
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TOPIC,...")]
    pub topics: Vec<Topic>,
    /// Keep printing new events until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print one JSON event message per line, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topic {
    Lrp,
    Instance,
    Task,
    Domain,
    Cell,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Lrp => "lrp",
            Topic::Instance => "instance",
            Topic::Task => "task",
            Topic::Domain => "domain",
            Topic::Cell => "cell",
        }
    }
}

/// An HTTP route as given on the command line; the port is filled in later from the
/// LRP's ports when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteArg {
    pub host: String,
    pub port: Option<u16>,
}

/// A value that `Debug` never shows (a registry password).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses `KEY=VALUE`. The value may itself contain `=` and may be empty.
pub fn parse_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some(("", _)) => Err("expected KEY=VALUE, but the KEY is empty".to_owned()),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!(
            "expected KEY=VALUE, but there is no '=' (to pass an empty value, write {arg}=)"
        )),
    }
}

/// Parses `HOST[:PORT]`: a DNS name (optionally `*.` for every subdomain) and a
/// container port.
pub fn parse_route(arg: &str) -> Result<RouteArg, String> {
    if arg.contains("://") || arg.contains('/') {
        return Err(format!(
            "expected HOST[:PORT], a hostname such as web.example.test:8080, not a URL ({arg:?})"
        ));
    }
    let (host, port) = match arg.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (arg, None),
    };
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.is_empty() {
        return Err("expected HOST[:PORT], but the HOST is empty".to_owned());
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !bare.split('.').all(valid_label) {
        return Err(format!(
            "{host:?} is not a hostname: use labels of letters, digits and '-' separated by dots"
        ));
    }
    Ok(RouteArg {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Parses a container port: 1 to 65535.
/// `tcp:PORT` or `http:PORT[/PATH]`.
pub fn parse_check(arg: &str) -> Result<model::CheckKind, String> {
    let bad = || format!("check {arg:?} is not tcp:PORT or http:PORT[/PATH]");
    let (kind, rest) = arg.split_once(':').ok_or_else(bad)?;
    match kind {
        "tcp" => Ok(model::CheckKind::Tcp {
            port: parse_port(rest)?,
        }),
        "http" => {
            let (port, path) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_owned()),
                None => (rest, "/".to_owned()),
            };
            Ok(model::CheckKind::Http {
                port: parse_port(port)?,
                path,
            })
        }
        _ => Err(bad()),
    }
}

/// Parses `EXTERNAL[:PORT]`: the router's port, and the container port.
pub fn parse_tcp_route(arg: &str) -> Result<(u16, Option<u16>), String> {
    match arg.split_once(':') {
        Some((external, port)) => Ok((parse_port(external)?, Some(parse_port(port)?))),
        None => Ok((parse_port(arg)?, None)),
    }
}

pub fn parse_port(arg: &str) -> Result<u16, String> {
    match arg.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {arg:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_routes() {
        assert_eq!(parse_tcp_route("10001"), Ok((10001, None)));
        assert_eq!(parse_tcp_route("10001:9000"), Ok((10001, Some(9000))));
        assert!(parse_tcp_route("0:80").is_err());
        assert!(parse_tcp_route("10001:").is_err());
        assert!(parse_tcp_route("web:80").is_err());
    }

    #[test]
    fn env_values() {
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let cases: &[Case] = &[
            ("A=1", Ok(("A", "1"))),
            ("A=", Ok(("A", ""))),
            ("URL=http://x/?a=b", Ok(("URL", "http://x/?a=b"))),
            ("=1", Err("expected KEY=VALUE, but the KEY is empty")),
            (
                "A",
                Err("expected KEY=VALUE, but there is no '=' (to pass an empty value, write A=)"),
            ),
        ];
        for (input, expect) in cases {
            let got = parse_env(input);
            let expect = expect
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .map_err(str::to_owned);
            assert_eq!(got, expect, "input {input:?}");
        }
    }

    #[test]
    fn routes() {
        let route = |host: &str, port| {
            Ok(RouteArg {
                host: host.to_owned(),
                port,
            })
        };
        let cases: &[(&str, Result<RouteArg, &str>)] = &[
            ("web.example.test", route("web.example.test", None)),
            (
                "web.example.test:9000",
                route("web.example.test", Some(9000)),
            ),
            ("*.apps.test:80", route("*.apps.test", Some(80))),
            ("Web.Test", route("web.test", None)),
            ("web:0", Err("port \"0\" is not a number from 1 to 65535")),
            (
                "web:http",
                Err("port \"http\" is not a number from 1 to 65535"),
            ),
            (
                "web:70000",
                Err("port \"70000\" is not a number from 1 to 65535"),
            ),
            (":8080", Err("expected HOST[:PORT], but the HOST is empty")),
            ("*.", Err("expected HOST[:PORT], but the HOST is empty")),
            (
                "http://web.test",
                Err(
                    "expected HOST[:PORT], a hostname such as web.example.test:8080, not a URL (\"http://web.test\")",
                ),
            ),
            (
                "web_app.test",
                Err(
                    "\"web_app.test\" is not a hostname: use labels of letters, digits and '-' separated by dots",
                ),
            ),
            (
                "a..b",
                Err(
                    "\"a..b\" is not a hostname: use labels of letters, digits and '-' separated by dots",
                ),
            ),
        ];
        for (input, expect) in cases {
            let expect = expect.clone().map_err(str::to_owned);
            assert_eq!(parse_route(input), expect, "input {input:?}");
        }
    }

    #[test]
    fn clap_reports_bad_values_with_the_flag() {
        let err = Cli::try_parse_from(["corral", "create", "web", "--env", "NOPE", "--", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid value 'NOPE' for '--env <KEY=VALUE>'")
                && err.contains("there is no '='"),
            "{err}"
        );
        let err = Cli::try_parse_from(["corral", "create", "web", "--", ""]);
        assert!(err.is_ok(), "an empty command is the server's to refuse");
        // No command: an image's own, which the server decides (see lrp.rs).
        assert!(Cli::try_parse_from(["corral", "create", "web"]).is_ok());
    }

    #[test]
    fn the_command_after_the_separator_keeps_its_flags() {
        let cli = Cli::try_parse_from([
            "corral", "create", "web", "-i", "3", "--", "sleep", "--json", "1000",
        ])
        .expect("parses");
        let Command::Create(create) = cli.command else {
            panic!("not create: {:?}", cli.command)
        };
        assert_eq!(create.command, ["sleep", "--json", "1000"]);
        assert_eq!(create.instances, Some(3));
        assert!(!create.read.json);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod timing_tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn timings_come_from_flags_and_are_checked() {
        let cli = Cli::try_parse_from([
            "corral",
            "dev",
            "--heartbeat-ms",
            "200",
            "--presence-ttl-ms",
            "700",
        ])
        .expect("parses");
        let Command::Dev(args) = cli.command else {
            panic!("dev")
        };
        let timings = args.timings.timings().expect("valid");
        assert_eq!(
            (
                timings.heartbeat_interval_ms,
                timings.presence_ttl_ms,
                timings.convergence_interval_ms
            ),
            (200, 700, 30_000)
        );

        let cli =
            Cli::try_parse_from(["corral", "dev", "--presence-ttl-ms", "1000"]).expect("parses");
        let Command::Dev(args) = cli.command else {
            panic!("dev")
        };
        let error = args
            .timings
            .timings()
            .expect_err("a TTL no longer than the heartbeat");
        assert!(
            error
                .to_string()
                .contains("must be longer than --heartbeat-ms (1000)"),
            "{error}"
        );

        assert!(Cli::try_parse_from(["corral", "dev", "--heartbeat-ms", "0"]).is_err());
    }
}
