//! What every response carries (a Content-Security-Policy without inline script, no sniffing, no framing, no referrer,
//! HSTS when we are reached over https), and the plain-http listener that only redirects to https.

use actix_web::{
    dev::Server,
    http::header::{self, HeaderName, HeaderValue},
    middleware::DefaultHeaders,
    web, App, HttpRequest, HttpResponse, HttpServer,
};

/// The headers, added to every response that does not set its own.
pub fn security(https: bool) -> DefaultHeaders {
    let mut h = DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, crate::routes::CSP))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((HeaderName::from_static("cross-origin-opener-policy"), "same-origin"))
        .add((HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=(), payment=()"));
    if https {
        // Two years; browsers then refuse plain http for this host.
        h = h.add((header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains")));
    }
    h
}

/// A server on `listener` that answers everything with a permanent redirect to the same path
/// under `public_url` (https).
pub fn redirect_server(listener: std::net::TcpListener, public_url: url::Url) -> std::io::Result<Server> {
    let base = public_url.as_str().trim_end_matches('/').to_owned();
    Ok(HttpServer::new(move || {
        let base = base.clone();
        App::new().default_service(web::to(move |req: HttpRequest| {
            let target = format!("{base}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            async move { HttpResponse::PermanentRedirect().insert_header((header::LOCATION, target)).finish() }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
