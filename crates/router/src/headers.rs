//! The headers a proxy changes: hop-by-hop ones are its own and go, forwarding ones
//! tell the backend about the client, and every request gets an id.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request asks to switch protocols (`Connection: upgrade` and `Upgrade`),
/// as a WebSocket handshake does.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// Removes the hop-by-hop headers (RFC 9110, section 7.6.1): those a `Connection`
/// header names and the fixed ones. For an upgrade, `Upgrade` is passed on with
/// `Connection: upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::try_from(token.trim()).ok())
            .filter(|name| !(upgrade && name == UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Adds the client's address to `X-Forwarded-For` (after those of proxies before this
/// one), and `X-Forwarded-Proto` and `X-Forwarded-Host` unless a proxy before this one
/// set them.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue, host: &HeaderValue) {
    match headers.get(X_FORWARDED_FOR) {
        Some(before) => {
            let mut joined = Vec::with_capacity(before.len() + 2 + client_ip.len());
            joined.extend_from_slice(before.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, client_ip.clone());
        }
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

thread_local! {
    /// This thread's next request id: a random start, then counting, so ids are unique
    /// without a shared counter.
    static NEXT_ID: Cell<(u64, u64)> = Cell::new((random(), 0));
}

fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// A new request id: 32 hex digits.
pub(crate) fn request_id() -> HeaderValue {
    let (prefix, n) = NEXT_ID.with(|next| {
        let (prefix, n) = next.get();
        next.set((prefix, n.wrapping_add(1)));
        (prefix, n)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        let shift = (15 - (i % 16)) * 4;
        *byte = HEX[((word >> shift) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits make a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<String> {
        let mut names: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["accept: */*"]);

        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(
            names(&map),
            [
                "connection: upgrade",
                "sec-websocket-key: k",
                "upgrade: websocket"
            ]
        );
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn forwarding_headers_are_added_or_extended() {
        let ip = HeaderValue::from_static("10.1.1.1");
        let host = HeaderValue::from_static("web.test");
        let mut map = HeaderMap::new();
        add_forwarded(&mut map, &ip, &host);
        assert_eq!(
            names(&map),
            [
                "x-forwarded-for: 10.1.1.1",
                "x-forwarded-host: web.test",
                "x-forwarded-proto: http"
            ]
        );
        let mut map = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer.test"),
        ]);
        add_forwarded(&mut map, &ip, &host);
        assert_eq!(
            names(&map),
            [
                "x-forwarded-for: 1.2.3.4, 10.1.1.1",
                "x-forwarded-host: outer.test",
                "x-forwarded-proto: https"
            ]
        );
    }

    #[test]
    fn request_ids_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
