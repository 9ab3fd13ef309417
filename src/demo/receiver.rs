//! A fake receiving application: it records every delivery, answers with scripted statuses (retries,
//! `Retry-After`, 410) or slowly or never, and in `demo` shows what arrived and whether it verifies.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;

use crate::delivery::forward::Signer;

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
    /// A body to answer with (the hub keeps its first 1 KiB).
    body: String,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay_ms: AtomicU64,
    hang: AtomicBool,
    /// Deliveries wait, unanswered, until `release`.
    held: AtomicBool,
    released: tokio::sync::Notify,
}

/// A handle on one fake receiver. Answers 200 unless a reply is scripted.
#[derive(Clone)]
pub struct FakeReceiver {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    signer: Option<Arc<Signer>>,
}

impl FakeReceiver {
    /// `secret` (a `whsec_` value) lets the receiver verify signatures for display.
    pub fn new(secret: Option<&str>) -> Self {
        Self {
            state: Arc::default(),
            counters: Arc::default(),
            signer: secret.and_then(|s| Signer::from_secret(s).ok()).map(Arc::new),
        }
    }

    /// Answer each delivery after `delay`; with `hang`, never answer (the caller times out).
    pub fn set_behaviour(&self, delay: Duration, hang: bool) {
        self.counters.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
        self.counters.hang.store(hang, Ordering::SeqCst);
    }

    /// Keep every delivery waiting (in flight, unanswered) until [`FakeReceiver::release`]: a test
    /// can then change things while a delivery is on its way.
    pub fn hold(&self) {
        self.counters.held.store(true, Ordering::SeqCst);
    }

    /// Answer the deliveries held so far, and the next ones as usual.
    pub fn release(&self) {
        self.counters.held.store(false, Ordering::SeqCst);
        self.counters.released.notify_waiters();
    }

    /// Answer every delivery with this body.
    pub fn set_body(&self, body: &str) {
        self.state().body = body.to_owned();
    }

    /// The most deliveries this receiver held at once.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many deliveries it holds now.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.state().received.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("receiver state poisoned")
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.state().received.clone()
    }

    /// Forget what arrived so far.
    pub fn clear(&self) {
        self.state().received.clear();
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
                .route("/stats", web::get().to(stats))
                .route("/", web::get().to(list));
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Counts a delivery in flight until dropped (also when the caller gives up on a hanging one).
struct InFlight(Arc<Counters>);

impl InFlight {
    fn new(c: &Arc<Counters>) -> Self {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn stats(me: web::Data<FakeReceiver>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "received": me.count(), "max_in_flight": me.max_in_flight() }))
}

async fn receive(req: HttpRequest, body: web::Bytes, me: web::Data<FakeReceiver>) -> HttpResponse {
    let _in_flight = InFlight::new(&me.counters);
    if me.counters.hang.load(Ordering::SeqCst) {
        // Counted as received only if it is ever answered: a hang never is.
        std::future::pending::<()>().await;
    }
    while me.counters.held.load(Ordering::SeqCst) {
        // Registered before the flag is read again, so a release in between is not missed.
        let released = me.counters.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if me.counters.held.load(Ordering::SeqCst) {
            released.await;
        }
    }
    let delay = me.counters.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let webhook_id = header(&req, "webhook-id");
    let timestamp = header(&req, "webhook-timestamp");
    let signature = header(&req, "webhook-signature");
    let verified = me
        .signer
        .as_ref()
        .map(|s| timestamp.parse::<i64>().is_ok_and(|ts| s.verify(&webhook_id, ts, &body, &signature)));
    let (reply, answer) = {
        let mut state = me.state();
        state.received.push(Delivery { webhook_id, timestamp, signature, body: body.to_vec(), verified });
        (state.script.pop_front(), state.body.clone())
    };
    match reply {
        None => HttpResponse::Ok().body(answer),
        Some(Reply::Status(code)) => {
            HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK)).body(answer)
        }
        Some(Reply::RetryAfter(code, secs)) => {
            HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
                .insert_header(("retry-after", secs.to_string()))
                .body(answer)
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
