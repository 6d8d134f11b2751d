//! Requests whose framing or target two parsers could read differently (RFC 9112, RFC 9110):
//! each is refused with its status and the connection closed before the server sees a byte,
//! or normalised so that the server reads exactly what sluice read. docs/security.md
//! lists the decisions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool, service, start, Lb};

/// A server that records every byte it receives and answers each connection's request,
/// once it is complete, with `ok` and `Connection: close`.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(answer_one(s, record.clone()));
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn answer_one(mut s: TcpStream, record: Arc<Mutex<Vec<u8>>>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !complete(&got) {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                record.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            _ => return,
        }
    }
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let _ = s.write_all(ok).await;
}

/// Whether `got` holds a whole request: its head, and the body its head declares.
fn complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got).to_ascii_lowercase();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if head.contains("\r\ntransfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    let length = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.parse().unwrap());
    body.len() >= length
}

async fn lb_before(server: &Recorder) -> Lb {
    start(&(service("p", "") + &pool("p", &[("cas1", server.addr)], ""))).await
}

/// Sends `raw` on a new connection; returns everything the balancer answered, read until
/// it closed the connection (a test failure if it keeps it open for 5 s). Unlike
/// [`crate::harness::send_raw`], a reset ends the read like a close: sluice refuses these
/// before reading their bodies, and closing a socket with unread bytes resets it.
async fn exchange(lb: &Lb, raw: &[u8]) -> String {
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    c.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "connection left open after {:?} answered {:?}",
        String::from_utf8_lossy(raw),
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Each of these is refused with its status, the connection closes, and the server
/// receives nothing.
#[tokio::test]
async fn ambiguous_requests_are_refused_and_never_reach_the_server() {
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "two differing Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (
            "a Content-Length list",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
            400,
        ),
        (
            "a signed Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
            400,
        ),
        (
            "chunked not last",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "chunked twice",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "an obfuscated chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "a quoted chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "chunked after a vertical tab",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "a coding sluice does not implement",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "whitespace before the colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            400,
        ),
        (
            "a bare CR in a header",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\rTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "a NUL in a header",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\x00ne\r\n\r\n",
            400,
        ),
        (
            "a control character in the target",
            b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("no host at all on HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", 400),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        (
            "a Host with a space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        (
            "a Host with user info",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            400,
        ),
        (
            "a Host with a bad port",
            b"GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n",
            400,
        ),
        (
            "an empty Host",
            b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
            400,
        ),
        (
            "an absolute target naming another host",
            b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        (
            "a chunk size that is not hex",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "a chunk size that overflows",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "a chunk extension with a bare LF",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
            400,
        ),
    ];
    let server = Recorder::start().await;
    let lb = lb_before(&server).await;
    for (what, raw, expected) in cases {
        let answer = exchange(&lb, raw).await;
        assert_eq!(status(&answer), *expected, "{what}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{what}: no Connection: close in {answer}"
        );
        assert_eq!(server.seen(), "", "{what}: the server saw it");
    }
    // Every refusal has its access log line.
    let lines = lb.log_lines();
    assert!(lines.len() >= cases.len(), "{lines:#?}");
}

/// These are accepted and reach the server in one unambiguous form.
#[tokio::test]
async fn acceptable_variants_are_normalised_before_the_server() {
    let server = Recorder::start().await;
    let lb = lb_before(&server).await;
    // The same length twice is one length (RFC 9112 6.3).
    let answer = exchange(
        &lb,
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;

    assert_eq!(status(&answer), 200, "{answer}");
    let seen = server.seen().to_ascii_lowercase();
    assert_eq!(seen.matches("content-length: 3\r\n").count(), 1, "{seen}");
    assert!(seen.ends_with("\r\n\r\nabc"), "{seen}");
    // Chunked in any case, with OWS around it, is chunked; the server gets the body
    // framed anew.
    server.forget();
    let answer = exchange(
        &lb,
        b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\t ChUnKeD \r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let seen = server.seen();
    assert!(seen.starts_with("POST /b HTTP/1.1\r\n"), "{seen}");
    assert!(!seen.contains("ext=1"), "chunk extension passed on: {seen}");
    assert!(seen.ends_with("abc\r\n0\r\n\r\n"), "{seen}");
    // A bare LF ends a line (RFC 9112 2.2 allows it); the server gets CRLF.
    server.forget();
    let answer = exchange(&lb, b"GET /lf HTTP/1.1\nHost: a\nConnection: close\n\n").await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        server.seen().starts_with("GET /lf HTTP/1.1\r\nHost: a\r\n"),
        "{}",
        server.seen()
    );
    // Content-Length with Transfer-Encoding, in either order: hyper drops the length and
    // reads chunks (RFC 9112 6.3), the server gets the chunks alone, and the client
    // connection closes after the answer even though it asked to stay open.
    for head in [
        "Content-Length: 40\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 40",
    ] {
        server.forget();
        let raw = format!("POST /cl-te HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        let answer = exchange(&lb, raw.as_bytes()).await;
        assert_eq!(status(&answer), 200, "{answer}");
        let seen = server.seen().to_ascii_lowercase();
        assert!(!seen.contains("content-length"), "{seen}");
        assert!(seen.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{seen}");
    }
    // An absolute-form target naming the Host's own host is sent in origin form.
    server.forget();
    let answer = exchange(
        &lb,
        b"GET http://A:80/c?q HTTP/1.1\r\nHost: a:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        server.seen().starts_with("GET /c?q HTTP/1.1\r\n"),
        "{}",
        server.seen()
    );
}

/// A chunked body that turns malformed after the server got the head and first chunk is
/// the client's fault: 400, both connections closed, and the server never sees an end of
/// the message it could read a next request after.
#[tokio::test]
async fn a_body_that_goes_bad_midway_is_a_400_and_ends_both_connections() {
    let server = Recorder::start().await;
    let lb = lb_before(&server).await;
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    c.write_all(
        b"POST /late HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await
    .unwrap();
    let head_seen = crate::harness::wait_for(Duration::from_secs(5), || {
        server.seen().ends_with("abc\r\n")
    })
    .await;
    assert!(head_seen.is_some(), "{}", server.seen());
    c.write_all(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = crate::harness::read_until_closed(&mut c).await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    let seen = server.seen();
    assert!(
        !seen.contains("smuggled") && !seen.ends_with("0\r\n\r\n"),
        "{seen}"
    );
    let line = lb.log_lines().concat();
    assert!(
        line.contains("status=400") && line.contains("end=bad_request"),
        "{line}"
    );
}

/// A server that answers one request with `response`, then reports whether sluice closed
/// the connection within 5 s.
async fn one_answer_server(
    response: &'static str,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !complete(&got) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(response.as_bytes()).await.unwrap();
        let rest = tokio::time::timeout(Duration::from_secs(5), async {
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let _ = tx.send(rest.await.is_ok());
    });
    (addr, rx)
}

#[tokio::test]
async fn ambiguous_server_responses_become_502_and_the_server_connection_closes() {
    let cases = [
        (
            "differing Content-Length",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        ),
        (
            "Content-Length with Transfer-Encoding",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "a coding other than chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
        ),
        ("a malformed status line", "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok"),
        (
            "whitespace before a colon",
            "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
        ),
        (
            "an unasked 101",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        ),
        ("a status beyond 599", "HTTP/1.1 700 Odd\r\nContent-Length: 2\r\n\r\nok"),
    ];
    for (what, response) in cases {
        let (server, closed) = one_answer_server(response).await;
        let lb = start(&(service("p", "") + &pool("p", &[("cas1", server)], ""))).await;
        let mut c = TcpStream::connect(lb.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"))
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 502 "), "{what}: {answer}");
        assert!(!answer.contains("ok"), "{what}: passed on: {answer}");
        assert!(closed.await.unwrap(), "{what}: server connection left open");
    }
}

/// Interim answers nobody asked for (100 without `Expect`, 103) are dropped; the final
/// answer is relayed.
#[tokio::test]
async fn unasked_interim_responses_are_dropped() {
    let response =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                    HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (server, _closed) = one_answer_server(response).await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", server)], ""))).await;
    let answer = exchange(
        &lb,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        !answer.contains("100") && !answer.contains("103"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
}
