//! `corral server` and `corral dev`: the control plane in this process (with `dev`, a
//! cell and a router too), until SIGINT or SIGTERM stops it gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use client::Client;
use router::{Balance, Router, RouterOptions};
use server::{Server, ServerOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cell_cmd::{self, BackendChoice, CellRunArgs};
use crate::cli::{DevArgs, Global, ServerArgs};
use crate::config::{self, ConfigFile, Env};

pub async fn server(args: &ServerArgs, env: &dyn Env) -> Result<()> {
    let db_url = args.db.trim();
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir(db_url, env)?,
    };
    // Before the server starts, so that a signal sent as soon as it is up is handled.
    let mut signals = Signals::new()?;
    let server = server::start(ServerOptions {
        listen: args.listen,
        db_url: db_url.to_owned(),
        data_dir,
        timings: args.timings.timings()?,
    })
    .await
    .with_context(|| format!("start the server on {}", args.listen))?;
    println!("Corral server listening on {}", api_url(server.addr()));
    println!("API token in {}", server.token_path().display());
    run_until_signal(server, &mut signals).await
}

pub async fn dev(args: &DevArgs, env: &dyn Env) -> Result<()> {
    let home = config::corral_home(env)?;
    let data_dir = home.join("dev");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the dev data directory {}", data_dir.display()))?;
    let database = data_dir.join("corral.db");
    let mut signals = Signals::new()?;
    let server = server::start(ServerOptions {
        listen: args.listen,
        db_url: format!("sqlite:{}", database.display()),
        data_dir: data_dir.clone(),
        timings: args.timings.timings()?,
    })
    .await
    .with_context(|| format!("start the dev server on {}", args.listen))?;

    // Written only now that the address is bound, so that with port 0 the config names
    // the real port.
    let api = api_url(server.addr());
    let config_path = home.join("config.json");
    config::write(
        &config_path,
        &ConfigFile {
            api: Some(api.clone()),
            token_file: Some(server.token_path().to_owned()),
            token: None,
        },
    )?;
    let token = std::fs::read_to_string(server.token_path())
        .with_context(|| format!("read the API token {}", server.token_path().display()))?;
    let router = if args.no_router {
        None
    } else {
        let (first, last) = args.router_tcp_ports;
        let options = RouterOptions {
            http: args.router,
            tcp_ports: Some(first..=last),
            balance: Balance::RoundRobin,
        };
        let client = Client::new(&api, Some(token.trim().to_owned()))?;
        let router = Router::start(client, options).await.with_context(|| {
            format!(
                "start the dev router on {} (pass --router ADDR for another address, or --no-router)",
                args.router
            )
        })?;
        Some(router)
    };
    let router_line = match &router {
        Some(router) => format!(
            "http://{} (by Host; TCP routes on ports {}-{})",
            router.http_addr(),
            args.router_tcp_ports.0,
            args.router_tcp_ports.1
        ),
        None => "none (--no-router)".to_owned(),
    };
    if args.no_cell {
        print!(
            "{}",
            banner(
                &api,
                server.token_path(),
                &database,
                &config_path,
                "none (--no-cell)",
                &router_line,
            )
        );
        let result = run_until_signal(server, &mut signals).await;
        drop(router);
        return result;
    }
    let cell_args = CellRunArgs {
        id: Some("dev-cell".to_owned()),
        backend: args.backend,
        state_dir: Some(data_dir.join("cell")),
        ephemeral: true,
        ..CellRunArgs::defaults()
    };
    let cell = cell_cmd::prepare(
        &cell_args,
        &Global::default(),
        env,
        Some((api.clone(), Some(token.trim().to_owned()))),
    )
    .await
    .context("start the dev cell")?;
    let backend = match (cell.backend, &cell.fallback) {
        (BackendChoice::Linux, _) => {
            "linux (isolated containers: namespaces, cgroups, overlayfs)".to_owned()
        }
        (_, Some(why)) => format!("process (no isolation: {why})"),
        _ => "process (no isolation)".to_owned(),
    };
    let agent = cell.agent.clone();
    let runner = tokio::spawn(async move { agent.run(std::future::pending()).await });
    print!(
        "{}",
        banner(
            &api,
            server.token_path(),
            &database,
            &config_path,
            &backend,
            &router_line
        )
    );
    let which = signals.recv().await;
    eprintln!("Received {which}: stopping.");
    drop(router);
    cell.agent.stopping();
    runner.abort();
    // Development: nothing to hand over to, so the containers simply go.
    if let Err(e) = cell.runtime.shutdown().await {
        eprintln!("Could not stop the cell's containers: {e:#}");
    }
    server.shutdown().await.context("shut the server down")?;
    eprintln!("Stopped.");
    Ok(())
}

