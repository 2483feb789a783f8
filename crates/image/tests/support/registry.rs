//! A throwaway `docker-registry` (CNCF distribution) on 127.0.0.1, its storage in a
//! temporary directory, killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";

#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

/// Basic credentials the registry accepts (stored bcrypt-hashed in an htpasswd file).
pub struct Htpasswd<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// Why a test cannot run here; printed and the test returns early.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("skipping: needs root (device nodes and ownership in layers)".into());
    }
    if !Path::new(BINARY).exists() {
        return Some(format!(
            "skipping: {BINARY} is missing (apt-get install docker-registry)"
        ));
    }
    None
}

impl Registry {
    /// Starts a registry on a free port. The port is found by binding and releasing
    /// it, so another process may take it first: then the registry exits and the
    /// start is retried on another port.
    pub async fn start(auth: Option<Htpasswd<'_>>) -> Registry {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Registry::try_start(&auth).await {
                Ok(registry) => return registry,
                Err(log) if attempts < 3 && log.contains("address already in use") => continue,
                Err(log) => panic!("docker-registry did not start: {log}"),
            }
        }
    }

    async fn try_start(auth: &Option<Htpasswd<'_>>) -> Result<Registry, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let auth_section = match auth {
            Some(Htpasswd { username, password }) => {
                let hash = bcrypt::hash(password, 5).expect("bcrypt");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{username}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{auth_section}",
            dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry { child, addr, dir };
        registry.wait_ready().await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/v2/", self.addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if let Ok(response) = client.get(&url).send().await
                && (response.status().is_success() || response.status() == 401)
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} within 20 s: {}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_file(&self, digest: &image::Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
