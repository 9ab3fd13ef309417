//! HTTP route groups; each exposes `configure` and `startup` wires them together.

pub mod admin;
pub mod api;
pub mod assets;
pub mod connect;
pub mod health;
pub mod webhooks;

use crate::error::AppError;

/// The one 404 for unknown addresses (and wrong webhook secrets, which must look the same).
pub fn not_found() -> AppError {
    AppError::not_found("There is no page at this address. Start from the home page.")
}
