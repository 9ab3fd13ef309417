//! The API's one reading of a request body: JSON parsed into the operation's type, any problem a
//! 400 `bad_json` in our words (field, line, column), and one JSON 413 `body_too_large` past 64 KiB.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::header,
    middleware::Next,
    Error, ResponseError,
};
use serde::de::DeserializeOwned;

use crate::{
    error::{ApiError, AppError, JsonProblem},
    routes::BODY_LIMIT,
};

pub(super) fn too_large() -> ApiError {
    ApiError(AppError::PayloadTooLarge {
        code: "body_too_large",
        message: format!("the body is larger than {} KiB, the most any API request may send", BODY_LIMIT / 1024),
    })
}

/// The body as the operation's JSON object; an empty body is a 400 too.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_json(JsonProblem {
            message: "the body is empty: this operation takes a JSON object (see /api/v1/openapi.json)".into(),
            ..Default::default()
        }));
    }
    // Every body the API takes is an object; serde would also read a struct from a list.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad_json(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => JsonProblem { message: "the body must be a JSON object {…}".into(), ..Default::default() },
            Err(e) => describe(body, &e),
        }));
    }
    serde_json::from_slice(body).map_err(|e| bad_json(describe(body, &e)))
}

/// The same, where no body (or only white space) means every field left out.
pub(super) fn parse_json_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

fn bad_json(p: JsonProblem) -> ApiError {
    ApiError(AppError::BadJson(p))
}

/// What serde found, said for the developer reading it: which field, where, and what it wants.
/// serde's own sentence names Rust types (`struct NewEndpointBody`, `a sequence`), so it is not shown.
fn describe(body: &[u8], e: &serde_json::Error) -> JsonProblem {
    use serde_json::error::Category;
    let (line, column) = (Some(e.line()).filter(|l| *l > 0), Some(e.column()).filter(|c| *c > 0));
    let at = match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        _ => String::new(),
    };
    let raw = e.to_string();
    // serde_json appends " at line L column C"; the rest is the message.
    let text = raw.rsplit_once(" at line ").map_or(raw.as_str(), |(m, _)| m);
    let quoted = |prefix: &str| text.strip_prefix(prefix).and_then(|r| r.split('`').next()).map(str::to_owned);
    let (message, field) = match e.classify() {
        Category::Eof => (format!("the body ends before its JSON is complete{at}"), None),
        Category::Syntax | Category::Io => (format!("the body is not valid JSON{at}"), None),
        Category::Data => {
            if let Some(f) = quoted("missing field `") {
                (format!("the field `{f}` is required"), Some(f))
            } else if let Some(f) = quoted("unknown field `") {
                (format!("this operation has no field `{f}` (see /api/v1/openapi.json for its fields)"), Some(f))
            } else {
                let path = field_at(body, line, column);
                match (text.strip_prefix("invalid type: "), &path) {
                    (Some(rest), None) if rest.contains("expected struct") || rest.contains("expected a map") => {
                        (format!("the body must be a JSON object {{…}}{at}"), None)
                    }
                    (Some(rest), _) => {
                        let (found, wanted) = rest.split_once(", expected ").unwrap_or((rest, ""));
                        let name = path.as_deref().map_or("a value".to_owned(), |p| format!("the field `{p}`"));
                        (format!("{name} must be {}, not {}{at}", kind(wanted), kind(found)), path)
                    }
                    (None, _) => {
                        let name = path.as_deref().map_or("a value".to_owned(), |p| format!("the field `{p}`"));
                        (format!("{name} is not one this operation takes{at}"), path)
                    }
                }
            }
        }
    };
    JsonProblem { message, field, line, column }
}

/// A JSON kind in words, from serde's name for it (`integer `5``, `a sequence`, `a boolean`).
fn kind(serde: &str) -> &'static str {
    let s = serde.trim();
    let first = s.split([' ', '`']).find(|w| !w.is_empty() && *w != "a" && *w != "an").unwrap_or("");
    match first {
        "string" | "char" => "a string",
        "integer" | "u64" | "i64" | "u32" | "i32" | "u16" | "u8" | "number" | "floating" => "a number",
        "boolean" => "true or false",
        "sequence" => "a list [...]",
        "map" | "struct" => "an object {...}",
        "null" | "unit" | "option" => "null",
        _ => "another kind of value",
    }
}

