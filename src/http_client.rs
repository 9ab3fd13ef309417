//! The one outbound HTTP client: rustls, connect and total timeouts, and no redirects (a provider
//! that redirects a token request is misconfigured, and following it could leak credentials).

use std::{path::Path, time::Duration};

use anyhow::Context;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A client with the default timeouts and the usual roots. Clone it freely: clones share one
/// connection pool.
pub fn build() -> reqwest::Client {
    build_with(TOTAL_TIMEOUT, &[]).expect("the TLS backend and settings are fixed at compile time")
}

/// A client with this total timeout (the connect timeout is at most 5 s) that also trusts `roots`.
pub fn build_with(total: Duration, roots: &[reqwest::Certificate]) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(total))
        .timeout(total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("connect-hub/", env!("CARGO_PKG_VERSION")));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder.build().context("building the HTTP client")
}

/// The certificates in a PEM file, to trust for outbound calls (`OUTBOUND_CA_FILE`).
pub fn read_roots(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let roots =
        reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("{} is not PEM", path.display()))?;
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    Ok(roots)
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
