//! Which headers cross the proxy: the caller's, less its credentials, the hop-by-hop ones and
//! anything that claims to come from a proxy or the hub; the upstream's, less cookies and the same.

use reqwest::header::{HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus the old `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The prefix of the hub's own headers: an upstream answer never carries one, so a caller can
/// always tell an answer the hub made from one it passed on.
pub const HUB_PREFIX: &str = "x-connect-hub-";

/// Whether a header is dropped in either direction: hop-by-hop (also those the `Connection`
/// header names) and the hub's own.
fn hop_or_hub(name: &HeaderName, connection_named: &[String]) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || n.starts_with(HUB_PREFIX) || connection_named.iter().any(|c| c == n)
}

/// The header names a `Connection` header lists (they are hop-by-hop too).
fn named_by_connection(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(reqwest::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The caller's headers as they go upstream. The hub puts in `Authorization` itself; the caller's
/// `Authorization` (its API key), `Cookie`, `Host`, `Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
/// `Expect` and `Content-Length` (the body's length is the transport's business) stay here.
pub fn upstream_request(from_caller: &HeaderMap) -> HeaderMap {
    let named = named_by_connection(from_caller);
    let mut out = HeaderMap::with_capacity(from_caller.len());
    for (name, value) in from_caller {
        let n = name.as_str();
        let dropped = hop_or_hub(name, &named)
            || matches!(
                n,
                "authorization" | "cookie" | "host" | "forwarded" | "x-real-ip" | "expect" | "content-length"
            )
            || n.starts_with("x-forwarded-");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's headers as they go back to the caller: all but hop-by-hop ones, `Set-Cookie`
/// (the caller has no session with the provider) and any that pose as the hub's own.
/// `Content-Length` is kept: the body is passed on byte for byte.
pub fn caller_response(from_upstream: &HeaderMap) -> HeaderMap {
    let named = named_by_connection(from_upstream);
    let mut out = HeaderMap::with_capacity(from_upstream.len());
    for (name, value) in from_upstream {
        if !(hop_or_hub(name, &named) || name == reqwest::header::SET_COOKIE) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    fn names(m: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_callers_credentials_and_hops_stay_behind() {
        let given = map(&[
            ("authorization", "Bearer chk_key"),
            ("cookie", "a=b"),
            ("host", "hub"),
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("x-connect-hub-error", "spoof"),
            ("expect", "100-continue"),
            ("content-length", "5"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
            ("accept", "text/plain"),
        ]);
        let out = upstream_request(&given);
        assert_eq!(names(&out), ["accept", "content-type", "x-request-id"]);
        assert_eq!(out.get_all("accept").iter().count(), 2, "repeated headers stay repeated");
    }

    #[test]
    fn the_upstreams_cookies_hops_and_pretend_hub_headers_stay_behind() {
        let given = map(&[
            ("set-cookie", "s=1"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("x-connect-hub-error", "needs_reconnect"),
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("retry-after", "30"),
            ("etag", "\"x\""),
        ]);
        assert_eq!(names(&caller_response(&given)), ["content-length", "content-type", "etag", "retry-after"]);
    }
}
