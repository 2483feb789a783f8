//! `corral`: the server, `corral dev`, and the CLI verbs that talk to the API.

#![forbid(unsafe_code)]

mod bench;
mod cell_cmd;
mod cli;
mod cluster;
mod config;
mod dev;
mod events;
mod exec;
mod logs;
mod lrp;
mod output;
mod router_cmd;
mod sim_cells;
mod task;
mod visualize;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use client::Client;

use crate::cli::{Cli, Command};
use crate::config::{Env, ProcessEnv};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        // The runtime helper forks (libcontainer): it must run before any thread or
        // async runtime exists.
        Command::CellHelper(args) => {
            // libcontainer's cgroup code warns about absent controllers on every create.
            init_logging("info,libcgroups=error,libcontainer=error");
            cell_cmd::helper(args)
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(cli, &ProcessEnv))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The remote command's exit code is `corral exec`'s.
        Err(error) if error.is::<exec::RemoteExit>() => error
            .downcast_ref::<exec::RemoteExit>()
            .map_or(ExitCode::FAILURE, exec::RemoteExit::exit_code),
        Err(error) => {
            eprint!("{}", output::error_report(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, env: &dyn Env) -> Result<()> {
    match &cli.command {
        Command::Server(args) => {
            init_logging("info");
            return dev::server(args, env).await;
        }
        Command::Dev(args) => {
            init_logging("info");
            return dev::dev(args, env).await;
        }
        Command::SimCells(args) => {
            init_logging("info");
            return sim_cells::run(&cli.global, args, env).await;
        }
        Command::Router(args) => {
            init_logging("info");
            return router_cmd::run(args, &cli.global, env).await;
        }
        Command::Cell(args) => {
            if args.command.is_none() {
                init_logging("info");
            }
            return cell_cmd::run(args, &cli.global, env).await;
        }
        Command::Bench(command) => {
            // The server under test logs (to its own file); the benchmark prints figures.
            init_logging(match command {
                bench::BenchCommand::Serve(_) => "info",
                _ => "warn",
            });
            return bench::run(command).await;
        }
        Command::Version => {
            println!("corral {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    let endpoint = config::resolve(&cli.global, env)?;
    let client = Client::new(&endpoint.api, endpoint.token)?;
    match &cli.command {
        Command::Create(args) => lrp::create(&client, args).await,
        Command::Ls(args) => lrp::ls(&client, args).await,
        Command::Status(args) => lrp::status(&client, args).await,
        Command::Scale(args) => lrp::scale(&client, args).await,
        Command::Update(args) => lrp::update(&client, args).await,
        Command::Rm(args) => lrp::rm(&client, args).await,
        Command::Logs(args) => {
            logs::run(&client, client::LogsOf::Lrp(&args.name), &args.logs).await
        }
        Command::Exec(args) => exec::run(&client, args).await,
        Command::Task(command) => task::run(&client, command).await,
        Command::Cells(args) => cluster::cells(&client, args).await,
        Command::Domains(args) => cluster::domains(&client, args).await,
        Command::Visualize(args) => visualize::run(&client, args).await,
        Command::Events(args) => events::run(&client, args).await,
        Command::Server(_)
        | Command::Dev(_)
        | Command::Cell(_)
        | Command::CellHelper(_)
        | Command::SimCells(_)
        | Command::Router(_)
        | Command::Bench(_)
        | Command::Version => Ok(()),
    }
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise. Only the long-running
/// subcommands log; the CLI verbs speak in sentences.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
