//! Registry credentials (never printed) and the `WWW-Authenticate` challenges that say
//! how to use them: basic, or a bearer token from the registry's token service.

use std::fmt;

/// How to authenticate to a registry. `Debug` never shows the password, and no error
/// of this crate contains it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// One challenge of a 401 answer's `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://auth",service="s",scope="a b"`.
/// Returns `None` for schemes this crate does not speak.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(params);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `key=value` or `key="quoted, value"` pairs separated by commas.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return params;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
            value = value.trim().to_owned();
        }
        params.push((key.trim().to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let bearer = |realm: &str, service: Option<&str>, scope: Option<&str>| {
            Some(Challenge::Bearer {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            })
        };
        let cases: &[(&str, Option<Challenge>)] = &[
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            ("basic", Some(Challenge::Basic)),
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#,
                bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/redis:pull"),
                ),
            ),
            (
                r#"Bearer realm="https://a/t", scope="repository:x:pull,push", service=svc"#,
                bearer("https://a/t", Some("svc"), Some("repository:x:pull,push")),
            ),
            (
                r#"Bearer realm="https://a/\"q\"""#,
                bearer(r#"https://a/"q""#, None, None),
            ),
            (r#"Bearer service="s""#, None),
            (r#"Negotiate abc"#, None),
        ];
        for (header, expect) in cases {
            assert_eq!(&parse_challenge(header), expect, "header: {header}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let credentials = Credentials::basic("alice", "s3cret-pw");
        let shown = format!("{credentials:?}");
        assert_eq!(
            shown,
            r#"Basic { username: "alice", password: "<redacted>" }"#
        );
        assert!(!format!("{credentials:#?}").contains("s3cret-pw"));
    }
}
