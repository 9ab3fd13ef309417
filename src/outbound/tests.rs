//! The address classification, range by range in both families, and the allowance that lets an
//! operator's networks through.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(s: &str) -> Option<&'static str> {
    blocked_range(ip(s))
}

#[test]
fn every_blocked_ipv4_range_is_named_and_its_neighbours_are_public() {
    let cases = [
        ("0.0.0.0", "unspecified (\"this network\")"),
        ("0.255.255.255", "unspecified (\"this network\")"),
        ("10.0.0.1", "private (RFC 1918)"),
        ("10.255.255.255", "private (RFC 1918)"),
        ("100.64.0.0", "carrier-grade NAT (RFC 6598)"),
        ("100.127.255.255", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "cloud-metadata"),
        ("169.254.0.1", "link-local"),
        ("169.254.169.253", "link-local"),
        ("172.16.0.0", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.0.0.8", "reserved (IETF protocol assignments)"),
        ("192.0.2.7", "documentation"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.255", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
    ];
    for (addr, want) in cases {
        assert_eq!(range(addr), Some(want), "{addr}");
    }
    for public in ["1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "172.15.255.255"]
    {
        assert_eq!(range(public), None, "{public}");
    }
    for public in ["172.32.0.0", "192.167.255.255", "192.169.0.0", "169.253.255.255", "198.20.0.0", "223.255.255.255"] {
        assert_eq!(range(public), None, "{public}");
    }
}

#[test]
fn every_blocked_ipv6_range_is_named() {
    let cases = [
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::7f00:1", "IPv4-compatible (deprecated)"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("fd00:ec2::253", "private (unique local)"),
        ("fc00::1", "private (unique local)"),
        ("fdff:ffff::1", "private (unique local)"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard-only"),
        ("64:ff9b:1::1", "private (local-use NAT64)"),
    ];
    for (addr, want) in cases {
        assert_eq!(range(addr), Some(want), "{addr}");
    }
    for public in ["2606:4700:4700::1111", "2a00:1450::1", "fbff::1", "fe7f::1", "2001:db9::1", "100::1:0:0:0:1"] {
        assert_eq!(range(public), None, "{public}");
    }
}

#[test]
fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
    // IPv4-mapped.
    assert_eq!(range("::ffff:127.0.0.1"), Some("loopback"));
    assert_eq!(range("::ffff:169.254.169.254"), Some("cloud-metadata"));
    assert_eq!(range("::ffff:10.1.2.3"), Some("private (RFC 1918)"));
    assert_eq!(range("::ffff:8.8.8.8"), None);
    // NAT64 (RFC 6052).
    assert_eq!(range("64:ff9b::192.168.0.1"), Some("private (RFC 1918)"));
    assert_eq!(range("64:ff9b::8.8.8.8"), None);
    // 6to4 (RFC 3056): 2002:AABB:CCDD:: carries AA.BB.CC.DD.
    assert_eq!(range("2002:7f00:1::"), Some("loopback"));
    assert_eq!(range("2002:a9fe:a9fe::1"), Some("cloud-metadata"));
    assert_eq!(range("2002:0808:0808::"), None);
    assert_eq!(embedded_v4(ip("2002:c0a8:0102::")), Some(Ipv4Addr::new(192, 168, 1, 2)));
    assert_eq!(embedded_v4(ip("::ffff:1.2.3.4")), Some(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(embedded_v4(ip("64:ff9b::1.2.3.4")), Some(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(embedded_v4(ip("2001:db8::1.2.3.4")), None);
    assert_eq!(embedded_v4(ip("1.2.3.4")), None);
}

#[test]
fn translated_teredo_and_6to4_relay_addresses_are_blocked() {
    // IPv4-translated (RFC 2765 SIIT): a translator on the path sends these to a.b.c.d, public or not.
    assert_eq!(range("::ffff:0:7f00:1"), Some("IPv4-translated (SIIT)"));
    assert_eq!(range("::ffff:0:a9fe:a9fe"), Some("IPv4-translated (SIIT)"));
    assert_eq!(range("::ffff:0:808:808"), Some("IPv4-translated (SIIT)"));
    // Teredo (RFC 4380) tunnels to an IPv4 server and client hidden in the address.
    assert_eq!(range("2001::1"), Some("Teredo tunnel"));
    assert_eq!(range("2001:0:4136:e378:8000:63bf:3fff:fdd2"), Some("Teredo tunnel"));
    assert_eq!(range("2001:0:ffff:ffff:ffff:ffff:ffff:ffff"), Some("Teredo tunnel"));
    // The 6to4 relay anycast prefix (RFC 7526 deprecated it), also inside a 6to4 address.
    assert_eq!(range("192.88.99.1"), Some("6to4 relay anycast (deprecated)"));
    assert_eq!(range("192.88.99.255"), Some("6to4 relay anycast (deprecated)"));
    assert_eq!(range("2002:c058:6301::"), Some("6to4 relay anycast (deprecated)"));
    for public in ["192.88.98.255", "192.88.100.0", "2001:4860:4860::8888", "2001:200::1", "::fffe:0:0:1"] {
        assert_eq!(range(public), None, "{public}");
    }
    let client = GuardedClient::build(Duration::from_secs(5), &[], Policy::default()).unwrap();
    for url in ["http://[::ffff:0:7f00:1]:9/", "http://[2001::7f00:1]/", "http://192.88.99.1/"] {
        assert!(client.post(Url::parse(url).unwrap()).is_err(), "{url} is refused before sending");
    }
}

#[test]
fn an_allowed_network_lets_its_addresses_through_and_no_others() {
    let none = Policy::default();
    assert_eq!(none.check_ip(ip("127.0.0.1")), Err("loopback"));
    assert_eq!(none.check_ip(ip("8.8.8.8")), Ok(()));
    let loopback = Policy::new(vec!["127.0.0.0/8".parse().unwrap()], "ENDPOINT_ALLOW_NETWORKS");
    assert_eq!(loopback.check_ip(ip("127.0.0.1")), Ok(()));
    assert_eq!(loopback.check_ip(ip("::ffff:127.0.0.1")), Ok(()), "the mapped form is the same host");
    assert_eq!(loopback.check_ip(ip("::1")), Err("loopback"));
    assert_eq!(loopback.check_ip(ip("10.0.0.1")), Err("private (RFC 1918)"));
    let v6 = Policy::new(vec!["fd00::/8".parse().unwrap()], "ENDPOINT_ALLOW_NETWORKS");
    assert_eq!(v6.check_ip(ip("fd12::1")), Ok(()));
    assert_eq!(v6.check_ip(ip("fc00::1")), Err("private (unique local)"));
}

#[test]
fn only_address_literals_are_judged_in_the_url() {
    let none = Policy::default();
    let err = none.check_url(&Url::parse("http://127.0.0.1:9/token").unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "127.0.0.1 is a loopback address, which URLs stored here may not reach unless OUTBOUND_ALLOW_NETWORKS allows it"
    );
    assert_eq!(err.addr, ip("127.0.0.1"));
    let for_endpoints = Policy::new(vec![], "ENDPOINT_ALLOW_NETWORKS");
    assert!(for_endpoints.check_url(&Url::parse("http://10.0.0.1/").unwrap()).unwrap_err().to_string().ends_with(
        "which URLs stored here may not reach unless ENDPOINT_ALLOW_NETWORKS or OUTBOUND_ALLOW_NETWORKS allows it"
    ));
    assert!(none.check_url(&Url::parse("http://[::ffff:a9fe:a9fe]/").unwrap()).is_err());
    // The URL parser reads the odd IPv4 spellings as the address they mean.
    assert!(none.check_url(&Url::parse("http://0x7f.1/").unwrap()).is_err());
    assert!(none.check_url(&Url::parse("http://2130706433/").unwrap()).is_err());
    assert!(none.check_url(&Url::parse("https://8.8.8.8/").unwrap()).is_ok());
    assert!(none.check_url(&Url::parse("http://localhost/").unwrap()).is_ok(), "names are checked when resolved");
}

#[test]
fn resolved_addresses_are_filtered_and_a_name_with_none_left_is_refused() {
    let a = |s: &str| SocketAddr::new(ip(s), 443);
    let none = Policy::default();
    let kept = none.filter("mixed.example", vec![a("127.0.0.1"), a("8.8.8.8")]).unwrap();
    assert_eq!(kept, vec![a("8.8.8.8")], "a public address is used, the loopback one is not");
    let err = none.filter("evil.example", vec![a("10.0.0.1"), a("::1")]).unwrap_err();
    assert_eq!(err.host, "evil.example");
    assert_eq!(err.addr, ip("10.0.0.1"), "the first refusal is reported");
    assert!(err.to_string().starts_with("evil.example resolves to 10.0.0.1, a private (RFC 1918) address"));
    let allowed = Policy::new(vec!["10.0.0.0/8".parse().unwrap()], "TOKEN_URL_ALLOW_NETWORKS");
    assert_eq!(allowed.filter("ok.example", vec![a("10.0.0.1"), a("::1")]).unwrap(), vec![a("10.0.0.1")]);
}

#[tokio::test]
async fn the_guarded_client_refuses_loopback_by_name_and_by_address_before_sending() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = GuardedClient::build(Duration::from_secs(5), &[], Policy::default()).unwrap();
    let literal = client.post(Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap()).unwrap_err();
    assert_eq!(literal.range, "loopback");
    let err = client.post(Url::parse(&format!("http://localhost:{port}/")).unwrap()).unwrap().send().await.unwrap_err();
    let blocked = blocked_in(&err).expect("the guard's refusal is in the error");
    assert_eq!(blocked.host, "localhost");
    assert_eq!(blocked.range, "loopback");
    // Both requests have ended, so a connection would be waiting to be accepted by now.
    let accepted = listener.accept();
    assert_eq!(accepted.unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "no connection reached the listener");
}
