//! The capped readers against a raw loopback server that answers with exactly the bytes given, so
//! each edge (at the cap, one past it, with and without `Content-Length`) is exact.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

/// What the raw server sends: a `Content-Length` (or chunked when `None`), then `body_len` bytes
/// of `x` in 1000-byte pieces (`None`: without end), then it closes. Returns the response and the
/// body bytes written so far.
async fn answer(length_header: Option<usize>, body_len: Option<usize>) -> (reqwest::Response, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // Read the request (a GET: headers only) before answering.
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = match length_header {
            Some(len) => format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"),
            None => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_owned(),
        };
        let _ = socket.write_all(head.as_bytes()).await;
        let mut left = body_len.unwrap_or(usize::MAX);
        while left > 0 {
            let part = vec![b'x'; left.min(1000)];
            let framed = match length_header {
                Some(_) => part.clone(),
                None => [format!("{:x}\r\n", part.len()).into_bytes(), part.clone(), b"\r\n".to_vec()].concat(),
            };
            if socket.write_all(&framed).await.is_err() {
                return;
            }
            counter.fetch_add(part.len() as u64, Ordering::Relaxed);
            left -= part.len();
        }
        if length_header.is_none() {
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
        let _ = socket.shutdown().await;
    });
    let client = build_with(Duration::from_secs(5), &[]).unwrap();
    (client.get(format!("http://{addr}/")).send().await.unwrap(), sent)
}

#[tokio::test]
async fn an_answer_exactly_at_the_cap_is_read_whole() {
    for length in [Some(5000), None] {
        let body = read_capped(answer(length, Some(5000)).await.0, 5000, "here").await.unwrap();
        assert_eq!(body.len(), 5000, "length: {length:?}");
        assert!(body.bytes().all(|b| b == b'x'));
    }
}

#[tokio::test]
async fn one_byte_past_the_cap_is_refused_with_the_senders_name() {
    for length in [Some(5001), None] {
        let err = read_capped(answer(length, Some(5001)).await.0, 5000, "the token URL").await.unwrap_err();
        assert_eq!(err.to_string(), "the answer from the token URL is larger than 5000 bytes");
    }
}

#[tokio::test]
async fn a_content_length_past_the_cap_is_refused_before_reading() {
    // The server claims one byte too many but sends only ten: only the header can say "too large".
    let (res, _) = answer(Some(5001), Some(10)).await;
    let err = read_capped(res, 5000, "there").await.unwrap_err();
    assert!(matches!(err, BodyError::TooLarge { cap: 5000, .. }), "{err}");
}

#[tokio::test]
async fn an_endless_answer_is_read_only_up_to_the_cap() {
    let (res, sent) = answer(None, None).await;
    assert!(matches!(read_capped(res, 5000, "there").await, Err(BodyError::TooLarge { .. })));
    let (res, sent_excerpt) = answer(None, None).await;
    assert_eq!(read_excerpt(res, 1500).await.len(), 1500);
    // The socket buffers hold a few MiB at most; a reader that kept going would have taken far more.
    for s in [sent, sent_excerpt] {
        assert!(s.load(Ordering::Relaxed) < 64 * MIB as u64, "{}", s.load(Ordering::Relaxed));
    }
}

#[tokio::test]
async fn the_excerpt_is_the_first_bytes_only() {
    for length in [Some(5000), None] {
        assert_eq!(read_excerpt(answer(length, Some(5000)).await.0, 1500).await.len(), 1500);
        assert_eq!(read_excerpt(answer(length, Some(700)).await.0, 1500).await.len(), 700);
        assert_eq!(read_excerpt(answer(length, Some(1500)).await.0, 1500).await.len(), 1500);
    }
}

#[test]
fn sizes_are_said_in_the_largest_whole_unit() {
    assert_eq!(size(ANSWER_CAP), "1 MiB");
    assert_eq!(size(EXCERPT_CAP), "4 KiB");
    assert_eq!(size(3 * 1024 * 1024), "3 MiB");
    assert_eq!(size(1024 * 1024 + 1024), "1025 KiB");
    assert_eq!(size(1024), "1 KiB");
    assert_eq!(size(1023), "1023 bytes");
    assert_eq!(size(1025), "1025 bytes");
}

#[test]
fn snippets_are_one_line_of_at_most_200_characters() {
    assert_eq!(snippet("a\n  b\tc"), "a b c");
    assert_eq!(snippet("a\0b \x1b[2K"), "a\\u{0}b \\u{1b}[2K", "control characters written out");
    let long = "é".repeat(300);
    assert_eq!(snippet(&long), format!("{}…", "é".repeat(200)));
    assert_eq!(snippet(&"é".repeat(200)), "é".repeat(200));
}

/// A raw server that reads one request, hands its head back through the channel, then answers with
/// `response` (or, with `None`, never answers).
async fn raw_server(response: Option<&'static str>) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
        match response {
            Some(r) => {
                let _ = socket.write_all(r.as_bytes()).await;
            }
            None => tokio::time::sleep(Duration::from_secs(60)).await,
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn the_client_follows_no_redirect_and_names_itself() {
    let (addr, head) = raw_server(Some(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let res = build().get(format!("http://{addr}/token")).send().await.unwrap();
    assert_eq!(res.status(), 302, "the redirect is the answer, not followed");
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(head.contains(&format!("user-agent: connect-hub/{}", env!("CARGO_PKG_VERSION"))), "{head}");
}

#[tokio::test]
async fn the_client_gives_up_at_its_total_timeout() {
    let (addr, _head) = raw_server(None).await;
    let client = build_with(Duration::from_millis(200), &[]).unwrap();
    let err = client.get(format!("http://{addr}/")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn a_transport_failure_is_described_without_the_urls_query() {
    // A port nobody listens on: bind, note it, let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = build().get(format!("http://127.0.0.1:{port}/hook?secret=s3cr3t")).send().await.unwrap_err();
    assert_eq!(describe_transport(&err), format!("the request to http://127.0.0.1:{port}/hook could not connect"));
    assert_eq!(
        describe_request("the token request", &err),
        format!("the token request to http://127.0.0.1:{port}/hook could not connect")
    );
    let (addr, _head) = raw_server(None).await;
    let client = build_with(Duration::from_millis(200), &[]).unwrap();
    let err = client.get(format!("http://{addr}/slow")).send().await.unwrap_err();
    assert_eq!(describe_transport(&err), format!("the request to http://{addr}/slow timed out"));
}

#[tokio::test]
async fn an_answer_cut_short_is_described_as_broken_off() {
    let (addr, _head) =
        raw_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nonly ten b")).await;
    let res = build().get(format!("http://{addr}/token")).send().await.unwrap();
    let err = res.bytes().await.unwrap_err();
    // A body error carries no URL.
    assert_eq!(describe_transport(&err), "the request broke off while reading the answer");
}

#[test]
fn retry_after_is_whole_seconds_capped_at_a_day_however_many_digits() {
    let of = |v: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
        retry_after(&h)
    };
    assert_eq!(of("120"), Some(Duration::from_secs(120)));
    assert_eq!(of(" 0 "), Some(Duration::ZERO));
    assert_eq!(of("86400"), Some(MAX_RETRY_AFTER));
    assert_eq!(of("86401"), Some(MAX_RETRY_AFTER));
    assert_eq!(of("18446744073709551615"), Some(MAX_RETRY_AFTER));
    assert_eq!(of("99999999999999999999999999"), Some(MAX_RETRY_AFTER), "past u64: still a number of seconds");
    for not_seconds in ["", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "+5"] {
        assert_eq!(of(not_seconds), None, "{not_seconds:?}");
    }
    assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
}
