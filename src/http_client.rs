//! The one outbound HTTP client: rustls, connect and total timeouts, and no redirects (a provider
//! that redirects a token request is misconfigured, and following it could leak credentials).

use std::time::Duration;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Build the shared client. Clone it freely: clones share one connection pool.
pub fn build() -> reqwest::Client {
    build_with(CONNECT_TIMEOUT, TOTAL_TIMEOUT)
}

pub fn build_with(connect: Duration, total: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("connect-hub/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend and settings are fixed at compile time")
}

/// A provider's error response, trimmed for a log line or an admin page: the first 200 characters.
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}
