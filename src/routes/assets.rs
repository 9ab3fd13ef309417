//! The stylesheet, compiled into the binary so `connect-hub` stays one file.

use actix_web::{http::header, web, HttpResponse};

const STYLE_CSS: &str = include_str!("../../static/style.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/static/style.css", web::get().to(style));
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE_CSS)
}
