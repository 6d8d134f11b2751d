//! Slow and greedy clients: slowloris connections are cut at the header deadline while
//! normal clients go on being served; a TLS handshake that never finishes is cut; past
//! the process-wide connection limit new connections are closed on accept.

use std::time::{Duration, Instant};

use sluice_lab::{Backend, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::harness::{pool, send_raw, service, start, wait_for};

const SLOW_CLIENTS: usize = 200;

/// Sends a request head one byte every 100 ms for at most 6 s; returns how long after its
/// start sluice closed the connection and whether it answered 408 first.
async fn slowloris(addr: std::net::SocketAddr) -> (Duration, bool) {
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut answer = Vec::new();
    for byte in head.iter().cycle().take(60) {
        if c.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), c.read_to_end(&mut rest)).await;
    answer.extend_from_slice(&rest);
    let answered = String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 ");
    (start.elapsed(), answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_normal_clients_still_served() {
    let b = Backend::start("cas1").await;
    let timeouts = "[service.timeouts]\nrequest_header = \"1s\"\n";
    let lb = start(&(service("p", timeouts) + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut slow = JoinSet::new();
    for _ in 0..SLOW_CLIENTS {
        slow.spawn(slowloris(lb.addr));
    }
    // Normal clients, each on a new connection, while the slow ones hold theirs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let mut client = Client::connect(lb.addr).await.unwrap();
        let reply = client.get("/owa/").await.unwrap();
        assert_eq!(reply.status, 200);
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "a normal request took {worst:?}"
    );
    let mut cut = 0;
    while let Some(result) = slow.join_next().await {
        let (lasted, answered) = result.unwrap();
        assert!(answered, "a slow client was not answered 408");
        assert!(
            lasted < Duration::from_millis(3500),
            "a slow client lasted {lasted:?}"
        );
        cut += 1;
    }
    assert_eq!(cut, SLOW_CLIENTS);
    assert_eq!(b.hits(), 20, "no slow request reached the server");
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cert = sluice_lab::TestCert::new(&["mail.contoso.com"]);
    let (cert_path, key_path) = cert.write(dir.path(), "site");
    let b = Backend::start("cas1").await;
    let extra = format!(
        "[service.timeouts]\ntls_handshake = \"500ms\"\n[service.tls]\ncertificates = [{{ cert = {:?}, key = {:?} }}]\n",
        cert_path, key_path
    );
    let lb = crate::harness::start_in(
        &(service("p", &extra) + &pool("p", &[("cas1", b.addr)], "")),
        dir.path(),
    )
    .await;
    let started = Instant::now();
    let mut c = TcpStream::connect(lb.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed")
        .ok();
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(450) && lasted < Duration::from_secs(3),
        "{lasted:?}"
    );
}

#[tokio::test]
async fn past_the_process_limit_new_connections_are_closed_on_accept() {
    let b = Backend::start("cas1").await;
    let config =
        service("p", "") + &pool("p", &[("cas1", b.addr)], "") + "[global]\nmax_connections = 5\n";
    let lb = start(&config).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut client = Client::connect(lb.addr).await.unwrap();
        assert_eq!(client.get("/").await.unwrap().status, 200);
        held.push(client);
    }
    let mut extra = TcpStream::connect(lb.addr).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the sixth connection was kept open");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    let logged = wait_for(Duration::from_secs(2), || {
        lb.log_lines()
            .iter()
            .any(|l| l.contains("end=max_connections"))
    })
    .await;
    assert!(logged.is_some(), "no log line for the refusal");
    // One leaves; the next one is served.
    held.pop();
    let mut served = false;
    for _ in 0..50 {
        let mut client = Client::connect(lb.addr).await.unwrap();
        if client.get("/").await.is_ok_and(|r| r.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a place that came free was not given out");
    assert_eq!(b.hits(), 6);
}

/// A request body that stops: after `client_idle` the client gets 408 and both
/// connections close.
#[tokio::test]
async fn a_body_that_stalls_gets_408_after_client_idle() {
    let b = Backend::start("cas1").await;
    let timeouts = "[service.timeouts]\nclient_idle = \"500ms\"\n";
    let lb = start(&(service("p", timeouts) + &pool("p", &[("cas1", b.addr)], ""))).await;
    let started = Instant::now();
    let stalled = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";
    let answer = send_raw(lb.addr, stalled).await;
    let lasted = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        lasted >= Duration::from_millis(450) && lasted < Duration::from_secs(3),
        "{lasted:?}"
    );
    let logged = wait_for(Duration::from_secs(2), || {
        lb.log_lines()
            .iter()
            .any(|l| l.contains("status=408") && l.contains("end=client_timeout"))
    })
    .await;
    assert!(logged.is_some());
}
