//! Validation errors that name the offending field, the limits they enforce, and the
//! rootfs URL.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Bounds on user input. They exist so that one LRP cannot exhaust the store, the event
/// stream or a cell; the values follow Diego's where Diego has one.
pub mod limits {
    /// Names of LRPs, tasks, cells and domains.
    pub const NAME_BYTES: usize = 128;
    /// Diego's `maximumAnnotationLength`.
    pub const ANNOTATION_BYTES: usize = 10 * 1024;
    /// Diego's `maximumRouteLength`, applied to the serialized routes.
    pub const ROUTES_BYTES: usize = 128 * 1024;
    /// Instances of one LRP.
    pub const INSTANCES: u32 = 100_000;
    /// Memory of one container, in MB (1 TB).
    pub const MEMORY_MB: u64 = 1024 * 1024;
    /// Disk of one container, in MB (16 TB).
    pub const DISK_MB: u64 = 16 * 1024 * 1024;
    /// Processes in one container.
    pub const MAX_PIDS: u32 = 4 * 1024 * 1024;
    /// Environment variables of one process.
    pub const ENV_VARS: usize = 1024;
    /// Bytes of one environment variable's name plus value.
    pub const ENV_VAR_BYTES: usize = 64 * 1024;
    /// Depth of the action tree.
    pub const ACTION_DEPTH: usize = 16;
    /// Nodes of the action tree.
    pub const ACTION_NODES: usize = 1024;
    /// Length of a string in an action (path, argument, URL).
    pub const ACTION_STRING_BYTES: usize = 64 * 1024;
    /// Placement tags of one LRP, task or cell.
    pub const PLACEMENT_TAGS: usize = 64;
    /// Length of a rootfs URL.
    pub const ROOTFS_BYTES: usize = 4096;
    /// Ports one LRP may expose.
    pub const PORTS: usize = 64;
    /// Size a task's result may have (Diego's rep enforces 50 KB).
    pub const TASK_RESULT_BYTES: usize = 50 * 1024;
    /// A crash reason or failure reason is truncated to this many bytes.
    pub const REASON_BYTES: usize = 1024;
    /// Startup timeout, check intervals and action timeouts: at most a day.
    pub const TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
}

/// A value the model refuses, with the field it is in (a dotted path such as
/// `checks.liveness.interval_ms`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error one level deeper: `prefix.field`.
    pub fn within(self, prefix: &str) -> ValidationError {
        let field = if self.field.is_empty() {
            prefix.to_owned()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        ValidationError {
            field,
            reason: self.reason,
        }
    }
}

/// Checks that `value` is at most `max` bytes.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, more than the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

/// Checks an environment list: bounded, and names that a process can receive.
pub(crate) fn check_env(field: &str, env: &[(String, String)]) -> Result<(), ValidationError> {
    if env.len() > limits::ENV_VARS {
        return Err(ValidationError::new(
            field,
            format!(
                "has {} variables, more than the limit of {}",
                env.len(),
                limits::ENV_VARS
            ),
        ));
    }
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(ValidationError::new(
                format!("{field}.{key}"),
                "variable names must be non-empty and contain neither '=' nor NUL",
            ));
        }
        if key.len() + value.len() > limits::ENV_VAR_BYTES {
            return Err(ValidationError::new(
                format!("{field}.{key}"),
                format!(
                    "is longer than the limit of {} bytes",
                    limits::ENV_VAR_BYTES
                ),
            ));
        }
    }
    Ok(())
}

/// Where a container's filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rootfs {
    /// A stack prepared on the cell, such as `preloaded:host` or `preloaded:busybox`.
    Preloaded(String),
    /// An image in an OCI registry: `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`, or a
    /// short name such as `docker:///library/redis` resolved against a default registry.
    Docker(String),
    /// An OCI image layout on the cell: `oci:PATH`.
    Oci(String),
}

impl Rootfs {
    pub fn parse(field: &str, url: &str) -> Result<Rootfs, ValidationError> {
        check_len(field, url, limits::ROOTFS_BYTES)?;
        let bad = |reason: &str| Err(ValidationError::new(field, reason.to_owned()));
        if let Some(stack) = url.strip_prefix("preloaded:") {
            if stack.is_empty()
                || !stack
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return bad("preloaded: needs a stack name such as preloaded:host");
            }
            Ok(Rootfs::Preloaded(stack.to_owned()))
        } else if let Some(image) = url.strip_prefix("docker://") {
            let image = image.trim_start_matches('/');
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    "docker:// needs an image reference such as docker://registry/repo:tag",
                );
            }
            Ok(Rootfs::Docker(image.to_owned()))
        } else if let Some(path) = url.strip_prefix("oci:") {
            if path.is_empty() || path.contains('\0') {
                return bad("oci: needs the path of an OCI image layout");
            }
            Ok(Rootfs::Oci(path.to_owned()))
        } else {
            bad("must start with preloaded:, docker:// or oci:")
        }
    }

    /// The provider a cell must advertise to run this rootfs: `preloaded:<stack>` names
    /// its stack, the others their scheme.
    pub fn provider(&self) -> &str {
        match self {
            Rootfs::Preloaded(stack) => stack,
            Rootfs::Docker(_) => "docker",
            Rootfs::Oci(_) => "oci",
        }
    }
}

impl fmt::Display for Rootfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rootfs::Preloaded(stack) => write!(f, "preloaded:{stack}"),
            Rootfs::Docker(image) => write!(f, "docker://{image}"),
            Rootfs::Oci(path) => write!(f, "oci:{path}"),
        }
    }
}

impl Serialize for Rootfs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rootfs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rootfs, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Rootfs::parse("rootfs", &raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("preloaded:host", Ok("preloaded:host")),
            ("preloaded:busybox", Ok("preloaded:busybox")),
            (
                "docker://127.0.0.1:5000/test/busybox:1",
                Ok("docker://127.0.0.1:5000/test/busybox:1"),
            ),
            ("docker:///library/redis", Ok("docker://library/redis")),
            ("oci:/var/images/app", Ok("oci:/var/images/app")),
            (
                "preloaded:",
                Err("rootfs: preloaded: needs a stack name such as preloaded:host"),
            ),
            (
                "preloaded:../x",
                Err("rootfs: preloaded: needs a stack name such as preloaded:host"),
            ),
            (
                "http://x",
                Err("rootfs: must start with preloaded:, docker:// or oci:"),
            ),
            (
                "",
                Err("rootfs: must start with preloaded:, docker:// or oci:"),
            ),
            (
                "docker://",
                Err(
                    "rootfs: docker:// needs an image reference such as docker://registry/repo:tag",
                ),
            ),
        ];
        for (input, expect) in cases {
            let got = Rootfs::parse("rootfs", input)
                .map(|r| r.to_string())
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                expect.map(str::to_owned).map_err(str::to_owned),
                "input {input:?}"
            );
        }
        assert_eq!(
            Rootfs::parse("r", "docker://a/b").unwrap().provider(),
            "docker"
        );
        assert_eq!(
            Rootfs::parse("r", "preloaded:host").unwrap().provider(),
            "host"
        );
    }

    #[test]
    fn field_paths_nest() {
        let e = ValidationError::new("interval_ms", "x")
            .within("liveness")
            .within("checks");
        assert_eq!(e.field, "checks.liveness.interval_ms");
        let e = ValidationError::new("[2]", "x").within("action.serial");
        assert_eq!(e.field, "action.serial[2]");
    }
}
