//! HTTP route groups; each exposes `configure` and `startup` wires them together.

pub mod admin;
pub mod api;
pub mod assets;
pub mod connect;
pub mod health;
pub mod webhooks;

use std::{net::IpAddr, time::Duration};

use actix_web::{web, HttpRequest};

use crate::{error::AppError, startup::AppState};

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

/// A 429 that says how long to wait.
pub fn too_many(code: &'static str, what: &str, wait: Duration) -> AppError {
    let secs = wait.as_secs().max(1);
    AppError::TooManyRequests {
        code,
        message: format!("{what}. Wait {secs} seconds, then try again."),
        retry_after_secs: secs,
    }
}

/// The one 404 for unknown addresses (and wrong webhook secrets, which must look the same).
pub fn not_found() -> AppError {
    AppError::not_found("There is no page at this address. Start from the home page.")
}
