//! Content digests (`sha256:<64 hex>`): parsing, computing and verifying.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, the only algorithm registries use in practice. Holding one
/// means the text was valid: `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest `{0}` has no algorithm (expected `sha256:<64 hex digits>`)")]
    NoAlgorithm(String),
    #[error("digest algorithm `{0}` is not supported (only sha256 is)")]
    UnsupportedAlgorithm(String),
    #[error("sha256 digest `{0}` must be 64 lowercase hex digits")]
    BadHex(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The 64 hex digits, without the algorithm: the file name in the cache.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// `Ok` when `bytes` hash to this digest, else the mismatch.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), Mismatch> {
        self.check(Digest::of(bytes))
    }

    /// `Ok` when `got` is this digest, else the mismatch naming both.
    pub fn check(&self, got: Digest) -> Result<(), Mismatch> {
        if *self == got {
            Ok(())
        } else {
            Err(Mismatch {
                expected: self.clone(),
                got,
            })
        }
    }
}

/// Content whose digest is not the one it was asked for by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest mismatch: expected {expected}, got {got}")]
pub struct Mismatch {
    pub expected: Digest,
    pub got: Digest,
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(100).collect();
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(shown));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(
                algorithm.chars().take(32).collect(),
            ));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex(shown));
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes a stream as it passes, for content too large to hold in memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest::from_hasher(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match input.parse::<Digest>() {
            Ok(d) => format!("ok {d}"),
            Err(e) => format!("err {e}"),
        };
        assert_eq!(got, expect, "input: {input}");
    }

    #[test]
    fn parse() {
        let good = format!("sha256:{}", "a".repeat(64));
        let cases: &[(&str, String)] = &[
            (&good, format!("ok {good}")),
            (
                "",
                "err digest `` has no algorithm (expected `sha256:<64 hex digits>`)".into(),
            ),
            (
                "sha512:00",
                "err digest algorithm `sha512` is not supported (only sha256 is)".into(),
            ),
            (
                "sha256:abc",
                "err sha256 digest `sha256:abc` must be 64 lowercase hex digits".into(),
            ),
            (
                &format!("sha256:{}", "A".repeat(64)),
                format!(
                    "err sha256 digest `sha256:{}` must be 64 lowercase hex digits",
                    "A".repeat(64)
                ),
            ),
        ];
        for (input, expect) in cases {
            check(input, expect);
        }
    }

    #[test]
    fn verify_names_both_digests() {
        let expected = Digest::of(b"hello");
        assert!(expected.verify(b"hello").is_ok());
        let err = expected.verify(b"tampered").expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "digest mismatch: expected {expected}, got {}",
                Digest::of(b"tampered")
            )
        );
    }
}
