//! Integration tests: the real binary's library on port 0, a fresh SQLite file per test, and the
//! fake providers on their own ports, all over loopback HTTP. The tests that start the binary
//! itself as a process are under `process/`.

mod admin;
mod api_errors;
mod checks;
mod connect;
mod connect_sessions;
mod contract;
mod credentials;
mod delivery;
mod encryption;
mod endpoints_in_flight;
mod endpoints_max;
mod endpoints_ui;
mod event_schemas;
mod exchange;
mod fakes;
mod forms;
mod helpers;
mod https;
mod leftovers;
mod limits;
mod metrics;
mod outbound;
mod outside_numbers;
mod outside_text;
mod process;
mod proxy;
mod signin;
mod store_faults;
mod stores;
mod token_api;
mod webhooks;
mod worker;
