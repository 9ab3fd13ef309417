//! HTTP route groups, each exposing `configure` for `startup` to wire, and what they share: the
//! client's address and limit key, the 429 and 404 answers, and the body limit.

pub mod admin;
pub mod api;
pub mod assets;
pub mod connect;
pub mod health;
pub mod webhooks;

use std::{net::IpAddr, time::Duration};

use actix_web::{web, HttpRequest};

use crate::{error::AppError, state::AppState};

/// The client's address, for limits and logs: the TCP peer, or, when the peer is a trusted proxy
/// (`TRUSTED_PROXIES`), the nearest address in `X-Forwarded-For` that is not one.
pub fn client_address(req: &HttpRequest) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else { return "unknown".into() };
    let trusted = req.app_data::<web::Data<AppState>>().map(|s| s.settings.trusted_proxies.as_slice()).unwrap_or(&[]);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer.to_string();
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    forwarded.iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(&peer).to_string()
}

/// The key a client's limits are counted under: its IPv4 address, or its IPv6 /64 (one
/// subscriber usually holds a whole /64, so counting single IPv6 addresses would be no limit).
pub fn limit_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        // `unknown`, or whatever else: bounded, never a key of its own per caller.
        Err(_) => address.chars().take(64).collect(),
    }
}

/// `limit_key` of the request's client address.
pub fn client_limit_key(req: &HttpRequest) -> String {
    limit_key(&client_address(req))
}

/// A 429 that says how long to wait.
pub fn too_many(code: &'static str, what: &str, wait: Duration) -> AppError {
    let secs = wait.as_secs().max(1);
    AppError::TooManyRequests {
        code,
        message: format!("{what}. Wait {secs} seconds, then try again."),
        retry_after_secs: secs,
    }
}

/// Our pages load only our own stylesheet and post only to ourselves; nothing may frame them.
/// Every response carries it unless it sets its own (`startup::headers`).
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The largest request body any route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The one 404 for unknown addresses (and wrong webhook secrets, which must look the same).
pub fn not_found() -> AppError {
    AppError::not_found("There is no page at this address. Start from the home page.")
}

#[cfg(test)]
mod tests {
    use super::limit_key;

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        assert_eq!(limit_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(limit_key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_ne!(limit_key("2001:db8:1:3::1"), limit_key("2001:db8:1:2::1"));
        assert_eq!(limit_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(limit_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(limit_key("unknown"), "unknown");
        assert_eq!(limit_key(&"x".repeat(100)).len(), 64);
    }
}
