//! Calls out of the hub: the guard on URLs stored in the database (every address a host resolves
//! to, at connect time, must be public or allowed), and in `client` the HTTP client they all share.

pub mod client;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, LazyLock},
    time::Duration,
};

use ipnet::IpNet;
use url::Url;

/// Whether a URL names this machine: a loopback address, or `localhost`. Plain http is allowed
/// only there (tests and `demo`), both for settings and for stored token URLs.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Ranges a stored URL may not reach unless an operator allows them, each with the words a
/// person reads in the error. The first match names the range, so specific ones come first.
static BLOCKED: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        // The link-local addresses where cloud instances read their credentials.
        ("169.254.169.254/32", "cloud-metadata"),
        ("fd00:ec2::254/128", "cloud-metadata"),
        ("0.0.0.0/8", "unspecified (\"this network\")"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "documentation"),
        // RFC 7526 deprecated 6to4; its relays take whatever a 6to4 address carries.
        ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        // IPv4-compatible addresses (deprecated by RFC 4291) reach IPv4 hosts on some stacks.
        ("::/96", "IPv4-compatible (deprecated)"),
        // RFC 2765 (SIIT): a translator on the path sends `::ffff:0:a.b.c.d` to a.b.c.d, whatever it is.
        ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "discard-only"),
        // RFC 4380: Teredo tunnels to an IPv4 server and client hidden in the address.
        ("2001::/32", "Teredo tunnel"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, what)| (net.parse().expect("the table holds valid networks"), what))
    .collect()
});

/// The IPv4 address inside an IPv6 form that carries one to an IPv4 host: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`, RFC 6052) and 6to4 (`2002:AABB:CCDD::`, RFC 3056).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let o = v6.octets();
    match v6.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        }
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Which blocked range `ip` is in (`None`: a public address). An IPv6 form that carries an IPv4
/// address is judged by that address.
pub fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return blocked_range(IpAddr::V4(v4));
    }
    BLOCKED.iter().find(|(net, _)| net.contains(&ip)).map(|(_, what)| *what)
}

/// A stored URL would reach an address outbound calls may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub host: String,
    /// The host is a name that resolved to `addr` (not the address itself).
    resolved: bool,
    pub addr: IpAddr,
    pub range: &'static str,
    /// The setting besides `OUTBOUND_ALLOW_NETWORKS` that would allow it, for the message.
    setting: Option<&'static str>,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (addr, range) = (self.addr, self.range);
        if self.resolved {
            write!(f, "{} resolves to {addr}, a {range} address", self.host)?;
        } else {
            write!(f, "{addr} is a {range} address")?;
        }
        match self.setting {
            Some(setting) => write!(
                f,
                ", which URLs stored here may not reach unless {setting} or OUTBOUND_ALLOW_NETWORKS allows it"
            ),
            None => f.write_str(", which URLs stored here may not reach unless OUTBOUND_ALLOW_NETWORKS allows it"),
        }
    }
}

impl std::error::Error for Blocked {}

/// Which addresses stored URLs may reach: every public one, plus the operator's networks.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<IpNet>,
    setting: Option<&'static str>,
}

impl Policy {
    /// `allow`: the networks of `OUTBOUND_ALLOW_NETWORKS` and of `setting`, the one for this kind
    /// of URL (token URLs and endpoints are allowed separately), which refusals name.
    pub fn new(allow: Vec<IpNet>, setting: &'static str) -> Self {
        Self { allow, setting: Some(setting) }
    }

    /// `Err` with the range's name when `ip` is blocked and no allowed network holds it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        // `::ffff:127.0.0.1` is 127.0.0.1 to the kernel, so the allowance for 127.0.0.0/8 holds it too.
        let canonical = ip.to_canonical();
        match blocked_range(ip) {
            Some(range) if !self.allow.iter().any(|n| n.contains(&ip) || n.contains(&canonical)) => Err(range),
            _ => Ok(()),
        }
    }

    /// The check for a URL whose host is an address: reqwest connects to those without asking
    /// the resolver. A name passes here; the resolver checks what it resolves to.
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        let addr = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.check_ip(addr).map_err(|range| Blocked {
            host: addr.to_string(),
            resolved: false,
            addr,
            range,
            setting: self.setting,
        })
    }

    /// Keep the allowed addresses; when none remains, say why the first one was refused.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Blocked> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(range) => {
                    let setting = self.setting;
                    refused.get_or_insert(Blocked {
                        host: host.to_owned(),
                        resolved: true,
                        addr: a.ip(),
                        range,
                        setting,
                    });
                    false
                }
            })
            .collect();
        match refused {
            Some(blocked) if allowed.is_empty() => Err(blocked),
            _ => Ok(allowed),
        }
    }
}

/// Resolves with the system resolver, then drops what the policy refuses: the check is on the
/// address the connection is about to use, so a name that re-resolves elsewhere (DNS rebinding)
/// cannot pass it.
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            let allowed = policy.filter(&host, found)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for URLs stored in the database: the shared client's timeouts, no redirects, no
/// proxy (a proxy would resolve the name instead of us), and the guarded resolver. Requests are
/// only made through [`GuardedClient::post`], which checks address literals first.
#[derive(Clone)]
pub struct GuardedClient {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl GuardedClient {
    pub fn build(total: Duration, roots: &[reqwest::Certificate], policy: Policy) -> anyhow::Result<Self> {
        Self::guarding(client::builder(total, roots), policy)
    }

    /// The same guard for long streams (the API proxy): no total timeout, each read within `idle`.
    pub fn streaming(idle: Duration, roots: &[reqwest::Certificate], policy: Policy) -> anyhow::Result<Self> {
        Self::guarding(client::streaming_builder(idle, roots), policy)
    }

    fn guarding(builder: reqwest::ClientBuilder, policy: Policy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let http = builder.no_proxy().dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() })).build()?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A request with any method to `url`, refused at once when the URL's host is a blocked address.
    pub fn request(&self, method: reqwest::Method, url: Url) -> Result<reqwest::RequestBuilder, Blocked> {
        self.policy.check_url(&url)?;
        Ok(self.http.request(method, url))
    }

    /// A POST to `url`, refused at once when the URL's host is a blocked address.
    pub fn post(&self, url: Url) -> Result<reqwest::RequestBuilder, Blocked> {
        self.policy.check_url(&url)?;
        Ok(self.http.post(url))
    }
}

/// The guard's refusal inside a failed request, if that is why it failed.
pub fn blocked_in(err: &reqwest::Error) -> Option<&Blocked> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Some(b);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
