//! Delivery to endpoints at the receivers' speed: endpoint value types, the retry policy, the
//! pipelined dispatcher with its group-committed results, and the operational events.

pub mod clients;
pub mod dispatcher;
pub mod manage;
pub mod policy;
pub mod types;
