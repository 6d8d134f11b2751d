//! `Expect: 100-continue` with raw clients that really wait for the 100, in front of a
//! server that sends it, one that answers 401 at once, and one that ignores `Expect`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_lab::raw::{self, content_length};
use sluice_lab::Backend;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool, service, start};

const BODY: usize = 100_000;

async fn read_head(conn: &mut BufReader<TcpStream>) -> String {
    raw::read_head(conn).await.unwrap()
}

async fn read_response(conn: &mut BufReader<TcpStream>) -> (String, String) {
    let (head, body) = raw::read_response(conn).await.unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

async fn send_head(addr: SocketAddr, path: &str) -> BufReader<TcpStream> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: {BODY}\r\nExpect: 100-continue\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    BufReader::new(conn)
}

async fn send_body(conn: &mut BufReader<TcpStream>) {
    conn.get_mut().write_all(&vec![b'x'; BODY]).await.unwrap();
}

/// A keep-alive HTTP/1.1 server that never sends 100: it reads the head, then the body,
/// then answers `received=N`. Keeps every request head it saw.
async fn ignoring_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(tcp);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; content_length(&head)];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    seen.lock().unwrap().push(head);
                    let text = format!("received={}", body.len());
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if conn.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn the_servers_100_is_relayed_and_then_the_body_flows() {
    let server = Backend::start("cas1").await;
    // A long wait: a 100 arriving at once can only be the server's.
    let extra = "[service.timeouts]\nexpect_continue = \"10s\"";
    let lb = start(&(service("p", extra) + &pool("p", &[("cas1", server.addr)], ""))).await;
    let started = Instant::now();
    let mut conn = send_head(lb.addr, "/upload").await;
    let interim = read_head(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "relayed, not timed out"
    );
    send_body(&mut conn).await;
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, format!("received={BODY}"));
}

#[tokio::test]
async fn an_early_401_comes_back_without_the_body_being_uploaded() {
    let server = Backend::start("cas1").await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", server.addr)], ""))).await;
    let mut conn = send_head(lb.addr, "/status/401").await;
    let (head, _) = read_response(&mut conn).await;
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "no 100 first, no 417/501: {head}"
    );
    let lines = lb.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("status=401 in=0 ")),
        "nothing of the body was read: {lines:?}"
    );
    // The same client connection cannot be left mid-request: sluice closes it or reads
    // on; either way a new connection works.
    let mut again = send_head(lb.addr, "/upload").await;
    assert!(read_head(&mut again).await.starts_with("HTTP/1.1 100"));
    send_body(&mut again).await;
    assert_eq!(
        read_response(&mut again).await.1,
        format!("received={BODY}")
    );
}

#[tokio::test]
async fn a_server_ignoring_expect_gets_the_body_after_the_wait() {
    let (addr, heads) = ignoring_server().await;
    let extra = "[service.timeouts]\nexpect_continue = \"300ms\"";
    let lb = start(&(service("p", extra) + &pool("p", &[("s", addr)], ""))).await;
    let started = Instant::now();
    let mut conn = send_head(lb.addr, "/upload").await;
    let interim = read_head(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "held for the wait"
    );
    send_body(&mut conn).await;
    let (head, body) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, format!("received={BODY}"));
    let seen = heads.lock().unwrap().clone();
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("expect: 100-continue"),
        "forwarded: {seen:?}"
    );
}

#[tokio::test]
async fn a_client_that_does_not_wait_for_the_100_works_too() {
    let server = Backend::start("cas1").await;
    let (ignoring, _) = ignoring_server().await;
    for addr in [server.addr, ignoring] {
        let extra = "[service.timeouts]\nexpect_continue = \"300ms\"";
        let lb = start(&(service("p", extra) + &pool("p", &[("s", addr)], ""))).await;
        let mut conn = send_head(lb.addr, "/upload").await;
        send_body(&mut conn).await;
        let mut head = read_head(&mut conn).await;
        if head.starts_with("HTTP/1.1 100") {
            head = read_head(&mut conn).await;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0; content_length(&head)];
        conn.read_exact(&mut body).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&body), format!("received={BODY}"));
    }
}

#[tokio::test]
async fn expect_answer_mode_sends_100_itself_and_keeps_expect_from_the_server() {
    let (addr, heads) = ignoring_server().await;
    let extra = "expect = \"answer\"\n[service.timeouts]\nexpect_continue = \"10s\"";
    let lb = start(&(service("p", extra) + &pool("p", &[("s", addr)], ""))).await;
    let started = Instant::now();
    let mut conn = send_head(lb.addr, "/upload").await;
    assert!(read_head(&mut conn)
        .await
        .starts_with("HTTP/1.1 100 Continue"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered, not waited"
    );
    send_body(&mut conn).await;
    assert_eq!(read_response(&mut conn).await.1, format!("received={BODY}"));
    let seen = heads.lock().unwrap().clone();
    assert!(
        !seen[0].to_ascii_lowercase().contains("expect:"),
        "{seen:?}"
    );
}
