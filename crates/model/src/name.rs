//! Names of LRPs, tasks, cells and domains: `^[a-zA-Z0-9_-]+$`, at most 128 bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::validate::{ValidationError, limits};

/// A validated name. The only way to get one is [`Name::parse`], so holding a `Name`
/// proves it is well formed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Parses `value` as a name, naming `field` in the error.
    pub fn parse(field: &str, value: &str) -> Result<Name, ValidationError> {
        if value.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if value.len() > limits::NAME_BYTES {
            return Err(ValidationError::new(
                field,
                format!("must be at most {} characters", limits::NAME_BYTES),
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(ValidationError::new(
                field,
                format!("may contain only letters, digits, '_' and '-' (found {bad:?})"),
            ));
        }
        Ok(Name(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Stored rows are deserialized through the same check, so a corrupt row cannot smuggle
/// in a name the API would have refused.
impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Name::parse("name", &raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("web", Ok(())),
            ("Web_2-a", Ok(())),
            ("", Err("name: must not be empty")),
            (
                "a b",
                Err("name: may contain only letters, digits, '_' and '-' (found ' ')"),
            ),
            (
                "../etc",
                Err("name: may contain only letters, digits, '_' and '-' (found '.')"),
            ),
            (
                "é",
                Err("name: may contain only letters, digits, '_' and '-' (found 'é')"),
            ),
        ];
        for (input, expect) in cases {
            let got = Name::parse("name", input)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, expect.map_err(str::to_owned), "input {input:?}");
        }
        assert!(Name::parse("name", &"a".repeat(128)).is_ok());
        assert!(Name::parse("name", &"a".repeat(129)).is_err());
    }
}
