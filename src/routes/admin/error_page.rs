//! Errors inside the console stay in the console: the same message, in the console's layout with
//! its navigation, and a way back to the section (or to sign-in when no one is signed in).

use actix_session::SessionExt;
use actix_web::{
    body::{BoxBody, MessageBody},
    dev::ServiceResponse,
    http::{header, StatusCode},
    middleware::ErrorHandlerResponse,
    HttpRequest, HttpResponse,
};
use askama::Template;

use crate::error::AppError;

#[derive(Template)]
#[template(path = "admin/error.html")]
struct AdminErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    signed_in: bool,
    back: &'a str,
    back_label: &'a str,
}

/// The console section a path belongs to, as a link and its name.
fn section(path: &str) -> (&'static str, &'static str) {
    let below = path.strip_prefix("/admin/").unwrap_or_default();
    match below.split('/').next().unwrap_or_default() {
        "connections" => ("/admin/connections", "connections"),
        "events" => ("/admin/events", "events"),
        "endpoints" => ("/admin/endpoints", "endpoints"),
        "api-keys" => ("/admin/api-keys", "API keys"),
        "audit" => ("/admin/audit", "the audit log"),
        _ => ("/admin", "the dashboard"),
    }
}

/// What a 405 says: this address exists, but is not opened this way (a form's button posts to it).
fn wrong_method(req: &HttpRequest) -> String {
    format!(
        "This console address does not take a {} request: it is used by a button on one of the console's pages. \
         Start from the page that has the button.",
        req.method()
    )
}

/// For `ErrorHandlers::default_handler` on `/admin`: an [`AppError`] page is drawn again in the
/// console's layout, keeping its status and headers (`Retry-After`), and so is actix's empty 405
/// for a known address asked with the wrong method; anything else passes.
pub fn render<B: MessageBody + 'static>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (title, message) = match res.response().error().and_then(|e| e.as_error::<AppError>()) {
        Some(error) => (error.title(), error.public_message()),
        // actix answers a known address asked with another method with an empty 405 of its own.
        None if res.status() == StatusCode::METHOD_NOT_ALLOWED => ("Not this way", wrong_method(res.request())),
        None => return Ok(ErrorHandlerResponse::Response(res.map_into_left_body())),
    };
    let signed_in = res.request().get_session().get::<i64>(super::ADMIN_ID).ok().flatten().is_some();
    let (back, back_label) = section(res.request().path());
    let page = AdminErrorPage { title, message: &message, signed_in, back, back_label };
    let Ok(body) = page.render() else {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(old.status());
    for (name, value) in old.headers() {
        if name != header::CONTENT_LENGTH {
            new.append_header((name.clone(), value.clone()));
        }
    }
    if !old.headers().contains_key(header::CONTENT_TYPE) {
        new.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"));
    }
    let new: HttpResponse<BoxBody> = new.body(body);
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, new).map_into_right_body()))
}

#[cfg(test)]
mod tests {
    use super::section;

    #[test]
    fn each_path_goes_back_to_its_own_section() {
        assert_eq!(section("/admin/events/evt_x").0, "/admin/events");
        assert_eq!(section("/admin/connections/con_x/edit").0, "/admin/connections");
        assert_eq!(section("/admin/api-keys").0, "/admin/api-keys");
        assert_eq!(section("/admin/audit").0, "/admin/audit");
        assert_eq!(section("/admin").0, "/admin");
        assert_eq!(section("/admin/login").0, "/admin");
    }
}
