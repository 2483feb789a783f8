//! Routes: how traffic from outside reaches an LRP's instances.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, limits};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
}

/// Requests whose Host is `hostname` go to `port` of a container. A hostname may start
/// with `*.` to match every subdomain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    pub hostname: String,
    pub port: u16,
}

/// Connections to `external_port` on a router go to `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    pub external_port: u16,
    pub container_port: u16,
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty()
    }

    pub fn validate(&self, ports: &[u16]) -> Result<(), ValidationError> {
        let size = serde_json::to_string(self)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > limits::ROUTES_BYTES {
            return Err(ValidationError::new(
                "",
                format!(
                    "are {size} bytes, more than the limit of {}",
                    limits::ROUTES_BYTES
                ),
            ));
        }
        for (i, route) in self.http.iter().enumerate() {
            let at = |e: ValidationError| e.within(&format!("http[{i}]"));
            validate_hostname(&route.hostname).map_err(at)?;
            if !ports.contains(&route.port) {
                return Err(at(ValidationError::new(
                    "port",
                    format!("{} is not one of the LRP's ports {ports:?}", route.port),
                )));
            }
        }
        for (i, route) in self.tcp.iter().enumerate() {
            let at = |e: ValidationError| e.within(&format!("tcp[{i}]"));
            if route.external_port == 0 {
                return Err(at(ValidationError::new("external_port", "must not be 0")));
            }
            if !ports.contains(&route.container_port) {
                return Err(at(ValidationError::new(
                    "container_port",
                    format!(
                        "{} is not one of the LRP's ports {ports:?}",
                        route.container_port
                    ),
                )));
            }
        }
        Ok(())
    }
}

fn validate_hostname(hostname: &str) -> Result<(), ValidationError> {
    let bare = hostname.strip_prefix("*.").unwrap_or(hostname);
    let ok = !bare.is_empty()
        && hostname.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "hostname",
            format!(
                "{hostname:?} is not a DNS name (labels of letters, digits and '-', optionally starting with '*.')"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["web.localhost", "*.apps.example.test", "a", "x-1.y"] {
            assert_eq!(validate_hostname(good), Ok(()), "{good}");
        }
        for bad in ["", "*.", "a..b", "-a.b", "a_b", "web.localhost:80", "*"] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_name_their_field() {
        let routes = Routes {
            http: vec![HttpRoute {
                hostname: "web.localhost".into(),
                port: 9,
            }],
            tcp: vec![],
        };
        assert_eq!(
            routes.validate(&[8080]).unwrap_err().to_string(),
            "http[0].port: 9 is not one of the LRP's ports [8080]"
        );
        let routes = Routes {
            http: vec![],
            tcp: vec![TcpRoute {
                external_port: 0,
                container_port: 8080,
            }],
        };
        assert_eq!(
            routes.validate(&[8080]).unwrap_err().field,
            "tcp[0].external_port"
        );
    }

    #[test]
    fn size_is_bounded() {
        let hostname = format!("{}.example", "a".repeat(60));
        let routes = Routes {
            http: vec![HttpRoute { hostname, port: 80 }; 3000],
            tcp: vec![],
        };
        assert!(
            routes
                .validate(&[80])
                .unwrap_err()
                .reason
                .contains("more than the limit")
        );
    }
}
