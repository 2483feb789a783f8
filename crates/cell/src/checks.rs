//! Health checks, run from the cell against the container's address: one attempt of a
//! TCP or HTTP check, and the startup poll.

use std::net::SocketAddr;
use std::time::Duration;

use model::{Check, CheckKind};
use runtime::{ContainerInfo, ContainerRuntime, ProcessSpec};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Where the cell reaches a container port: the container's own address on the cell's
/// bridge, or, for the process backend (which cannot remap ports), the host port.
pub fn target(info: &ContainerInfo, container_port: u16) -> Option<SocketAddr> {
    let ip: std::net::IpAddr = info.address.parse().ok()?;
    if ip.is_loopback() {
        let host_port = info
            .ports
            .iter()
            .find(|p| p.container_port == container_port)?
            .host_port;
        Some(SocketAddr::new(ip, host_port))
    } else {
        Some(SocketAddr::new(ip, container_port))
    }
}

/// The cell's means to run a check: an HTTP client and the container runtime (for
/// `exec` checks, which run inside the container).
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub http: &'a reqwest::Client,
    pub runtime: &'a dyn ContainerRuntime,
}

/// One attempt; the error says what failed.
pub async fn attempt(probe: Probe<'_>, info: &ContainerInfo, check: &Check) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    let http = probe.http;
    match &check.kind {
        CheckKind::Exec { path, args } => {
            let process = ProcessSpec {
                path: path.clone(),
                args: args.clone(),
                dir: None,
                env: Vec::new(),
                user: None,
                nofile: Some(1024),
                nproc: None,
                tty: None,
                log: false,
            };
            let id = probe
                .runtime
                .spawn(&info.id, process)
                .await
                .map_err(|e| format!("{path}: {e:#}"))?;
            match tokio::time::timeout(timeout, probe.runtime.wait(&info.id, id)).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("{path}: {}", status.describe())),
                Ok(Err(e)) => Err(format!("{path}: {e:#}")),
                Err(_) => {
                    let _ = probe.runtime.signal(&info.id, Some(id), 9).await;
                    Err(format!(
                        "{path}: did not finish within {} ms",
                        check.timeout_ms
                    ))
                }
            }
        }
        CheckKind::Tcp { port } => {
            let addr =
                target(info, *port).ok_or_else(|| format!("port {port} is not published"))?;
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("tcp port {port}: {e}")),
                Err(_) => Err(format!(
                    "tcp port {port}: no connection within {} ms",
                    check.timeout_ms
                )),
            }
        }
        CheckKind::Http { port, path } => {
            let addr =
                target(info, *port).ok_or_else(|| format!("port {port} is not published"))?;
            let url = format!("http://{addr}{path}");
            match http.get(&url).timeout(timeout).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("GET {path} on port {port}: {}", response.status())),
                Err(e) if e.is_timeout() => Err(format!(
                    "GET {path} on port {port}: no answer within {} ms",
                    check.timeout_ms
                )),
                Err(e) => Err(format!("GET {path} on port {port}: {}", root_cause(&e))),
            }
        }
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// Polls `check` until it passes or `deadline` passes, quickly at first (most
/// processes listen within milliseconds) and then every `interval` at most.
pub async fn until_healthy(
    probe: Probe<'_>,
    info: &ContainerInfo,
    check: &Check,
    deadline: Instant,
    interval: Duration,
) -> Result<(), String> {
    let mut wait = Duration::from_millis(5);
    loop {
        let last = match attempt(probe, info, check).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + wait > deadline {
            return Err(last);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::{ExitStatus, PortMap, ProcessId, Stats, TtySize, protocol::ContainerState};

    /// TCP and HTTP checks never touch the runtime.
    #[derive(Debug)]
    struct NoRuntime;

    fn unused<T>() -> anyhow::Result<T> {
        anyhow::bail!("this test has no container runtime")
    }

    #[async_trait::async_trait]
    impl ContainerRuntime for NoRuntime {
        fn backend(&self) -> &str {
            "none"
        }
        async fn create(&self, _: runtime::ContainerSpec) -> anyhow::Result<ContainerInfo> {
            unused()
        }
        async fn spawn(&self, _: &str, _: ProcessSpec) -> anyhow::Result<ProcessId> {
            unused()
        }
        async fn wait(&self, _: &str, _: ProcessId) -> anyhow::Result<ExitStatus> {
            unused()
        }
        async fn signal(&self, _: &str, _: Option<ProcessId>, _: i32) -> anyhow::Result<()> {
            unused()
        }
        async fn input(&self, _: &str, _: ProcessId, _: Vec<u8>) -> anyhow::Result<()> {
            unused()
        }
        async fn resize(&self, _: &str, _: ProcessId, _: TtySize) -> anyhow::Result<()> {
            unused()
        }
        async fn destroy(&self, _: &str) -> anyhow::Result<()> {
            unused()
        }
        async fn stats(&self, _: &str) -> anyhow::Result<Stats> {
            unused()
        }
        async fn list(&self) -> anyhow::Result<Vec<ContainerState>> {
            unused()
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<runtime::RuntimeEvent> {
            tokio::sync::broadcast::channel(1).1
        }
    }

    fn info(address: &str) -> ContainerInfo {
        ContainerInfo {
            id: "c".into(),
            address: address.into(),
            ports: vec![PortMap {
                container_port: 8080,
                host_port: 61001,
            }],
            root: "/".into(),
            env: vec![],
        }
    }

    #[test]
    fn checks_reach_the_container_or_its_host_port() {
        assert_eq!(
            target(&info("10.88.0.5"), 8080),
            Some("10.88.0.5:8080".parse().unwrap())
        );
        assert_eq!(
            target(&info("127.0.0.1"), 8080),
            Some("127.0.0.1:61001".parse().unwrap())
        );
        assert_eq!(target(&info("127.0.0.1"), 9090), None);
    }

    #[tokio::test]
    async fn a_tcp_check_passes_once_something_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut info = info("127.0.0.1");
        info.ports[0].host_port = port;
        let check = Check {
            kind: CheckKind::Tcp { port: 8080 },
            interval_ms: 1000,
            timeout_ms: 1000,
        };
        let http = reqwest::Client::new();
        let runtime = NoRuntime;
        let probe = Probe {
            http: &http,
            runtime: &runtime,
        };
        assert_eq!(attempt(probe, &info, &check).await, Ok(()));
        drop(listener);
        let err = attempt(probe, &info, &check).await.unwrap_err();
        assert!(err.starts_with("tcp port 8080"), "{err}");
    }
}
