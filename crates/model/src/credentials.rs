//! A registry login for pulling an LRP's or task's image.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, check_len};

/// Most bytes of a registry username or password.
const MAX_BYTES: usize = 1024;

/// The username and password a cell gives the registry of a `docker://` rootfs. The
/// store keeps the password and the cell that pulls gets it; answers of the API and its
/// event stream carry [`RegistryCredentials::redacted`] (the username alone), and
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl RegistryCredentials {
    /// The same login without its password, as the API shows it.
    pub fn redacted(&self) -> RegistryCredentials {
        RegistryCredentials {
            username: self.username.clone(),
            password: String::new(),
        }
    }

    /// Leaves the password out of a login held by a row shown to users.
    pub fn redact(login: &mut Option<RegistryCredentials>) {
        if let Some(login) = login {
            login.password.clear();
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.username.is_empty() {
            return Err(ValidationError::new("username", "must not be empty"));
        }
        check_len("username", &self.username, MAX_BYTES)?;
        if self.username.contains(':') || self.username.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "username",
                "must not contain ':' or control characters",
            ));
        }
        if self.password.is_empty() {
            return Err(ValidationError::new("password", "must not be empty"));
        }
        // The password's value is never part of an error.
        if self.password.len() > MAX_BYTES {
            return Err(ValidationError::new(
                "password",
                format!("is longer than {MAX_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_shows_nowhere_but_in_the_value() {
        let login = RegistryCredentials {
            username: "ci".into(),
            password: "s3cret-pw".into(),
        };
        assert!(!format!("{login:?}").contains("s3cret-pw"));
        let shown = serde_json::to_string(&login.redacted()).unwrap();
        assert_eq!(shown, r#"{"username":"ci"}"#);
        assert!(login.validate().is_ok());
        let cases = [
            ("", "pw", "username: must not be empty"),
            (
                "a:b",
                "pw",
                "username: must not contain ':' or control characters",
            ),
            ("ci", "", "password: must not be empty"),
        ];
        for (username, password, expect) in cases {
            let login = RegistryCredentials {
                username: username.into(),
                password: password.into(),
            };
            assert_eq!(login.validate().unwrap_err().to_string(), expect);
        }
        let long = RegistryCredentials {
            username: "ci".into(),
            password: "p".repeat(2000),
        };
        let err = long.validate().unwrap_err().to_string();
        assert!(!err.contains("ppp"), "{err}");
    }
}
