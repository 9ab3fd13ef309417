//! Forwarding events to the organisation's application, signed per the Standard Webhooks
//! specification: `webhook-id`, `webhook-timestamp`, and `webhook-signature: v1,<base64>` where the
//! signature is HMAC-SHA256 over `id.timestamp.body` with the key inside the `whsec_` secret.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use url::Url;

use crate::{
    http_client::{read_excerpt, snippet, EXCERPT_CAP},
    snapinspect::client::{describe_transport, retry_after},
    store::ClaimedEvent,
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

/// The JSON we forward: our ids, what SnapInspect sent (unchanged), and the inspection if read.
pub fn envelope(event: &ClaimedEvent, inspection: Option<&Value>) -> Vec<u8> {
    let payload: Value = serde_json::from_str(&event.payload).unwrap_or_else(|_| Value::String(event.payload.clone()));
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

/// How a delivery went.
#[derive(Debug)]
pub enum Delivery {
    Delivered(u16),
    /// 410 Gone: the receiver does not want this (or any) event; stop retrying.
    Gone,
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// POST one signed message.
pub async fn deliver(http: &reqwest::Client, url: &Url, signer: &Signer, id: &str, body: Vec<u8>) -> Delivery {
    let timestamp = crate::time::now_ms() / 1000;
    let signature = signer.sign(id, timestamp, &body);
    let res = http
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match res {
        Err(e) => Delivery::Failed {
            status: None,
            error: format!("forwarding: {}", describe_transport(&e)),
            retry_after: None,
        },
        Ok(r) if r.status().is_success() => Delivery::Delivered(r.status().as_u16()),
        Ok(r) if r.status().as_u16() == 410 => Delivery::Gone,
        Ok(r) => {
            let status = r.status().as_u16();
            let wait = retry_after(r.headers());
            // The receiver's first words say what it did not like; the rest is never read.
            let excerpt = snippet(&read_excerpt(r, EXCERPT_CAP).await);
            Delivery::Failed {
                status: Some(status),
                error: if excerpt.is_empty() {
                    format!("the receiver answered HTTP {status}")
                } else {
                    format!("the receiver answered HTTP {status}: {excerpt}")
                },
                retry_after: wait,
            }
        }
    }
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
