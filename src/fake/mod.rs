//! Fake providers: real HTTP servers that enforce their providers' documents, for `demo`,
//! `fake-snapinspect` and the tests.

pub mod harness;
pub mod receiver;
pub mod snapinspect;
pub mod token_server;

use std::net::TcpListener;

use actix_web::{dev::Server, web, App, HttpServer};

/// Serve one fake's routes at the root of its own server on `listener` (port 0 in tests).
pub fn serve<F>(configure: F, listener: TcpListener) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static,
{
    Ok(HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run())
}
