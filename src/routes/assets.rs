//! What pages load beside them: our stylesheet (compiled into the binary, so `connect-hub` stays one
//! file), and the organisation's brand for end-user pages (its logo, its colour as a stylesheet).

use actix_web::{http::header, web, HttpResponse};

use crate::state::AppState;

const STYLE_CSS: &str = include_str!("../../static/style.css");
/// A logo holds no script and loads nothing: if a browser opens it directly, it still runs nothing.
const LOGO_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/static/style.css", web::get().to(style))
        .route("/brand/logo", web::get().to(logo))
        .route("/brand/style.css", web::get().to(brand_style));
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE_CSS)
}

async fn logo(state: web::Data<AppState>) -> HttpResponse {
    match &state.brand.logo {
        Some(logo) => HttpResponse::Ok()
            .content_type(logo.content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .insert_header((header::CONTENT_SECURITY_POLICY, LOGO_CSP))
            .body(logo.bytes.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// The brand colour as a stylesheet, because the CSP allows only our own stylesheets
/// (`style-src 'self'`), not inline styles. The colour was checked to be `#rrggbb`.
async fn brand_style(state: web::Data<AppState>) -> HttpResponse {
    let css = match &state.brand.color {
        Some(c) => format!(
            ":root {{ --brand: {c}; }}\n.button.primary {{ background: {c}; border-color: {c}; }}\n\
             header.site {{ border-bottom: 4px solid {c}; }}\n"
        ),
        None => String::new(),
    };
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(css)
}
