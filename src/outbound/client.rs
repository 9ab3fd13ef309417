//! The outbound HTTP client: rustls, connect and total timeouts, no redirects (following one could
//! leak credentials), answers read with a cap, and errors described without secrets.

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::text::{escaped, without_nul};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A client with the default timeouts and the usual roots. Clone it freely: clones share one
/// connection pool.
pub fn build() -> reqwest::Client {
    build_with(TOTAL_TIMEOUT, &[]).expect("the TLS backend and settings are fixed at compile time")
}

/// A client with this total timeout (the connect timeout is at most 5 s) that also trusts `roots`.
pub fn build_with(total: Duration, roots: &[reqwest::Certificate]) -> anyhow::Result<reqwest::Client> {
    builder(total, roots).build().context("building the HTTP client")
}

/// The settings every outbound client shares (connect timeout, no redirects, our name, the extra
/// roots); the guarded client adds its own on top.
fn common(connect: Duration, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(connect))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("connect-hub/", env!("CARGO_PKG_VERSION")));
    roots.iter().fold(builder, |b, root| b.add_root_certificate(root.clone()))
}

/// A client whose every call ends within `total`.
pub(crate) fn builder(total: Duration, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    common(total, roots).timeout(total)
}

/// A client for long streams (the API proxy): no total timeout, but every read must make progress
/// within `idle`, and connecting takes at most 5 s.
pub fn streaming_builder(idle: Duration, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    common(idle, roots).read_timeout(idle)
}

/// A provider's error response, trimmed for a log line or an admin page: the first 200 characters,
/// on one line, with any other control character written out (it is stored, and printed).
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let one_line = escaped(&one_line);
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line.into_owned()
    }
}

/// Replace any secret that appears in `text` with `***`.
pub fn redact(text: &str, secrets: &[&SecretString]) -> String {
    secrets.iter().fold(text.to_owned(), |acc, s| {
        let s = s.expose_secret();
        if s.len() >= 4 {
            acc.replace(s, "***")
        } else {
            acc
        }
    })
}

/// The most a token or API answer may hold: far above any real one.
pub const ANSWER_CAP: usize = MIB;
/// The most read of an error answer: enough for a JSON error or the start of an HTML page.
pub const EXCERPT_CAP: usize = 4 * KIB;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The answer is longer than the cap; it was not read past it.
    #[error("the answer from {from} is larger than {}", size(*cap))]
    TooLarge { from: String, cap: usize },
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

/// Read an answer of at most `cap` bytes, chunk by chunk, and stop as soon as it is longer (a
/// `Content-Length` above the cap is refused before reading). `from` names the sender in the error.
pub async fn read_capped(mut res: reqwest::Response, cap: usize, from: &str) -> Result<String, BodyError> {
    let too_large = || BodyError::TooLarge { from: from.to_owned(), cap };
    if res.content_length().is_some_and(|len| len > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The first `cap` bytes of an (error) answer, for a message or an attempt's record: the rest is
/// never read, a broken connection just ends the excerpt, and a NUL is written out (see
/// [`without_nul`]), so any answer can be stored.
pub async fn read_excerpt(mut res: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while body.len() < cap {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    without_nul(&String::from_utf8_lossy(&body)).into_owned()
}

/// The longest `Retry-After` anyone here honours; callers cap it again at their own backoff's cap.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`] however large the number sent (the
/// HTTP-date form is rare for APIs and treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than a u64 holds is still a number of seconds: the most we honour.
    let secs = raw.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Describe a transport failure without the URL's query (reqwest's Display includes the URL).
pub fn describe_transport(e: &reqwest::Error) -> String {
    describe_request("the request", e)
}

/// The same, with the caller's name for the request as the subject, so a layer that knows what
/// the request was for says it once: "the token request to https://…/token could not connect".
pub fn describe_request(what: &str, e: &reqwest::Error) -> String {
    let verb = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broke off while reading the answer"
    } else {
        "failed"
    };
    match e.url() {
        Some(u) => format!("{what} to {}{} {verb}", u.origin().ascii_serialization(), u.path()),
        None => format!("{what} {verb}"),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
