//! The webhook queue: durable group-committed intake (duplicates decided in memory), and the
//! worker that enriches events under a lease and hands them to the delivery dispatcher.

mod batch;
pub mod dedupe;
pub mod ingest;
mod reload;
pub mod worker;
