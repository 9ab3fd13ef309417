//! The API keeps the promises of its own OpenAPI document: a path the document lists, asked with
//! a method it does not, answers 405 with `Allow` (RFC 9110 §15.5.6); anything else unknown, 404.

use std::sync::LazyLock;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::{
    error::{ApiError, AppError},
    state::AppState,
};

/// The document, served at `/api/v1/openapi.json` and read here for its paths and methods.
pub const OPENAPI: &str = include_str!("../../../static/openapi.json");

/// `GET /api/v1/openapi.json`.
pub(super) async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document(&state.settings.connect_return_origins))
}

/// The document as this server answers it: a `return_url` may only start with one of
/// `CONNECT_RETURN_ORIGINS`, which a fixed document cannot say, so its schema gets a pattern of
/// exactly those origins, or is left out when there are none (any `return_url` is then refused).
pub fn document(origins: &[crate::domain::connect_session::ReturnOrigin]) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("static/openapi.json is valid JSON");
    let alternatives: Vec<String> = origins.iter().map(|o| escape_regex(&o.serialized())).collect();
    let pattern = format!("^({})(/[A-Za-z0-9._~/-]*)?$", alternatives.join("|"));
    restrict_return_urls(&mut doc, (!origins.is_empty()).then_some(pattern.as_str()));
    doc.to_string()
}

fn escape_regex(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '/' || c == ':' { vec![c] } else { vec!['\\', c] })
        .collect()
}

fn restrict_return_urls(v: &mut serde_json::Value, pattern: Option<&str>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get_mut("properties") {
                match pattern {
                    Some(p) => {
                        if let Some(serde_json::Value::Object(r)) = props.get_mut("return_url") {
                            r.insert("pattern".into(), json!(p));
                            r.remove("format");
                        }
                    }
                    None => {
                        props.remove("return_url");
                    }
                }
            }
            map.values_mut().for_each(|x| restrict_return_urls(x, pattern));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|x| restrict_return_urls(x, pattern)),
        _ => {}
    }
}

/// Where the document's paths are mounted (its `servers` URL).
const BASE: &str = "/api/v1";

/// Each path template of the document, split into segments, with its methods in upper case.
static PATHS: LazyLock<Vec<(Vec<String>, Vec<String>)>> = LazyLock::new(|| paths_of(OPENAPI));

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn paths_of(document: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let doc: serde_json::Value = serde_json::from_str(document).expect("static/openapi.json is valid JSON");
    let Some(paths) = doc["paths"].as_object() else { return Vec::new() };
    paths
        .iter()
        .map(|(template, item)| {
            let methods = METHODS.iter().filter(|m| item.get(**m).is_some()).map(|m| m.to_ascii_uppercase()).collect();
            (template.split('/').map(str::to_owned).collect(), methods)
        })
        .collect()
}

/// The methods the document declares for `path` (below `/api/v1`), if it lists the path at all.
/// A `{parameter}` segment matches any one non-empty segment, as the router's does.
fn declared_methods<'a>(paths: &'a [(Vec<String>, Vec<String>)], path: &str) -> Option<&'a [String]> {
    let segments: Vec<&str> = path.split('/').collect();
    paths
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    if t.starts_with('{') && t.ends_with('}') {
                        !s.is_empty()
                    } else {
                        t == s
                    }
                })
        })
        .map(|(_, methods)| methods.as_slice())
}

/// The answer for whatever no API route took: 405 with `Allow` for a documented path, else 404.
pub async fn fallback(req: HttpRequest) -> HttpResponse {
    let below = req.path().strip_prefix(BASE).unwrap_or_default();
    match declared_methods(&PATHS, below) {
        Some(methods) => {
            let allow = methods.join(", ");
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, allow.clone()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((crate::error::ERROR_HEADER, "method_not_allowed"))
                .json(json!({
                    "error": "method_not_allowed",
                    "message": format!("{} is not offered here; this path answers {allow}", req.method()),
                }))
        }
        None => actix_web::ResponseError::error_response(&ApiError(AppError::not_found(
            "no such API route: see /api/v1/openapi.json",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"paths": {
        "/things": {"get": {}, "post": {}},
        "/things/{id}/token": {"get": {}, "parameters": []}
    }}"#;

    #[test]
    fn a_documented_path_gives_its_methods_and_parameters_match_one_segment() {
        let paths = paths_of(DOC);
        assert_eq!(declared_methods(&paths, "/things"), Some(&["GET".to_owned(), "POST".to_owned()][..]));
        assert_eq!(declared_methods(&paths, "/things/abc/token"), Some(&["GET".to_owned()][..]));
        assert_eq!(declared_methods(&paths, "/things//token"), None, "an empty segment is no id");
        assert_eq!(declared_methods(&paths, "/things/a/b/token"), None);
        assert_eq!(declared_methods(&paths, "/things/abc/tokens"), None);
        assert_eq!(declared_methods(&paths, "/thing"), None);
        assert_eq!(declared_methods(&paths, "/things/abc"), None);
    }

    #[test]
    fn the_served_document_lists_the_token_operations() {
        assert_eq!(declared_methods(&PATHS, "/connections"), Some(&["GET".to_owned()][..]));
        assert_eq!(declared_methods(&PATHS, "/connections/x/refresh"), Some(&["POST".to_owned()][..]));
    }
}
