//! What the proxy counts: requests by provider and status class, the time to the upstream's
//! answer, token retries by outcome (all for `/metrics`), and each connection's last hour.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use crate::domain::{ConnectionId, Provider};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Seconds to the upstream's status line (or the hub's own answer).
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// What became of a token the upstream refused.
pub const RETRY_OUTCOMES: [&str; 4] = ["retried", "refused", "failed", "not_retried_large_body"];
const MINUTES: usize = 60;

fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

/// A connection's proxied requests per minute, by status class, for its console page.
#[derive(Default)]
struct Recent {
    minutes: VecDeque<(i64, [u64; 5])>,
}

pub struct ProxyStats {
    requests: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    retries: [AtomicU64; RETRY_OUTCOMES.len()],
    recent: Mutex<HashMap<ConnectionId, Recent>>,
}

impl Default for ProxyStats {
    fn default() -> Self {
        Self {
            requests: (0..Provider::ALL.len() * CLASSES.len()).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            retries: Default::default(),
            recent: Mutex::new(HashMap::new()),
        }
    }
}

impl ProxyStats {
    /// One answer given to a caller, `seconds` after the request arrived, at `now_ms`.
    pub fn answered(&self, id: &ConnectionId, provider: Provider, status: u16, seconds: f64, now_ms: i64) {
        let p = Provider::ALL.iter().position(|x| *x == provider).unwrap_or(0);
        self.requests[p * CLASSES.len() + class_index(status)].fetch_add(1, Ordering::Relaxed);
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        let minute = now_ms.div_euclid(60_000);
        let mut recent = self.recent.lock().expect("proxy stats poisoned");
        let r = recent.entry(id.clone()).or_default();
        match r.minutes.back_mut() {
            Some((m, counts)) if *m == minute => counts[class_index(status)] += 1,
            _ => {
                let mut counts = [0; 5];
                counts[class_index(status)] = 1;
                r.minutes.push_back((minute, counts));
                while r.minutes.len() > MINUTES {
                    r.minutes.pop_front();
                }
            }
        }
    }

    pub fn retried(&self, outcome: &'static str) {
        if let Some(i) = RETRY_OUTCOMES.iter().position(|o| *o == outcome) {
            self.retries[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn retries(&self, outcome: &str) -> u64 {
        RETRY_OUTCOMES.iter().position(|o| *o == outcome).map_or(0, |i| self.retries[i].load(Ordering::Relaxed))
    }

    /// The connection's requests in the hour before `now_ms`, by status class (`2xx` …), only
    /// the classes seen.
    pub fn last_hour(&self, id: &ConnectionId, now_ms: i64) -> Vec<(&'static str, u64)> {
        let since = now_ms.div_euclid(60_000) - MINUTES as i64;
        let recent = self.recent.lock().expect("proxy stats poisoned");
        let mut sums = [0u64; 5];
        for (_, counts) in recent.get(id).iter().flat_map(|r| r.minutes.iter()).filter(|(m, _)| *m > since) {
            for (s, c) in sums.iter_mut().zip(counts) {
                *s += c;
            }
        }
        CLASSES.iter().zip(sums).filter(|(_, n)| *n > 0).map(|(c, n)| (*c, n)).collect()
    }

    /// The Prometheus text of the proxy's counters and histogram.
    pub fn render(&self, out: &mut String) {
        let name = "connect_hub_proxy_requests_total";
        let _ = writeln!(out, "# HELP {name} Requests through the API proxy, by provider and status class.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (p, provider) in Provider::ALL.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = self.requests[p * CLASSES.len() + c].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{provider=\"{}\",class=\"{class}\"}} {n}", provider.as_str());
            }
        }
        let name = "connect_hub_proxy_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time from a proxied request's arrival to its answer's status line.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (le, n) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", n.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
        let name = "connect_hub_proxy_token_retries_total";
        let _ = writeln!(out, "# HELP {name} Upstream 401s on a proxied request, by what the hub did.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (o, n) in RETRY_OUTCOMES.iter().zip(&self.retries) {
            let _ = writeln!(out, "{name}{{outcome=\"{o}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_counts_by_class_and_forgets_older_minutes() {
        let stats = ProxyStats::default();
        let id = ConnectionId::generate();
        let t0 = 1_000 * 60_000;
        stats.answered(&id, Provider::SnapInspect, 200, 0.001, t0);
        stats.answered(&id, Provider::SnapInspect, 204, 0.001, t0 + 1);
        stats.answered(&id, Provider::SnapInspect, 404, 0.001, t0 + 60_000);
        stats.answered(&id, Provider::SnapInspect, 503, 0.001, t0 + 120_000);
        assert_eq!(stats.last_hour(&id, t0 + 120_000), [("2xx", 2), ("4xx", 1), ("5xx", 1)]);
        assert_eq!(stats.last_hour(&id, t0 + 60 * 60_000), [("4xx", 1), ("5xx", 1)], "an hour on, t0's minute is gone");
        assert!(stats.last_hour(&ConnectionId::generate(), t0).is_empty());
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("connect_hub_proxy_requests_total{provider=\"snapinspect\",class=\"2xx\"} 2"), "{text}");
        assert!(text.contains("connect_hub_proxy_request_duration_seconds_bucket{le=\"0.001\"} 4"));
        assert!(text.contains("connect_hub_proxy_request_duration_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("connect_hub_proxy_request_duration_seconds_count 4"));
        stats.retried("retried");
        stats.retried("retried");
        stats.retried("refused");
        assert_eq!((stats.retries("retried"), stats.retries("refused"), stats.retries("failed")), (2, 1, 0));
        assert_eq!(class_index(99), 0);
        assert_eq!(class_index(600), 4);
    }

    #[test]
    fn each_provider_has_its_own_counters_and_the_sum_is_in_seconds() {
        let stats = ProxyStats::default();
        let id = ConnectionId::generate();
        stats.answered(&id, Provider::Signicat, 201, 0.25, 0);
        stats.answered(&id, Provider::SnapInspect, 500, 0.5, 0);
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("connect_hub_proxy_requests_total{provider=\"signicat\",class=\"2xx\"} 1"), "{text}");
        assert!(text.contains("connect_hub_proxy_requests_total{provider=\"snapinspect\",class=\"2xx\"} 0"));
        assert!(text.contains("connect_hub_proxy_requests_total{provider=\"snapinspect\",class=\"5xx\"} 1"));
        assert!(text.contains("connect_hub_proxy_request_duration_seconds_sum 0.75"), "{text}");
    }

    #[test]
    fn the_last_hour_keeps_sixty_minutes_and_every_answer_within_one() {
        let stats = ProxyStats::default();
        let id = ConnectionId::generate();
        for _ in 0..70 {
            stats.answered(&id, Provider::SnapInspect, 200, 0.0, 5 * 60_000);
        }
        assert_eq!(stats.last_hour(&id, 5 * 60_000), [("2xx", 70)], "seventy answers in one minute are one entry");
        let stats = ProxyStats::default();
        for minute in 0..60 {
            stats.answered(&id, Provider::SnapInspect, 200, 0.0, (100 + minute) * 60_000);
        }
        assert_eq!(stats.last_hour(&id, 159 * 60_000), [("2xx", 60)], "sixty minutes in a row are all the last hour");
    }
}
