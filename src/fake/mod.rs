//! Fake providers: real HTTP servers that enforce their providers' documents, for `demo`,
//! `fake-snapinspect` and the tests.

pub mod receiver;
pub mod snapinspect;
pub mod token_server;

use std::{collections::HashMap, net::TcpListener};

use actix_web::{dev::Server, http::header, web, App, HttpRequest, HttpServer};

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

/// Whether the request says its body is a form (`application/x-www-form-urlencoded`), as every
/// token endpoint these fakes stand for demands.
pub(crate) fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Parse a form or query, refusing repeated fields (a real server might take either copy).
pub(crate) fn fields(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` is repeated"));
        }
    }
    Ok(out)
}
