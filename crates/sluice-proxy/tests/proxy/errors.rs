//! Every failure becomes the right status, and a log line, in one place.

use std::time::Duration;

use sluice_lab::{Backend, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool, service, start};

async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_server_that_never_answers_gets_504() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let lb = start(
        &(service("p", "")
            + &pool(
                "p",
                &[("mute", addr)],
                "[pool.timeouts]\nserver = \"300ms\"\n",
            )),
    )
    .await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let reply = client.get("/").await.unwrap();
    assert_eq!(reply.status, 504);
    let lines = lb.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("server=mute")
            && l.contains("status=504")
            && l.ends_with("end=server_timeout\n")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_server_that_breaks_the_exchange_gets_502() {
    let rude = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = rude.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    });
    let lb = start(&(service("p", "") + &pool("p", &[("rude", addr)], ""))).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 502);
}

#[tokio::test]
async fn an_unreachable_pool_gets_502_after_its_retries() {
    let dead = Backend::start("dead").await;
    dead.stop().await;
    let lb = start(&(service("p", "") + &pool("p", &[("dead", dead.addr)], ""))).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let reply = client.get("/").await.unwrap();
    assert_eq!(reply.status, 502);
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=502") && l.ends_with("end=connect_failed\n")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn headers_not_finished_within_the_deadline_get_408() {
    let b = Backend::start("cas1").await;
    let timeouts = "[service.timeouts]\nrequest_header = \"300ms\"\nclient_idle = \"600ms\"\n";
    let lb = start(&(service("p", timeouts) + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut slow = TcpStream::connect(lb.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut slow).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=408") && l.ends_with("end=header_timeout\n")),
        "{lines:?}"
    );
    // An idle keep-alive connection is closed quietly after client_idle.
    let mut idle = TcpStream::connect(lb.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_all(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(!answer.contains("408"), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_log_line() {
    let b = Backend::start("cas1").await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut bad = TcpStream::connect(lb.addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut bad).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let mut huge = TcpStream::connect(lb.addr).await.unwrap();
    let _ = huge.write_all(big.as_bytes()).await;
    let answer = read_all(&mut huge).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:.80}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let mut too_long = TcpStream::connect(lb.addr).await.unwrap();
    let _ = too_long.write_all(long.as_bytes()).await;
    let answer = read_all(&mut too_long).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer:.80}");
    assert_eq!(b.hits(), 0);
    let lines = lb.log_lines();
    assert!(lines.iter().any(|l| l.contains("status=414")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=400") && l.ends_with("end=bad_request\n")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("status=431")), "{lines:?}");
}
