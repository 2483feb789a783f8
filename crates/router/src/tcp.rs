//! TCP routes: a listener on each external port of the table within the range the
//! router was given, each connection spliced to an endpoint of its port in turn.
//! Listeners follow the table; a port that leaves it stops accepting, and connections
//! already spliced go on until either side closes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Balance;
use crate::body::InFlight;
use crate::proxy::{CONNECT_TIMEOUT, Shared};
use crate::table::{MAX_TRIES, Tried};

/// How soon a port that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(1);

/// Keeps a listener on every port of `ports` that a TCP route uses, until the task is
/// aborted.
pub(crate) async fn serve(
    ip: IpAddr,
    ports: RangeInclusive<u16>,
    shared: Arc<Shared>,
    mut changes: watch::Receiver<()>,
) {
    let mut listeners: HashMap<u16, JoinHandle<()>> = HashMap::new();
    // Ports already warned about, so a log line is not repeated on every change.
    let mut unbound: HashSet<u16> = HashSet::new();
    let mut outside: HashSet<u16> = HashSet::new();
    loop {
        let used: BTreeSet<u16> = shared.table.load().tcp.keys().copied().collect();
        for port in used.iter().filter(|p| !ports.contains(p)) {
            if outside.insert(*port) {
                tracing::warn!(
                    port,
                    "a TCP route uses port {port}, outside this router's TCP ports {}-{}: not served here",
                    ports.start(),
                    ports.end()
                );
            }
        }
        outside.retain(|p| used.contains(p));
        listeners.retain(|port, task| {
            let keep = used.contains(port);
            if !keep {
                task.abort();
                tracing::info!(
                    port,
                    "no TCP route uses port {port} any more: stopped listening"
                );
            }
            keep
        });
        unbound.retain(|p| used.contains(p));
        for port in used.into_iter().filter(|p| ports.contains(p)) {
            if listeners.contains_key(&port) {
                continue;
            }
            match TcpListener::bind((ip, port)).await {
                Ok(listener) => {
                    tracing::info!(port, "listening for a TCP route on {ip}:{port}");
                    unbound.remove(&port);
                    listeners.insert(port, tokio::spawn(accept(listener, port, shared.clone())));
                }
                Err(e) => {
                    if unbound.insert(port) {
                        tracing::warn!(port, error = %e, "cannot listen on {ip}:{port} for a TCP route; trying again");
                    }
                }
            }
        }
        let retry = async {
            if unbound.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(BIND_RETRY).await
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = retry => {}
        }
    }
    for task in listeners.values() {
        task.abort();
    }
}

async fn accept(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                tokio::spawn(splice(stream, client, port, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "cannot accept a TCP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects the client to an endpoint of the port (another one when one cannot be
/// reached) and copies bytes both ways until either side closes.
async fn splice(mut client: TcpStream, remote: SocketAddr, port: u16, shared: Arc<Shared>) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let mut tried = Tried::default();
    while tried.len() < MAX_TRIES {
        let Some(pool) = shared.table.load().tcp.get(&port).cloned() else {
            tracing::info!(target: "access", client = %remote, port, "tcp: no route any more; closed");
            return;
        };
        let Some(backend) = pool.pick(shared.balance, &tried) else {
            break;
        };
        tried.push(backend.addr);
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await;
        let mut upstream = match connected {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                tracing::debug!(port, instance = %backend.instance, addr = %backend.addr, error = %e, "tcp: an endpoint failed");
                continue;
            }
            Err(_) => {
                tracing::debug!(port, instance = %backend.instance, addr = %backend.addr, "tcp: an endpoint did not answer in time");
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        let _in_flight =
            (shared.balance == Balance::LeastRequest).then(|| InFlight::start(&backend.in_flight));
        let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        let (sent, received) = copied.as_ref().map_or((0, 0), |(a, b)| (*a, *b));
        tracing::info!(
            target: "access",
            client = %remote,
            port,
            upstream = %format!("{} {}", backend.instance, backend.addr),
            sent,
            received,
            us = started.elapsed().as_micros() as u64,
            error = copied.err().map(|e| e.to_string()),
            "tcp"
        );
        return;
    }
    tracing::info!(
        target: "access",
        client = %remote,
        port,
        tries = tried.len(),
        "tcp: no instance could be reached; closed"
    );
}
