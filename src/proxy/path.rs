//! The upstream URL of a proxied request: the connection's API base, then the caller's path and
//! query, checked so that nothing in them can leave the base's host or its path.

use url::Url;

/// Why a path was refused (400 `bad_path`); says what is wrong, never echoing the whole path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPath(pub &'static str);

/// `base` (ending in `/`) + `raw_path` (as it arrived, still percent-encoded, without a leading
/// `/`) + `?query`. Every form that could move the request off the base is refused: `.` and `..`
/// segments (plain or encoded), encoded slashes and backslashes, empty segments (`//other.host`,
/// `http://…`), a scheme-like first segment, `@`, control characters, and double encoding.
pub fn upstream_url(base: &Url, raw_path: &str, query: Option<&str>) -> Result<Url, BadPath> {
    check_path(raw_path)?;
    if let Some(q) = query {
        if q.bytes().any(|b| b.is_ascii_control() || b == b'#' || !b.is_ascii()) {
            return Err(BadPath("the query string holds a control character"));
        }
    }
    let mut text = String::with_capacity(base.as_str().len() + raw_path.len() + query.map_or(0, |q| q.len() + 1));
    text.push_str(base.as_str());
    text.push_str(raw_path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        text.push('?');
        text.push_str(q);
    }
    let url = Url::parse(&text).map_err(|_| BadPath("the path does not make a URL below the connection's API"))?;
    // Belt and braces: whatever the checks above missed, the URL must still be below the base.
    if !stays_below(base, &url, raw_path) {
        return Err(BadPath("the path leaves the connection's API"));
    }
    Ok(url)
}

/// Whether `url` has the base's origin, no user, and exactly the base's path followed by `raw_path`.
fn stays_below(base: &Url, url: &Url, raw_path: &str) -> bool {
    let expected_path = format!("{}{raw_path}", base.path());
    url.origin() == base.origin() && url.path() == expected_path && url.username().is_empty()
}

fn check_path(raw: &str) -> Result<(), BadPath> {
    // One trailing slash is part of a path (`folders/`); any other empty segment is not.
    let raw = raw.strip_suffix('/').filter(|r| !r.is_empty()).unwrap_or(raw);
    if raw.is_empty() {
        return Ok(());
    }
    for (i, segment) in raw.split('/').enumerate() {
        if segment.is_empty() {
            return Err(BadPath("the path has an empty segment (// or a leading /)"));
        }
        let decoded = decode(segment)?;
        if decoded == "." || decoded == ".." {
            return Err(BadPath("the path has a . or .. segment"));
        }
        if i == 0 && decoded.contains(':') {
            return Err(BadPath("the path starts like a URL (scheme:)"));
        }
        if decoded.contains(['/', '\\', '@', '%']) {
            return Err(BadPath("the path holds an encoded slash, a backslash, an @ or a double encoding"));
        }
        if decoded.chars().any(char::is_control) {
            return Err(BadPath("the path holds a control character"));
        }
    }
    Ok(())
}

