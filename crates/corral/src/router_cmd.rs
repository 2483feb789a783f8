//! `corral router`: the HTTP and TCP router, following a server's event stream until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use client::Client;
use router::{Balance, Router, RouterOptions};

use crate::cli::Global;
use crate::config::{self, Env};
use crate::dev::Signals;

/// Where `corral router` and `corral dev`'s router serve HTTP unless told otherwise.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";

#[derive(Debug, Clone, Args)]
pub struct RouterArgs {
    /// URL of the Corral API to follow [default: --api, else CORRAL_API, else the CLI
    /// config file]; the token comes from --token, CORRAL_TOKEN or the config file
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Address HTTP is served on (port 0 picks a free one); `GET /healthz` with a host
    /// that is not routed (such as this address) is the router's own health
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// External ports of TCP routes to listen on, FIRST-LAST, on the --http address's IP
    /// [default: none: TCP routes are not served]
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    pub tcp_ports: Option<(u16, u16)>,
    /// How requests and connections are spread over a route's instances
    #[arg(long, value_enum, default_value_t = BalanceArg::RoundRobin)]
    pub balance: BalanceArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BalanceArg {
    /// Each instance in turn
    RoundRobin,
    /// The instance with the fewest requests in flight from this router
    LeastRequest,
}

impl RouterArgs {
    pub fn options(&self) -> RouterOptions {
        RouterOptions {
            http: self.http,
            tcp_ports: self.tcp_ports.map(|(first, last)| first..=last),
            balance: match self.balance {
                BalanceArg::RoundRobin => Balance::RoundRobin,
                BalanceArg::LeastRequest => Balance::LeastRequest,
            },
        }
    }
}

pub async fn run(args: &RouterArgs, global: &Global, env: &dyn Env) -> Result<()> {
    let mut global = global.clone();
    if let Some(server) = &args.server {
        global.api = Some(server.clone());
    }
    let endpoint = config::resolve(&global, env)?;
    let client = Client::new(&endpoint.api, endpoint.token)?;
    let mut signals = Signals::new()?;
    let router = Router::start(client, args.options())
        .await
        .context("start the router")?;
    println!(
        "Corral router: HTTP on http://{}{}, following {}",
        router.http_addr(),
        match args.tcp_ports {
            Some((first, last)) => format!(", TCP routes on ports {first}-{last}"),
            None => String::new(),
        },
        endpoint.api
    );
    println!(
        "Health: curl http://{}/healthz (200 once the routing table is loaded)",
        router.http_addr()
    );
    let which = signals.recv().await;
    eprintln!("Received {which}: stopping.");
    drop(router);
    Ok(())
}

/// Parses `FIRST-LAST`, both ports from 1 to 65535; a single port is a range of one.
pub fn parse_port_range(value: &str) -> Result<(u16, u16), String> {
    let (first, last) = value.split_once('-').unwrap_or((value, value));
    let port = |s: &str| match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port from 1 to 65535")),
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("{value:?}: FIRST must not be above LAST"));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn port_ranges() {
        let cases = [
            ("10000-10999", Ok((10000, 10999))),
            ("5000", Ok((5000, 5000))),
            ("5000-5000", Ok((5000, 5000))),
            ("0-10", Err("\"0\" is not a port from 1 to 65535")),
            ("9-8", Err("\"9-8\": FIRST must not be above LAST")),
            ("a-b", Err("\"a\" is not a port from 1 to 65535")),
        ];
        for (input, expect) in cases {
            assert_eq!(
                parse_port_range(input),
                expect.map_err(str::to_owned),
                "{input}"
            );
        }
    }

    #[test]
    fn flags() {
        let cli = Cli::try_parse_from([
            "corral",
            "router",
            "--server",
            "http://127.0.0.1:7070",
            "--http",
            "0.0.0.0:80",
            "--tcp-ports",
            "10000-10100",
            "--balance",
            "least-request",
        ])
        .expect("parses");
        let Command::Router(args) = cli.command else {
            panic!("not router: {:?}", cli.command)
        };
        let options = args.options();
        assert_eq!(options.http, "0.0.0.0:80".parse().unwrap());
        assert_eq!(options.tcp_ports, Some(10000..=10100));
        assert_eq!(options.balance, Balance::LeastRequest);
        assert_eq!(args.server.as_deref(), Some("http://127.0.0.1:7070"));
        let cli = Cli::try_parse_from(["corral", "router"]).expect("parses");
        let Command::Router(args) = cli.command else {
            panic!("not router")
        };
        assert_eq!(args.http.to_string(), DEFAULT_HTTP);
        assert_eq!(args.options().balance, Balance::RoundRobin);
        assert_eq!(args.options().tcp_ports, None);
    }
}
