//! A provider's error as the console shows it: a sentence a person reads (the provider's own
//! description when it gave one), and its raw answer (status and body) to fold away under it.

/// An error message split for a page.
#[derive(Debug, PartialEq, Eq)]
pub struct Shown {
    pub sentence: String,
    /// `HTTP 400: {"error":…}` as the provider answered; `None` when the message quoted no answer.
    pub detail: Option<String>,
}

/// Split a stored or returned error message (`… (HTTP 400: {"error":"invalid_grant",…}) …` or
/// `… answered HTTP 503: <html>…`) into a sentence and the provider's answer.
pub fn shown(message: &str) -> Shown {
    let Some((before, in_parens, status, body, after)) = quoted_answer(message) else {
        return Shown { sentence: message.to_owned(), detail: None };
    };
    let said = described(body).map(|d| format!(": {d}")).unwrap_or_default();
    let before = before.trim_end().trim_end_matches(':').trim_end();
    let mut sentence =
        if in_parens { format!("{before} (HTTP {status}){said}") } else { format!("{before} HTTP {status}{said}") };
    let after = after.trim_start_matches(';').trim();
    if !after.is_empty() {
        sentence.push_str("; ");
        sentence.push_str(after);
    }
    if !sentence.ends_with(['.', '…']) {
        sentence.push('.');
    }
    Shown { sentence, detail: Some(format!("HTTP {status}: {body}")) }
}

/// The text before `HTTP NNN: `, the status, the body quoted after it, and what follows the body
/// (when the answer was quoted in parentheses).
fn quoted_answer(message: &str) -> Option<(&str, bool, &str, &str, &str)> {
    let mut from = 0;
    while let Some(at) = message[from..].find("HTTP ").map(|i| i + from) {
        let rest = &message[at + 5..];
        let status = rest.get(..3).filter(|s| s.bytes().all(|b| b.is_ascii_digit()));
        if let (Some(status), Some(tail)) = (status, rest.get(3..).and_then(|t| t.strip_prefix(": "))) {
            let in_parens = message[..at].ends_with('(');
            let before = if in_parens { &message[..at - 1] } else { &message[..at] };
            let (body, after) = match (in_parens, tail.rfind(')')) {
                (true, Some(end)) => (&tail[..end], &tail[end + 1..]),
                _ => (tail, ""),
            };
            return Some((before, in_parens, status, body.trim(), after));
        }
        from = at + 5;
    }
    None
}

/// What the answer says in words: its `error_description` (or `message`), else what its OAuth
/// `error` code means. Nothing for an answer that is not such JSON (an HTML page, say).
fn described(body: &str) -> Option<String> {
    let json = serde_json::from_str::<serde_json::Value>(body).ok();
    let field = |k: &str| -> Option<String> {
        match &json {
            Some(v) => v[k].as_str().map(str::to_owned),
            // A body cut at 200 characters is no longer JSON: find the field by hand.
            None => {
                let marker = format!("\"{k}\":\"");
                let start = body.find(&marker)? + marker.len();
                body[start..].split('"').next().map(str::to_owned)
            }
        }
    };
    if let Some(d) = field("error_description").or_else(|| field("message")).filter(|d| !d.trim().is_empty()) {
        return Some(d);
    }
    let meaning = match field("error")?.as_str() {
        "invalid_grant" => "the grant (the refresh token) is no longer valid",
        "invalid_client" => "the client id or secret is wrong",
        "invalid_request" => "the request was malformed",
        "unauthorized_client" => "this client may not use this grant",
        "unsupported_grant_type" => "the grant type is not supported",
        "invalid_scope" => "the scope was refused",
        "invalid_token" => "the token is not valid",
        "access_denied" => "access was denied",
        "temporarily_unavailable" => "the service is temporarily unavailable",
        "server_error" => "the provider had an internal error",
        other => return Some(format!("error code {other}")),
    };
    Some(meaning.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_refresh_token_reads_as_a_sentence_with_snapinspects_answer_apart() {
        let s = shown(
            r#"SnapInspect refused the refresh token (HTTP 400: {"error":"invalid_grant","error_description":"the refresh token is unknown or was already used"})"#,
        );
        assert_eq!(
            s.sentence,
            "SnapInspect refused the refresh token (HTTP 400): the refresh token is unknown or was already used."
        );
        assert_eq!(
            s.detail.as_deref(),
            Some(
                r#"HTTP 400: {"error":"invalid_grant","error_description":"the refresh token is unknown or was already used"}"#
            )
        );
    }

    #[test]
    fn an_error_code_without_a_description_is_put_in_words_and_what_follows_is_kept() {
        let s = shown(
            r#"SnapInspect refused our client id or secret (HTTP 401: {"error":"invalid_client"}); check SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET"#,
        );
        assert_eq!(
            s.sentence,
            "SnapInspect refused our client id or secret (HTTP 401): the client id or secret is wrong; check SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET."
        );
        assert_eq!(s.detail.as_deref(), Some(r#"HTTP 401: {"error":"invalid_client"}"#));
    }

    #[test]
    fn an_answer_that_is_not_json_is_only_in_the_detail() {
        let s = shown("ExchangeToken answered HTTP 503: <html><body>Service Unavailable (maintenance)</body></html>");
        assert_eq!(s.sentence, "ExchangeToken answered HTTP 503.");
        assert_eq!(s.detail.as_deref(), Some("HTTP 503: <html><body>Service Unavailable (maintenance)</body></html>"));
        let cut = shown(r#"SnapInspect answered HTTP 500: {"error":"server_error","error_description":"a long one…"#);
        assert_eq!(cut.sentence, "SnapInspect answered HTTP 500: a long one…");
    }

    #[test]
    fn a_message_that_quotes_no_answer_is_left_as_it_is() {
        let s = shown("could not reach SnapInspect: connection refused");
        assert_eq!(s, Shown { sentence: "could not reach SnapInspect: connection refused".into(), detail: None });
        assert_eq!(shown("HTTP 2: x").detail, None);
    }
}
