//! SnapInspect's webhooks: the body, a small JSON object whose known fields are read tolerantly (the
//! raw body is stored exactly as received), and the URL's secret, compared in constant time.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{hex, sha256, text::without_nul, CompanyId};

/// Intake refuses bodies larger than this (413).
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed webhook body.
#[derive(Debug, Clone)]
pub struct WebhookPayload {
    pub kind: Option<String>,
    pub company_id: Option<CompanyId>,
    pub inspection_id: Option<i64>,
    pub review_id: Option<i64>,
    pub status: Option<String>,
    /// The body as received.
    pub raw: String,
    /// Identifies "the same payload for the same company": hex of sha256 over the company and the
    /// canonical JSON (keys sorted, no whitespace), so a re-send with other spacing is still a duplicate.
    pub dedupe_hash: String,
}

/// Why a body is not a webhook we can keep. The message is sent back as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is empty; SnapInspect sends a JSON object")]
    Empty,
    #[error("the body is not UTF-8 JSON")]
    NotUtf8,
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object, got {0}")]
    NotObject(&'static str),
}

fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A field kept in a column of its own: the start of it, with a NUL (JSON's `\u0000`) written out
/// as PostgreSQL's `text` needs. The raw body keeps the field as it came.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(without_nul(&s.chars().take(200).collect::<String>()).into_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse and check a webhook body. Pure, so it can be fuzzed.
pub fn parse_payload(body: &[u8]) -> Result<WebhookPayload, PayloadError> {
    let raw = std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
    if raw.trim().is_empty() {
        return Err(PayloadError::Empty);
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let obj: &Map<String, Value> = match &value {
        Value::Object(o) => o,
        Value::Array(_) => return Err(PayloadError::NotObject("an array")),
        Value::String(_) => return Err(PayloadError::NotObject("a string")),
        Value::Number(_) => return Err(PayloadError::NotObject("a number")),
        Value::Bool(_) => return Err(PayloadError::NotObject("a boolean")),
        Value::Null => return Err(PayloadError::NotObject("null")),
    };
    let company_id = obj.get("iCompanyID").and_then(CompanyId::from_json);
    // serde_json's map is ordered by key, so this is canonical.
    let canonical = value.to_string();
    let mut material = company_id.map(|c| c.to_string()).unwrap_or_default().into_bytes();
    material.push(b'\n');
    material.extend_from_slice(canonical.as_bytes());
    Ok(WebhookPayload {
        kind: text(obj.get("sType")),
        company_id,
        inspection_id: integer(obj.get("iInspectionID")),
        review_id: integer(obj.get("iInsReviewID")),
        status: text(obj.get("sStatus")),
        raw: raw.to_owned(),
        dedupe_hash: hex(&sha256(&material)[..16]),
    })
}

/// The webhook URL's secret and the older one still accepted while rotating, kept as SHA-256 so
/// a request hashes only what it brought.
pub struct WebhookSecrets {
    current: Option<[u8; 32]>,
    old: Option<[u8; 32]>,
}

impl WebhookSecrets {
    pub fn new(current: Option<&SecretString>, old: Option<&SecretString>) -> Self {
        let hash = |s: &SecretString| -> [u8; 32] { Sha256::digest(s.expose_secret().as_bytes()).into() };
        Self { current: current.map(hash), old: old.map(hash) }
    }

    /// Whether `given` is either secret. Both are always compared, as hashes of equal length, so
    /// timing says nothing about either.
    pub fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let check = |s: &Option<[u8; 32]>| s.as_ref().map_or(subtle::Choice::from(0), |s| s.ct_eq(&given));
        bool::from(check(&self.current) | check(&self.old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shapes_parse() {
        let p = parse_payload(br#"{ "sType": "Create_Inspection", "iInspectionID": 1388563, "iCompanyID": 6847 }"#)
            .unwrap();
        assert_eq!(p.kind.as_deref(), Some("Create_Inspection"));
        assert_eq!(p.company_id.unwrap().get(), 6847);
        assert_eq!(p.inspection_id, Some(1388563));
        let p =
            parse_payload(br#"{"sType":"Review_Signed","iInsReviewID":"7","iInspectionID":1234,"iCompanyID":6847}"#)
                .unwrap();
        assert_eq!(p.review_id, Some(7));
        let p = parse_payload(
            br#"{"sType":"Update_Inspection_Status","iInspectionID":1,"iCompanyID":6847,"sStatus":"sample status"}"#,
        )
        .unwrap();
        assert_eq!(p.status.as_deref(), Some("sample status"));
    }

    #[test]
    fn unknown_types_and_extra_fields_are_kept_as_received() {
        let body = br#"{"sType":"Brand_New","iCompanyID":1,"extra":{"a":[1,2]}}"#;
        let p = parse_payload(body).unwrap();
        assert_eq!(p.kind.as_deref(), Some("Brand_New"));
        assert_eq!(p.raw.as_bytes(), body);
    }

    #[test]
    fn a_nul_in_a_field_is_written_out_and_the_raw_body_kept() {
        let body = br#"{"sType":"A\u0000B","sStatus":"\u0000","iCompanyID":1}"#;
        let p = parse_payload(body).unwrap();
        assert_eq!(p.kind.as_deref(), Some("A\\u{0}B"));
        assert_eq!(p.status.as_deref(), Some("\\u{0}"));
        assert_eq!(p.raw.as_bytes(), body);
    }

    #[test]
    fn the_same_payload_with_other_spacing_or_key_order_is_the_same_event() {
        let a = parse_payload(br#"{"sType":"X","iCompanyID":1,"iInspectionID":2}"#).unwrap();
        let b = parse_payload(b"{ \"iInspectionID\": 2,\n \"iCompanyID\": 1, \"sType\": \"X\" }").unwrap();
        let c = parse_payload(br#"{"sType":"X","iCompanyID":1,"iInspectionID":3}"#).unwrap();
        assert_eq!(a.dedupe_hash, b.dedupe_hash);
        assert_ne!(a.dedupe_hash, c.dedupe_hash);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused_with_a_reason() {
        assert_eq!(parse_payload(b"").unwrap_err(), PayloadError::Empty);
        assert_eq!(parse_payload(b"[1]").unwrap_err(), PayloadError::NotObject("an array"));
        assert_eq!(parse_payload(&[0xff, 0xfe]).unwrap_err(), PayloadError::NotUtf8);
        assert!(matches!(parse_payload(b"{\"a\":").unwrap_err(), PayloadError::NotJson(_)));
    }
}
