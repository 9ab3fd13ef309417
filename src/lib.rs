//! connect-hub: a self-hosted integration hub that links an organisation's accounts on
//! third-party platforms (SnapInspect first) and keeps their tokens encrypted and fresh.
#![forbid(unsafe_code)]

pub mod auth;
pub mod brand;
pub mod checks;
pub mod cli;
pub mod client_credentials;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod proxy;
pub mod queue;
pub mod routes;
pub mod snapinspect;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod tokens;
