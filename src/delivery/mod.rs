//! Delivery to endpoints at the receivers' speed: the pipelined dispatcher with its group-committed
//! results, signing and sending (Standard Webhooks), the retry policy, and managing endpoints.

pub mod clients;
pub mod dispatcher;
pub mod forward;
pub mod manage;
pub mod policy;
mod slots;
mod targets;
