//! Delivering events to an endpoint, signed per the Standard Webhooks specification (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64>`), and what the receiver's answer means.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::{
    outbound::client::read_excerpt,
    outbound::client::{describe_transport, retry_after},
    outbound::{blocked_in, Blocked},
    store::DeliveryEvent,
    time::rfc3339,
};

/// Signs (and verifies) Standard Webhooks messages. `Debug` does not print the key.
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    /// From a `whsec_<base64>` secret (the config check already validated its shape).
    pub fn from_secret(secret: &str) -> anyhow::Result<Self> {
        let body =
            secret.strip_prefix("whsec_").ok_or_else(|| anyhow::anyhow!("FORWARD_SECRET must start with whsec_"))?;
        Ok(Self { key: STANDARD.decode(body)? })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes()))
    }

    /// Check a `webhook-signature` header (space-separated `v1,…` entries), in constant time.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
            STANDARD.decode(sig).is_ok_and(|bytes| self.mac(id, timestamp, body).verify_slice(&bytes).is_ok())
        })
    }
}

/// The JSON we deliver: our ids, what SnapInspect sent (unchanged) or the operational event's
/// data, and the inspection if one was read.
pub fn envelope(event: &DeliveryEvent) -> Vec<u8> {
    let payload: Value = serde_json::from_str(&event.payload).unwrap_or_else(|_| Value::String(event.payload.clone()));
    let inspection: Option<Value> = event.inspection.as_deref().and_then(|i| serde_json::from_str(i).ok());
    json!({
        "id": event.id.as_str(),
        "type": event.kind,
        "company_id": event.company_id.map(|c| c.get()),
        "connection_id": event.connection_id.as_ref().map(|c| c.as_str()),
        "received_at": rfc3339(event.received_at),
        "payload": payload,
        "inspection": inspection,
    })
    .to_string()
    .into_bytes()
}

/// How one delivery attempt went.
#[derive(Debug)]
pub struct Sent {
    pub status: Option<u16>,
    pub outcome: Outcome,
    /// The first 1 KiB of the response body (lossy UTF-8).
    pub excerpt: Option<String>,
}

#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// 410 Gone: the receiver does not want this (or any) event; stop retrying.
    Gone,
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// The most of a response body we keep.
pub const EXCERPT_BYTES: usize = 1024;

/// POST one message signed with every given key (during a rotation's overlap, two), space-separated
/// in `webhook-signature` as Standard Webhooks specifies, so the receiver may verify with either.
/// `post` is the request to the endpoint, or the outbound guard's refusal to make it.
pub async fn deliver(
    post: Result<reqwest::RequestBuilder, Blocked>,
    signers: &[&Signer],
    id: &str,
    body: Vec<u8>,
) -> Sent {
    let post = match post {
        Ok(p) => p,
        Err(blocked) => return not_sent(format!("not delivered: {blocked}")),
    };
    let timestamp = crate::time::now_ms() / 1000;
    let signature = signers.iter().map(|s| s.sign(id, timestamp, &body)).collect::<Vec<_>>().join(" ");
    let res = post
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let r = match res {
        // A name that resolves to a blocked address fails when connecting: say why, not just
        // "could not connect".
        Err(e) => match blocked_in(&e) {
            Some(blocked) => return not_sent(format!("not delivered: {blocked}")),
            None => return not_sent(format!("delivering: {}", describe_transport(&e))),
        },
        Ok(r) => r,
    };
    let status = r.status().as_u16();
    let retry_after = retry_after(r.headers());
    // Read no more than the excerpt: a receiver's big answer costs us nothing.
    let body = read_excerpt(r, EXCERPT_BYTES).await;
    let excerpt = (!body.is_empty()).then_some(body);
    let outcome = match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        _ => Outcome::Failed { error: format!("the receiver answered HTTP {status}"), retry_after },
    };
    Sent { status: Some(status), outcome, excerpt }
}

/// An attempt that sent nothing, and why.
pub(super) fn not_sent(error: String) -> Sent {
    Sent { status: None, outcome: Outcome::Failed { error, retry_after: None }, excerpt: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let s = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = s.sign("msg_1", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1,"));
        assert!(s.verify("msg_1", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!s.verify("msg_1", 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!s.verify("msg_2", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(s.verify("msg_1", 1_700_000_000, b"{\"a\":1}", &format!("v1,bogus {sig}")));
    }
}