/// The path (`tags.region`, `events[1]`) of the value that ends at `line`:`column`, found by
/// walking the (so far valid) JSON text up to there.
fn field_at(body: &[u8], line: Option<usize>, column: Option<usize>) -> Option<String> {
    let (line, column) = (line?, column?);
    let start = body.split(|b| *b == b'\n').take(line - 1).map(|l| l.len() + 1).sum::<usize>();
    // The character at `column` is the bad value's last (or, for a list or an object, its first).
    let end = (start + column.saturating_sub(1)).min(body.len());
    enum Frame {
        Object(Option<String>),
        Array(usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let mut expecting_key = false;
    while i < end {
        match body[i] {
            b'{' => {
                stack.push(Frame::Object(None));
                expecting_key = true;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(n)) => *n += 1,
                Some(Frame::Object(_)) => expecting_key = true,
                None => {}
            },
            b'"' => {
                let from = i + 1;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                if expecting_key {
                    if let Some(Frame::Object(key)) = stack.last_mut() {
                        let raw = &body[from..i.min(body.len())];
                        *key = serde_json::from_slice::<String>(&[b"\"", raw, b"\""].concat()).ok();
                    }
                    expecting_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(k)) if path.is_empty() => path.push_str(k),
            Frame::Object(Some(k)) => {
                path.push('.');
                path.push_str(k);
            }
            Frame::Object(None) => return None,
            Frame::Array(n) => path.push_str(&format!("[{n}]")),
        }
    }
    (!path.is_empty()).then_some(path)
}

/// Middleware: a declared length over the limit is refused before the caller is even looked up,
/// on routes that read no body too; a body without a length that grows past it (actix's own
/// `PayloadError::Overflow`, a plain-text 413) gets the same JSON answer.
pub(super) async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    // The proxy has its own limit (PROXY_MAX_BODY) and streams the body instead of holding it.
    if super::proxy::is_proxy_path(req.path()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Ok(req.into_response(too_large().error_response()).map_into_right_body());
    }
    let res = next.call(req).await?;
    let overflowed = res.response().error().and_then(|e| e.as_error::<PayloadError>());
    if matches!(overflowed, Some(PayloadError::Overflow)) {
        return Ok(res.into_response(too_large().error_response()).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        url: String,
        #[serde(default)]
        events: Vec<String>,
        #[serde(default)]
        tags: std::collections::BTreeMap<String, String>,
    }

    fn problem(text: &str) -> JsonProblem {
        match parse_json::<Body>(text.as_bytes()) {
            Err(ApiError(AppError::BadJson(p))) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_kind_of_bad_body_is_said_in_our_words_with_where() {
        let p = problem("{not json");
        assert_eq!(
            (p.message.as_str(), p.line, p.column),
            ("the body is not valid JSON (line 1, column 2)", Some(1), Some(2))
        );
        assert_eq!(problem(r#"{"url": "x""#).message, "the body ends before its JSON is complete (line 1, column 11)");
        assert_eq!(problem("[1]").message, "the body must be a JSON object {…}");
        assert_eq!(problem("42").message, "the body must be a JSON object {…}");
        assert_eq!(problem("nope").message, "the body is not valid JSON (line 1, column 2)");
        let p = problem(r#"{"events": []}"#);
        assert_eq!((p.message.as_str(), p.field.as_deref()), ("the field `url` is required", Some("url")));
        let p = problem(r#"{"url": "x", "colour": "red"}"#);
        assert_eq!(p.field.as_deref(), Some("colour"));
        assert!(p.message.starts_with("this operation has no field `colour`"), "{}", p.message);
        let p = problem("{\"url\": \"x\",\n \"events\": [\"a\", 5]}");
        assert_eq!(p.field.as_deref(), Some("events[1]"));
        assert_eq!(p.message, "the field `events[1]` must be a string, not a number (line 2, column 18)");
        let p = problem(r#"{"url": "x", "tags": {"k": true}}"#);
        assert_eq!(
            (p.field.as_deref(), p.message.as_str()),
            (Some("tags.k"), "the field `tags.k` must be a string, not true or false (line 1, column 31)")
        );
        assert_eq!(
            problem(r#"{"url": 5}"#).message,
            "the field `url` must be a string, not a number (line 1, column 9)"
        );
        assert!(problem("  ").message.starts_with("the body is empty"));
        for p in [problem("{not json"), problem("[1]"), problem(r#"{"url": 5}"#)] {
            assert!(!p.message.contains("struct") && !p.message.contains("expected"), "{}", p.message);
        }
    }

    #[test]
    fn a_key_with_an_escape_or_a_comma_in_a_string_does_not_confuse_the_path() {
        let p = problem(r#"{"url": "a,b\"c", "events": ["x,y", {}]}"#);
        assert_eq!(p.field.as_deref(), Some("events[1]"), "{}", p.message);
    }
}
