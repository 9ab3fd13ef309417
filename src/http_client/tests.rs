//! The capped readers against a raw loopback server that answers with exactly the bytes given, so
//! each edge (at the cap, one past it, with and without `Content-Length`) is exact.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

/// Serve one answer of `body_len` bytes of `x`: with a `Content-Length`, or chunked without one.
async fn answer(body_len: usize, with_length: bool) -> reqwest::Response {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
        let head = if with_length {
            format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n")
        } else {
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_owned()
        };
        let _ = socket.write_all(head.as_bytes()).await;
        let body = vec![b'x'; body_len];
        if with_length {
            let _ = socket.write_all(&body).await;
        } else {
            // Small chunks, so the reader sees many of them.
            for part in body.chunks(1000) {
                let _ = socket.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await;
                let _ = socket.write_all(part).await;
                let _ = socket.write_all(b"\r\n").await;
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
        let _ = socket.shutdown().await;
    });
    build().get(format!("http://{addr}/")).send().await.unwrap()
}

#[tokio::test]
async fn an_answer_exactly_at_the_cap_is_read_whole() {
    for with_length in [true, false] {
        let body = read_capped(answer(5000, with_length).await, 5000, "here").await.unwrap();
        assert_eq!(body.len(), 5000, "with_length: {with_length}");
        assert!(body.bytes().all(|b| b == b'x'));
    }
}

#[tokio::test]
async fn one_byte_past_the_cap_is_refused_with_the_senders_name() {
    for with_length in [true, false] {
        let err = read_capped(answer(5001, with_length).await, 5000, "the token URL").await.unwrap_err();
        assert_eq!(err.to_string(), "the answer from the token URL is larger than 5000 bytes");
    }
}

#[tokio::test]
async fn the_excerpt_is_the_first_bytes_only() {
    for with_length in [true, false] {
        assert_eq!(read_excerpt(answer(5000, with_length).await, 1500).await.len(), 1500);
        assert_eq!(read_excerpt(answer(700, with_length).await, 1500).await.len(), 700);
        assert_eq!(read_excerpt(answer(1500, with_length).await, 1500).await.len(), 1500);
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
    let long = "é".repeat(300);
    assert_eq!(snippet(&long), format!("{}…", "é".repeat(200)));
    assert_eq!(snippet(&"é".repeat(200)), "é".repeat(200));
}
