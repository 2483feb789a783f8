//! The bearer token every component asks for (`Authorization: Bearer TOKEN`), read and
//! compared the same way by the server, the cells and the router.

/// The token of an `Authorization` header's value, when its scheme is `Bearer` (in any
/// case).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `given` is `expected`, in a time that does not depend on where the first
/// difference is, so that the token cannot be guessed byte by byte from response times.
pub fn same_token(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bearer_headers_only() {
        for (header, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            (" BEARER abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(header), want, "{header:?}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", "abc"));
    }
}
