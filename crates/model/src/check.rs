//! Health checks: a startup timeout, and liveness and readiness checks.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, check_len, limits};

/// How a cell decides that an instance has started, is alive and may receive traffic.
///
/// During startup the cell polls the liveness check (or, without one, waits for the
/// process to stay up) until it passes or `start_timeout_ms` runs out. After that,
/// liveness runs every `interval_ms`; a failure crashes the instance. Readiness decides
/// whether the instance is routable; a failure takes it out of the routes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default = "Checks::default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Check>,
}

impl Default for Checks {
    fn default() -> Checks {
        Checks {
            start_timeout_ms: Checks::default_start_timeout_ms(),
            liveness: None,
            readiness: None,
        }
    }
}

impl Checks {
    /// Diego's default startup timeout is 60 s.
    fn default_start_timeout_ms() -> u64 {
        60_000
    }

    pub fn validate(&self, ports: &[u16]) -> Result<(), ValidationError> {
        if self.start_timeout_ms == 0 || self.start_timeout_ms > limits::TIMEOUT_MS {
            return Err(ValidationError::new(
                "start_timeout_ms",
                format!("must be between 1 and {}", limits::TIMEOUT_MS),
            ));
        }
        if let Some(check) = &self.liveness {
            check.validate(ports).map_err(|e| e.within("liveness"))?;
        }
        if let Some(check) = &self.readiness {
            check.validate(ports).map_err(|e| e.within("readiness"))?;
        }
        Ok(())
    }
}

/// (serde cannot refuse unknown fields next to a flattened enum, so a misspelt field in
/// a check is ignored rather than refused.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    #[serde(flatten)]
    pub kind: CheckKind,
    /// Time between attempts once the instance is running (default 30 s).
    #[serde(default = "Check::default_interval_ms")]
    pub interval_ms: u64,
    /// Time one attempt may take (default 1 s).
    #[serde(default = "Check::default_timeout_ms")]
    pub timeout_ms: u64,
}

/// What one attempt does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckKind {
    /// Connects to the container port.
    Tcp { port: u16 },
    /// GETs `path` on the container port and wants a 2xx.
    Http {
        port: u16,
        #[serde(default = "CheckKind::default_path")]
        path: String,
    },
    /// Runs a command in the container and wants exit status 0.
    Exec {
        path: String,
        #[serde(default)]
        args: Vec<String>,
    },
}

impl CheckKind {
    fn default_path() -> String {
        "/".to_owned()
    }
}

impl Check {
    fn default_interval_ms() -> u64 {
        30_000
    }

    fn default_timeout_ms() -> u64 {
        1_000
    }

    fn validate(&self, ports: &[u16]) -> Result<(), ValidationError> {
        for (field, value) in [
            ("interval_ms", self.interval_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 || value > limits::TIMEOUT_MS {
                return Err(ValidationError::new(
                    field,
                    format!("must be between 1 and {}", limits::TIMEOUT_MS),
                ));
            }
        }
        match &self.kind {
            CheckKind::Tcp { port } | CheckKind::Http { port, .. } => {
                if !ports.contains(port) {
                    return Err(ValidationError::new(
                        "port",
                        format!("{port} is not one of the LRP's ports {ports:?}"),
                    ));
                }
            }
            CheckKind::Exec { path, args } => {
                if path.is_empty() {
                    return Err(ValidationError::new("path", "must not be empty"));
                }
                check_len("path", path, limits::ACTION_STRING_BYTES)?;
                for (i, arg) in args.iter().enumerate() {
                    check_len(&format!("args[{i}]"), arg, limits::ACTION_STRING_BYTES)?;
                }
            }
        }
        if let CheckKind::Http { path, .. } = &self.kind {
            if !path.starts_with('/') {
                return Err(ValidationError::new("path", "must start with '/'"));
            }
            check_len("path", path, limits::ACTION_STRING_BYTES)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, ports: &[u16], expect: Result<(), &str>) {
        let checks: Checks = serde_json::from_str(json).expect("test input parses");
        let got = checks.validate(ports).map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_owned), "input {json}");
    }

    #[test]
    fn checks() {
        check(r#"{}"#, &[], Ok(()));
        check(
            r#"{"liveness": {"kind": "tcp", "port": 8080}}"#,
            &[8080],
            Ok(()),
        );
        check(
            r#"{"liveness": {"kind": "tcp", "port": 9}}"#,
            &[8080],
            Err("liveness.port: 9 is not one of the LRP's ports [8080]"),
        );
        check(
            r#"{"readiness": {"kind": "http", "port": 80, "path": "x"}}"#,
            &[80],
            Err("readiness.path: must start with '/'"),
        );
        check(
            r#"{"liveness": {"kind": "exec", "path": "true", "interval_ms": 0}}"#,
            &[],
            Err("liveness.interval_ms: must be between 1 and 86400000"),
        );
        check(
            r#"{"start_timeout_ms": 0}"#,
            &[],
            Err("start_timeout_ms: must be between 1 and 86400000"),
        );
    }

    #[test]
    fn defaults_follow_diego() {
        let checks: Checks =
            serde_json::from_str(r#"{"liveness": {"kind": "http", "port": 80}}"#).unwrap();
        let liveness = checks.liveness.unwrap();
        assert_eq!(
            (
                checks.start_timeout_ms,
                liveness.interval_ms,
                liveness.timeout_ms
            ),
            (60_000, 30_000, 1_000)
        );
        assert_eq!(
            liveness.kind,
            CheckKind::Http {
                port: 80,
                path: "/".into()
            }
        );
    }
}
