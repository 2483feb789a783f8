//! The image config: the defaults a container gets from its image (ENTRYPOINT/CMD,
//! Env, WorkingDir, User, ExposedPorts) and the layers' uncompressed digests.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;

/// What an image says about how to run it. Empty fields mean the image says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries split at the first `=`, in the image's order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image wrote it.
    pub user: Option<String>,
    pub exposed_ports: Vec<ExposedPort>,
    /// The sha256 of each layer's uncompressed tar, bottom first (`rootfs.diff_ids`).
    pub diff_ids: Vec<Digest>,
}

/// A port the image says its process listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// Why an image config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image config is not valid JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("image config exposes `{0}`, which is not PORT or PORT/tcp|udp|sctp")]
    BadPort(String),
    #[error("image config env entry `{0}` has no `=`")]
    BadEnv(String),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    config: Option<RawConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses an image config blob (OCI or Docker; both use the same fields).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        let raw: Raw = serde_json::from_slice(bytes)?;
        let config = raw.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
                None => Err(ConfigError::BadEnv(entry)),
            })
            .collect::<Result<_, _>>()?;
        let mut exposed_ports = config
            .exposed_ports
            .unwrap_or_default()
            .into_keys()
            .map(|key| parse_port(&key).ok_or(ConfigError::BadPort(key)))
            .collect::<Result<Vec<_>, _>>()?;
        exposed_ports.sort();
        Ok(ImageConfig {
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env,
            working_dir: config.working_dir.filter(|d| !d.is_empty()),
            user: config.user.filter(|u| !u.is_empty()),
            exposed_ports,
            diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
        })
    }

    /// The command the image runs by default: ENTRYPOINT followed by CMD.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

fn parse_port(key: &str) -> Option<ExposedPort> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return None,
    };
    let port = port.parse().ok().filter(|p| *p > 0)?;
    Some(ExposedPort { port, protocol })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config() {
        let body = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/bin/httpd", "-f"], "Cmd": ["-p", "8080"],
                "Env": ["PATH=/bin", "EMPTY=", "EQ=a=b"], "WorkingDir": "/www",
                "User": "1000:1000", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "9000": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }"#;
        let config = ImageConfig::parse(body).expect("valid");
        assert_eq!(config.command(), ["/bin/httpd", "-f", "-p", "8080"]);
        assert_eq!(
            config.env,
            [("PATH", "/bin"), ("EMPTY", ""), ("EQ", "a=b")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(config.working_dir.as_deref(), Some("/www"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        let ports: Vec<_> = config
            .exposed_ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                (53, Protocol::Udp),
                (8080, Protocol::Tcp),
                (9000, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn nulls_and_absences_are_empty() {
        let cases: &[&[u8]] = &[
            br#"{}"#,
            br#"{"config": null}"#,
            br#"{"config": {"Entrypoint": null, "Cmd": null, "Env": null, "WorkingDir": "", "User": ""}}"#,
        ];
        for body in cases {
            assert_eq!(
                ImageConfig::parse(body).expect("valid"),
                ImageConfig::default()
            );
        }
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"config": {"ExposedPorts": {"http": {}}}}"#,
                "image config exposes `http`, which is not PORT or PORT/tcp|udp|sctp",
            ),
            (
                br#"{"config": {"ExposedPorts": {"80/quic": {}}}}"#,
                "image config exposes `80/quic`, which is not PORT or PORT/tcp|udp|sctp",
            ),
            (
                br#"{"config": {"Env": ["NOVALUE"]}}"#,
                "image config env entry `NOVALUE` has no `=`",
            ),
        ];
        for (body, expect) in cases {
            let error = ImageConfig::parse(body).expect_err("invalid");
            assert_eq!(error.to_string(), *expect);
        }
    }
}