/// Percent-decode one segment; a `%` not followed by two hex digits is refused.
fn decode(segment: &str) -> Result<String, BadPath> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let value =
                hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(BadPath("the path has a broken % escape"))?;
            out.push(value);
            i += 3;
        } else {
            if b.is_ascii_control() || !b.is_ascii() {
                return Err(BadPath("the path holds a control character or a byte that is not ASCII"));
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadPath("the path's escapes are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_refuses_on_its_own_with_its_reason() {
        let reason = |p: &str| check_path(p).unwrap_err().0;
        assert_eq!(reason("a/../b"), "the path has a . or .. segment");
        assert_eq!(reason("a/./b"), "the path has a . or .. segment");
        assert_eq!(reason("a/%2e%2e"), "the path has a . or .. segment");
        assert_eq!(reason("a//b"), "the path has an empty segment (// or a leading /)");
        assert_eq!(reason("/a"), "the path has an empty segment (// or a leading /)");
        assert_eq!(reason("http:x"), "the path starts like a URL (scheme:)");
        assert!(check_path("a/http:x").is_ok(), "a colon after the first segment is a path");
        for p in ["a%2fb", "a%5cb", "a%40b", "a%25b"] {
            assert_eq!(reason(p), "the path holds an encoded slash, a backslash, an @ or a double encoding", "{p}");
        }
        assert_eq!(reason("a%0ab"), "the path holds a control character");
        assert_eq!(reason("a\tb"), "the path holds a control character or a byte that is not ASCII");
        assert_eq!(
            reason("café"),
            "the path holds a control character or a byte that is not ASCII",
            "raw, not encoded"
        );
        assert_eq!(reason("a%zz"), "the path has a broken % escape");
        assert_eq!(reason("a%c3"), "the path's escapes are not UTF-8");
        assert!(check_path("").is_ok() && check_path("a/").is_ok() && check_path("caf%c3%a9").is_ok());
        // The last check, on the parsed URL, without the first ones in front of it.
        let base = base();
        let below = |u: &str, p: &str| stays_below(&base, &Url::parse(u).unwrap(), p);
        assert!(below("https://api.example.test/v3/a/b", "a/b"));
        assert!(!below("https://other.example/v3/a/b", "a/b"), "another host");
        assert!(!below("http://api.example.test/v3/a/b", "a/b"), "another scheme");
        assert!(!below("https://api.example.test:8443/v3/a/b", "a/b"), "another port");
        assert!(!below("https://api.example.test/v3/b", "a/../b"), "a path the parser changed");
        assert!(!below("https://api.example.test/admin", "admin"), "off the base's path");
        assert!(!below("https://u@api.example.test/v3/a", "a"), "a user");
    }

    fn base() -> Url {
        Url::parse("https://api.example.test/v3/").unwrap()
    }

    fn ok(path: &str, query: Option<&str>) -> String {
        upstream_url(&base(), path, query).unwrap().to_string()
    }

    #[test]
    fn paths_and_queries_land_below_the_base() {
        assert_eq!(ok("", None), "https://api.example.test/v3/");
        assert_eq!(ok("user", None), "https://api.example.test/v3/user");
        assert_eq!(ok("inspections/42", Some("a=1&b=%20x")), "https://api.example.test/v3/inspections/42?a=1&b=%20x");
        assert_eq!(ok("files/report%20final.pdf", None), "https://api.example.test/v3/files/report%20final.pdf");
        assert_eq!(ok("a/b/", None), "https://api.example.test/v3/a/b/", "one trailing slash is a path");
        assert_eq!(ok("a.json", Some("")), "https://api.example.test/v3/a.json");
        assert_eq!(ok("a%2ejson", None), "https://api.example.test/v3/a%2ejson", "an encoded dot inside a name");
    }

    #[test]
    fn every_way_out_is_refused() {
        for path in [
            "..",
            "../admin",
            "a/../../admin",
            "a/./b",
            ".",
            "%2e%2e/admin",
            "%2E%2E/admin",
            ".%2e/admin",
            "%2e/x",
            "a%2f..%2fadmin",
            "a%2Fb",
            "a\\b",
            "a%5cb",
            "..%5c..%5cadmin",
            "/other.host/x",
            "//other.host/x",
            "a//b",
            "http://other.host/x",
            "https:other.host",
            "user@other.host",
            "a%40b",
            "a%00b",
            "a%0d%0aHost:%20x",
            "a\u{1}b",
            "%252e%252e/admin",
            "a%zz",
            "a%2",
            "a%c3",
            "a//",
        ] {
            assert!(upstream_url(&base(), path, None).is_err(), "{path:?} must be refused");
        }
        assert!(upstream_url(&base(), "x", Some("a=1#frag")).is_err());
        assert!(upstream_url(&base(), "x", Some("ä=1")).is_err(), "a query is ASCII");
        assert!(upstream_url(&base(), "x", Some("a=\u{7f}")).is_err());
    }
}
