//! Counters and histograms for `/metrics` in the Prometheus text format (webhooks, attempts,
//! exchanges, fetches, requests by route), plain atomics with no lock on the hot path.

mod checks;

pub use checks::{ConnectionChecks, CHECK_OUTCOMES};

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
};

/// A gauge's label value and its figure (read from the store).
type Count = (String, i64);

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Status codes 100 to 599, one counter each.
const STATUSES: usize = 500;

/// One route's request counts by status, and its latency histogram.
struct RouteStats {
    statuses: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl RouteStats {
    fn observe(&self, status: u16, seconds: f64) {
        if let Some(c) = (status as usize).checked_sub(100).and_then(|i| self.statuses.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// A counter family with one label, over a fixed set of values.
pub struct Family {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
    counts: Vec<AtomicU64>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, label: &'static str, values: &'static [&'static str]) -> Self {
        Self { name, help, label, values, counts: values.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    /// Count one under `value` (which must be one of the family's values).
    pub fn inc(&self, value: &str) {
        if let Some(i) = self.values.iter().position(|v| *v == value) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, value: &str) -> u64 {
        self.values.iter().position(|v| *v == value).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        for (v, c) in self.values.iter().zip(&self.counts) {
            let _ = writeln!(out, "{}{{{}=\"{v}\"}} {}", self.name, self.label, c.load(Ordering::Relaxed));
        }
    }
}

pub struct Metrics {
    pub webhooks_received: AtomicU64,
    pub webhooks_duplicate: AtomicU64,
    pub webhooks_rejected: Family,
    pub attempts: Family,
    pub exchanges: Family,
    pub fetches: Family,
    pub rate_limited: Family,
    /// Admin password hashes (sign-ins): running now, the most ever at once, run, turned away.
    pub hashing_in_flight: AtomicU64,
    pub hashing_max_in_flight: AtomicU64,
    pub hashing_total: AtomicU64,
    pub hashing_refused: AtomicU64,
    /// By route pattern; read-locked on the hot path (a write only the first time a route is seen).
    routes: RwLock<HashMap<String, RouteStats>>,
    /// Delivery attempts by endpoint and outcome (done, retrying, dead).
    deliveries: RwLock<HashMap<(String, &'static str), AtomicU64>>,
    /// Every delivery attempt's latency (the route histogram's shape, without a label).
    delivery_latency: RouteStats,
    /// Connection health checks, by provider and outcome.
    pub connection_checks: ConnectionChecks,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            webhooks_received: AtomicU64::new(0),
            webhooks_duplicate: AtomicU64::new(0),
            webhooks_rejected: Family::new(
                "connect_hub_webhooks_rejected_total",
                "Webhook deliveries refused, by reason.",
                "reason",
                &["secret", "too_large", "invalid", "unavailable"],
            ),
            attempts: Family::new(
                "connect_hub_event_attempts_total",
                "Event processing attempts, by outcome.",
                "outcome",
                &["done", "retry", "dead"],
            ),
            exchanges: Family::new(
                "connect_hub_exchanges_total",
                "SnapInspect token exchanges, by outcome.",
                "outcome",
                &["ok", "refused", "failed"],
            ),
            fetches: Family::new(
                "connect_hub_client_credentials_fetches_total",
                "Client-credentials token requests, by outcome.",
                "outcome",
                &["ok", "failed"],
            ),
            rate_limited: Family::new(
                "connect_hub_rate_limited_total",
                "Requests answered 429, by limit.",
                "limit",
                &["api", "api_key_guessing", "connect", "sign_in"],
            ),
            hashing_in_flight: AtomicU64::new(0),
            hashing_max_in_flight: AtomicU64::new(0),
            hashing_total: AtomicU64::new(0),
            hashing_refused: AtomicU64::new(0),
            routes: RwLock::new(HashMap::new()),
            deliveries: RwLock::new(HashMap::new()),
            delivery_latency: RouteStats::default(),
            connection_checks: ConnectionChecks::default(),
        }
    }
}

impl Metrics {
    /// Record one finished request. `route` is a route pattern (a bounded set), never a raw path.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        if let Some(stats) = self.routes.read().expect("metrics poisoned").get(route) {
            stats.observe(status, seconds);
            return;
        }
        self.routes.write().expect("metrics poisoned").entry(route.to_owned()).or_default().observe(status, seconds);
    }

    /// Count one delivery attempt to `endpoint` that ended in `outcome`, and its latency.
    pub fn observe_delivery(&self, endpoint: &str, outcome: &'static str, seconds: f64) {
        self.delivery_latency.observe(200, seconds);
        let key = (endpoint.to_owned(), outcome);
        if let Some(c) = self.deliveries.read().expect("metrics poisoned").get(&key) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.deliveries.write().expect("metrics poisoned").entry(key).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// How many delivery attempts to `endpoint` ended in `outcome` (for tests).
    pub fn deliveries(&self, endpoint: &str, outcome: &'static str) -> u64 {
        let map = self.deliveries.read().expect("metrics poisoned");
        map.get(&(endpoint.to_owned(), outcome)).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The delivery part of the exposition: attempts by endpoint and outcome, the latency
    /// histogram, queue depth by state (every state, zeros included) and the age of the oldest
    /// due delivery (0 when none is due): the one number to alert on.
    pub fn render_deliveries(&self, depth: &[(String, i64)], oldest_due_age_secs: f64) -> String {
        let mut out = String::with_capacity(2048);
        let name = "connect_hub_deliveries_total";
        let _ = writeln!(out, "# HELP {name} Delivery attempts, by endpoint and outcome.\n# TYPE {name} counter");
        let map = self.deliveries.read().expect("metrics poisoned");
        let mut keys: Vec<&(String, &'static str)> = map.keys().collect();
        keys.sort();
        for k in keys {
            let _ =
                writeln!(out, "{name}{{endpoint=\"{}\",outcome=\"{}\"}} {}", k.0, k.1, map[k].load(Ordering::Relaxed));
        }
        let name = "connect_hub_delivery_duration_seconds";
        let h = &self.delivery_latency;
        let _ = writeln!(out, "# HELP {name} Delivery attempt latency.\n# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.buckets[i].load(Ordering::Relaxed));
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        let name = "connect_hub_deliveries";
        let _ = writeln!(out, "# HELP {name} Deliveries in the queue, by state.\n# TYPE {name} gauge");
        for state in crate::domain::endpoint::DeliveryState::ALL.map(|s| s.as_str()) {
            let n = depth.iter().find(|(k, _)| k == state).map_or(0, |(_, v)| *v);
            let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
        }
        let name = "connect_hub_oldest_due_delivery_age_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long the oldest due delivery to an enabled endpoint has waited (0: none).\n# TYPE {name} gauge\n{name} {oldest_due_age_secs}"
        );
        out
    }

    /// The text exposition, with the queue and connection gauges read from the store by the caller.
    pub fn render(&self, queue: &[(String, i64)], connections: &[(String, i64)]) -> String {
        self.render_with(Some((queue, connections)))
    }

    /// The text exposition of what memory holds, for when the store does not answer: the queue
    /// and connection gauges are left out rather than shown as zeros.
    pub fn render_memory(&self) -> String {
        self.render_with(None)
    }

    fn render_with(&self, counts: Option<(&[Count], &[Count])>) -> String {
        let mut out = String::with_capacity(8192);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "connect_hub_webhooks_received_total",
            "Webhook events stored (answered 200, not duplicates).",
            self.webhooks_received.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "connect_hub_webhooks_duplicate_total",
            "Webhook deliveries answered 200 as duplicates of a stored event.",
            self.webhooks_duplicate.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "connect_hub_password_hashes_total",
            "Admin password verifications run (sign-ins, unknown accounts included).",
            self.hashing_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "connect_hub_password_hashes_refused_total",
            "Sign-ins answered 503 because the password hashing cap was reached.",
            self.hashing_refused.load(Ordering::Relaxed),
        );
        for (name, help, v) in [
            ("connect_hub_password_hashes_in_flight", "Password verifications running now.", &self.hashing_in_flight),
            (
                "connect_hub_password_hashes_max_in_flight",
                "The most password verifications that ever ran at once.",
                &self.hashing_max_in_flight,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Ordering::Relaxed));
        }
        for f in [&self.webhooks_rejected, &self.attempts, &self.exchanges, &self.fetches, &self.rate_limited] {
            f.render(&mut out);
        }
        let gauge = |out: &mut String, name: &str, help: &str, label: &str, rows: &[(String, i64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (k, v) in rows {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        if let Some((queue, connections)) = counts {
            // Every state, zeros included, so a dashboard's series do not vanish when the queue empties.
            let queue: Vec<(String, i64)> = crate::domain::EventState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), queue.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, v)| *v)))
                .collect();
            gauge(&mut out, "connect_hub_events", "Events in the queue, by status.", "status", &queue);
            gauge(&mut out, "connect_hub_connections", "Connections, by status.", "status", connections);
        }

        let routes = self.routes.read().expect("metrics poisoned");
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        let _ = writeln!(out, "# HELP connect_hub_http_requests_total HTTP requests, by route and status.\n# TYPE connect_hub_http_requests_total counter");
        for route in &names {
            for (i, c) in routes[*route].statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "connect_hub_http_requests_total{{route=\"{route}\",status=\"{}\"}} {n}",
                        i + 100
                    );
                }
            }
        }
        let name = "connect_hub_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP request latency, by route.\n# TYPE {name} histogram");
        for route in &names {
            let h = &routes[*route];
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let _ =
                writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        self.connection_checks.render(&mut out);
        out
    }
}

