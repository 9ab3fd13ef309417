//! A fake receiving application for forwarded events: it records every delivery (headers and body),
//! answers with scripted statuses (to exercise retries, `Retry-After` and 410), and in `demo` shows
//! what arrived and whether each signature verifies.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;

use crate::queue::forward::Signer;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// Whether the signature verified with the receiver's secret (if it has one).
    pub verified: Option<bool>,
}

/// How the receiver answers the next delivery.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: secs`.
    RetryAfter(u16, u64),
}

#[derive(Default)]
struct State {
    received: Vec<Delivery>,
    script: VecDeque<Reply>,
}

/// A handle on one fake receiver. Answers 200 unless a reply is scripted.
#[derive(Clone)]
pub struct FakeReceiver {
    state: Arc<Mutex<State>>,
    signer: Option<Arc<Signer>>,
}

impl FakeReceiver {
    /// `secret` (a `whsec_` value) lets the receiver verify signatures for display.
    pub fn new(secret: Option<&str>) -> Self {
        Self { state: Arc::default(), signer: secret.and_then(|s| Signer::from_secret(s).ok()).map(Arc::new) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("receiver state poisoned")
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.state().received.clone()
    }

    pub fn push_reply(&self, reply: Reply) {
        self.state().script.push_back(reply);
    }

    /// Routes: `POST /events` receives, `GET /` lists what arrived.
    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
        let me = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(me.clone()))
                .route("/events", web::post().to(receive))
                .route("/", web::get().to(list));
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn receive(req: HttpRequest, body: web::Bytes, me: web::Data<FakeReceiver>) -> HttpResponse {
    let webhook_id = header(&req, "webhook-id");
    let timestamp = header(&req, "webhook-timestamp");
    let signature = header(&req, "webhook-signature");
    let verified = me
        .signer
        .as_ref()
        .map(|s| timestamp.parse::<i64>().is_ok_and(|ts| s.verify(&webhook_id, ts, &body, &signature)));
    let reply = {
        let mut state = me.state();
        state.received.push(Delivery { webhook_id, timestamp, signature, body: body.to_vec(), verified });
        state.script.pop_front()
    };
    match reply {
        None => HttpResponse::Ok().finish(),
        Some(Reply::Status(code)) => HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK)).finish(),
        Some(Reply::RetryAfter(code, secs)) => {
            HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
                .insert_header(("retry-after", secs.to_string()))
                .finish()
        }
    }
}

struct Row {
    id: String,
    verified: &'static str,
    body: String,
}

#[derive(Template)]
#[template(path = "fake/receiver.html")]
struct ListPage {
    rows: Vec<Row>,
}

async fn list(me: web::Data<FakeReceiver>) -> HttpResponse {
    let rows = me
        .received()
        .into_iter()
        .rev()
        .take(100)
        .map(|d| Row {
            id: d.webhook_id,
            verified: match d.verified {
                Some(true) => "signature valid",
                Some(false) => "SIGNATURE INVALID",
                None => "not checked",
            },
            body: serde_json::from_slice::<serde_json::Value>(&d.body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| String::from_utf8_lossy(&d.body).into_owned()),
        })
        .collect();
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(ListPage { rows }.render().unwrap_or_default())
}
