//! The webhook queue: durable group-committed intake, the worker that processes events under a
//! lease, and signed forwarding (Standard Webhooks).

pub mod dedupe;
pub mod forward;
pub mod ingest;
pub mod worker;