/// Whether the store answers (1 or 0) and the database errors counted, by operation.
pub fn render_store(out: &mut String, up: bool, errors: &[(&'static str, u64)]) {
    let name = "connect_hub_store_up";
    let _ = writeln!(
        out,
        "# HELP {name} Whether the database answers (1) or not (0).\n# TYPE {name} gauge\n{name} {}",
        u8::from(up)
    );
    let name = "connect_hub_store_errors_total";
    let _ = writeln!(out, "# HELP {name} Database errors, by operation.\n# TYPE {name} counter");
    for (op, n) in errors {
        let _ = writeln!(out, "{name}{{operation=\"{op}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let m = Metrics::default();
        m.webhooks_received.fetch_add(3, Ordering::Relaxed);
        m.attempts.inc("dead");
        m.attempts.inc("not-a-value");
        m.observe_request("/healthz", 200, 0.0007);
        m.observe_request("/healthz", 200, 0.02);
        let text = m.render(&[("pending".into(), 4)], &[("active".into(), 1)]);
        assert!(text.contains("connect_hub_webhooks_received_total 3"));
        m.hashing_max_in_flight.store(2, Ordering::Relaxed);
        m.hashing_total.store(7, Ordering::Relaxed);
        let text = m.render(&[("pending".into(), 4)], &[("active".into(), 1)]);
        assert!(text.contains("connect_hub_password_hashes_max_in_flight 2"));
        assert!(text.contains("connect_hub_password_hashes_total 7"));
        assert!(text.contains("connect_hub_event_attempts_total{outcome=\"dead\"} 1"));
        assert!(text.contains("connect_hub_events{status=\"pending\"} 4"));
        assert!(text.contains("connect_hub_http_requests_total{route=\"/healthz\",status=\"200\"} 2"));
        assert!(text.contains("connect_hub_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.001\"} 1"));
        assert!(text.contains("connect_hub_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.025\"} 2"));
        assert!(text.contains("connect_hub_http_request_duration_seconds_count{route=\"/healthz\"} 2"));
    }
}
