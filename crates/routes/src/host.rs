//! Hostnames: how a request's `Host` is normalized and matched against exact and
//! wildcard routes.

use std::borrow::Cow;
use std::collections::HashMap;

/// The longest DNS name.
const MAX_HOSTNAME: usize = 253;

/// Values by hostname, found by a request's `Host`: the exact hostname first, else the
/// wildcard (`*.example.com`) of the longest matching suffix. Keys are kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMap<V> {
    exact: HashMap<Box<str>, V>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<Box<str>, V>,
}

impl<V> Default for HostMap<V> {
    fn default() -> HostMap<V> {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V> HostMap<V> {
    pub fn new() -> HostMap<V> {
        HostMap::default()
    }

    /// Sets the value of a route's hostname (`web.example.com` or `*.example.com`, in
    /// any case); returns the one it replaces.
    pub fn insert(&mut self, hostname: &str, value: V) -> Option<V> {
        let hostname = hostname.to_ascii_lowercase();
        match hostname.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.into(), value),
            None => self.exact.insert(hostname.into(), value),
        }
    }

    /// Removes a route's hostname, spelled as for [`HostMap::insert`].
    pub fn remove(&mut self, hostname: &str) -> Option<V> {
        let hostname = hostname.to_ascii_lowercase();
        match hostname.strip_prefix("*.") {
            Some(suffix) => self.wildcard.remove(suffix),
            None => self.exact.remove(hostname.as_str()),
        }
    }

    /// The value of a route's hostname exactly as given (no wildcard matching).
    pub fn get(&self, hostname: &str) -> Option<&V> {
        let hostname = lowercase(hostname);
        match hostname.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get(suffix),
            None => self.exact.get(hostname.as_ref()),
        }
    }

    /// The value that serves a request for `host`, as a `Host` header or an
    /// `:authority` gives it: any case, maybe with a port or a trailing dot.
    pub fn lookup(&self, host: &str) -> Option<&V> {
        let host = normalize_host(host)?;
        if let Some(value) = self.exact.get(host.as_ref()) {
            return Some(value);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host.as_ref();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(value) = self.wildcard.get(suffix) {
                return Some(value);
            }
            rest = suffix;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Every hostname (wildcards with their `*.`) and its value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, &V)> {
        let exact = self
            .exact
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v));
        let wildcard = self
            .wildcard
            .iter()
            .map(|(k, v)| (Cow::Owned(format!("*.{k}")), v));
        exact.chain(wildcard)
    }
}

/// A request's host as routes are matched against it: without the port, without a
/// trailing dot, lowercase. `None` when nothing is left or it is longer than a DNS
/// name may be. Borrows unless the host has capital letters.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let host = strip_port(raw.trim());
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOSTNAME {
        return None;
    }
    Some(lowercase(host))
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: the port, if any, follows the bracket.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        let cases = [
            ("web.test", Some("web.test")),
            ("Web.TEST", Some("web.test")),
            ("web.test:8080", Some("web.test")),
            ("web.test:", Some("web.test")),
            ("web.test.", Some("web.test")),
            (" web.test ", Some("web.test")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            (":80", None),
            (".", None),
        ];
        for (raw, expect) in cases {
            assert_eq!(normalize_host(raw).as_deref(), expect, "{raw:?}");
        }
        let long = "a".repeat(MAX_HOSTNAME + 1);
        assert_eq!(normalize_host(&long), None);
    }

    #[test]
    fn exact_wins_then_the_longest_wildcard() {
        let mut map = HostMap::new();
        map.insert("web.example.com", "exact");
        map.insert("*.example.com", "wildcard");
        map.insert("*.deep.example.com", "deeper");
        map.insert("*.COM", "tld");
        let cases = [
            ("web.example.com", Some("exact")),
            ("WEB.Example.com:80", Some("exact")),
            ("api.example.com", Some("wildcard")),
            ("a.b.example.com", Some("wildcard")),
            ("x.deep.example.com", Some("deeper")),
            ("deep.example.com", Some("wildcard")),
            // A wildcard does not match its own suffix.
            ("example.com", Some("tld")),
            ("com", None),
            ("example.org", None),
            ("", None),
        ];
        for (host, expect) in cases {
            assert_eq!(map.lookup(host).copied(), expect, "{host:?}");
        }
        assert_eq!(map.get("*.example.com"), Some(&"wildcard"));
        assert_eq!(map.get("api.example.com"), None);
        assert_eq!(map.remove("*.Example.com"), Some("wildcard"));
        assert_eq!(map.lookup("api.example.com"), Some(&"tld"));
        let mut names: Vec<String> = map.iter().map(|(k, _)| k.into_owned()).collect();
        names.sort();
        assert_eq!(names, ["*.com", "*.deep.example.com", "web.example.com"]);
    }
}