/// What `corral dev` says when it is up: where everything is, why instances will wait,
/// and what to type next.
fn banner(
    api: &str,
    token: &Path,
    database: &Path,
    config: &Path,
    backend: &str,
    router: &str,
) -> String {
    let what = if backend.starts_with("none") {
        "the API server on SQLite, without a cell (start one with `corral cell`)"
    } else {
        "the API server on SQLite and one cell"
    };
    format!(
        "\
Corral dev is running: {what}.

  API       {api}
  token     {token}
  database  {database}
  config    {config} (the CLI reads the API and token from here)
  cell      dev-cell, {backend}
  router    {router}

Next, in another terminal:
  corral create web -i 3 --route web.localhost -- sh -c 'exec python3 -m http.server $PORT'
  corral status web     (ADDRESS is each instance's host port: curl it)
  {through}
  corral logs web -f    (its output and what happens to it; corral exec -it web/0 sh to look inside)

Stop with Ctrl-C.
",
        token = token.display(),
        database = database.display(),
        config = config.display(),
        through = match router
            .strip_prefix("http://")
            .and_then(|r| r.split(' ').next())
        {
            Some(addr) => format!(
                "curl -H 'Host: web.localhost' {addr}     (through the router, each instance in turn)"
            ),
            None => "(no router: --no-router)".to_owned(),
        },
    )
}

/// The URL clients use to reach `addr`. A server bound to every interface is reached
/// on loopback from this machine.
fn api_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

/// Without `--data-dir`: the SQLite file's directory, so that a server's files stay
/// together, else `$CORRAL_HOME/server`.
fn default_data_dir(db_url: &str, env: &dyn Env) -> Result<PathBuf> {
    if let Some(rest) = db_url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        if !path.is_empty() && !path.starts_with(":memory:") {
            let parent = Path::new(path).parent().unwrap_or(Path::new(""));
            return Ok(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_owned()
            });
        }
    } else if !(db_url.starts_with("postgres://") || db_url.starts_with("postgresql://")) {
        bail!("--db must be sqlite:PATH or postgres://USER@HOST/DB, not {db_url:?}");
    }
    Ok(config::corral_home(env)?.join("server"))
}

/// SIGINT and SIGTERM, listened for from creation on.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(crate) fn new() -> Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
        })
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

async fn run_until_signal(server: Server, signals: &mut Signals) -> Result<()> {
    let which = signals.recv().await;
    eprintln!("Received {which}: stopping.");
    server.shutdown().await.context("shut the server down")?;
    eprintln!("Stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::MapEnv;

    #[test]
    fn data_dirs() {
        let env = MapEnv(HashMap::from([(
            "CORRAL_HOME",
            "/home/u/.corral".to_owned(),
        )]));
        let cases = [
            ("sqlite:/var/lib/corral/corral.db", Ok("/var/lib/corral")),
            (
                "sqlite:///var/lib/corral/c.db?mode=rwc",
                Ok("/var/lib/corral"),
            ),
            ("sqlite:corral.db", Ok(".")),
            ("sqlite::memory:", Ok("/home/u/.corral/server")),
            ("postgres://u@h/corral", Ok("/home/u/.corral/server")),
            (
                "mysql://h/db",
                Err("--db must be sqlite:PATH or postgres://USER@HOST/DB, not \"mysql://h/db\""),
            ),
        ];
        for (url, expect) in cases {
            let got = default_data_dir(url, &env).map_err(|e| e.to_string());
            assert_eq!(
                got,
                expect.map(PathBuf::from).map_err(str::to_owned),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_of_wildcard_addresses_are_loopback() {
        let parse = |s: &str| s.parse::<SocketAddr>().expect("an address");
        assert_eq!(api_url(parse("0.0.0.0:7070")), "http://127.0.0.1:7070");
        assert_eq!(api_url(parse("[::]:7070")), "http://[::1]:7070");
        assert_eq!(api_url(parse("10.1.2.3:80")), "http://10.1.2.3:80");
    }
}
