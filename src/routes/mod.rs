//! HTTP route groups; each exposes `configure` and `startup` wires them together.

pub mod assets;
pub mod connect;
pub mod health;
