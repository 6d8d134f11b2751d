//! Weighted round robin proportions and least connections, through the proxy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use sluice_lab::client::{empty, full};
use sluice_lab::{Backend, Client};

use crate::harness::{service, start};

#[tokio::test]
async fn weighted_round_robin_keeps_proportions_within_five_percent() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let config = format!(
        "{}[[pool]]\nname = \"p\"\nservers = [{{ name = \"a\", address = \"{}\", weight = 5 }}, {{ name = \"b\", address = \"{}\", weight = 3 }}, {{ name = \"c\", address = \"{}\", weight = 2 }}]\n",
        service("p", ""),
        a.addr,
        b.addr,
        c.addr
    );
    let lb = start(&config).await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..1000 {
        let reply = client.get("/").await.unwrap();
        *counts
            .entry(reply.header("x-server").unwrap().to_string())
            .or_default() += 1;
    }
    for (name, share) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
        let got = f64::from(counts[name]) / 1000.0;
        assert!(
            (got - share).abs() <= 0.05,
            "{name}: {got} vs {share} ({counts:?})"
        );
    }
    assert_eq!(a.hits() + b.hits() + c.hits(), 1000);
}

#[tokio::test]
async fn least_connections_prefers_the_idle_server() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = format!(
        "{}[[pool]]\nname = \"p\"\nalgorithm = \"least-conn\"\nservers = [{{ name = \"a\", address = \"{}\" }}, {{ name = \"b\", address = \"{}\" }}]\n",
        service("p", ""),
        a.addr,
        b.addr
    );
    let lb = start(&config).await;
    // A long response keeps one server busy.
    let mut slow = Client::connect(lb.addr).await.unwrap();
    let req = slow
        .request("GET", "/chunks?n=2&ms=3000")
        .body(empty())
        .unwrap();
    let held = slow.send_streaming(req).await.unwrap();
    let busy = held.headers()["x-server"].to_str().unwrap().to_string();
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..10 {
        let reply = client.get("/").await.unwrap();
        assert_ne!(
            reply.header("x-server"),
            Some(busy.as_str()),
            "went to the busy server"
        );
    }
    let body = tokio::time::timeout(Duration::from_secs(10), held.into_body().collect()).await;
    assert!(body.is_ok());
}

/// sluice with one pool of one server, `a`.
async fn in_front_of_one_server() -> (Backend, crate::harness::Lb) {
    let a = Backend::start("a").await;
    let config =
        crate::harness::service("p", "") + &crate::harness::pool("p", &[("a", a.addr)], "");
    let lb = start(&config).await;
    (a, lb)
}

#[tokio::test]
async fn server_connections_are_kept_alive_and_reused_across_clients() {
    let (a, lb) = in_front_of_one_server().await;
    for _ in 0..10 {
        // A new client connection each time: reuse happens on the server side.
        let mut client = Client::connect(lb.addr).await.unwrap();
        for _ in 0..5 {
            assert_eq!(client.get("/").await.unwrap().status, 200);
        }
    }
    assert_eq!(a.hits(), 50);
    assert_eq!(
        a.connections(),
        1,
        "every request should ride one kept-alive connection"
    );
}

#[tokio::test]
async fn a_server_connection_parked_while_idle_carries_the_next_request() {
    let (a, lb) = in_front_of_one_server().await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..2 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
        // Idle for longer than sluice keeps a server connection's HTTP state (1 s, and
        // half a second between sweeps): only its socket is kept.
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }
    // A body cannot be sent again: the socket itself must be sound.
    let post = client.request("POST", "/").body(full(vec![b'x'; 100_000]));
    assert_eq!(client.send(post.unwrap()).await.unwrap().status, 200);
    assert_eq!(a.hits(), 3);
    assert_eq!(
        a.connections(),
        1,
        "the parked socket carried every request"
    );
}

/// A keep-alive server that answers the first request on each connection and closes the
/// connection, unanswered, at the second: what a server closing an idle connection just
/// as a request goes out looks like from the balancer. Counts its connections.
async fn closes_at_the_second_request() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // A GET's head arrives in one read on loopback.
                if matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    let _ = conn.write_all(ok).await;
                    let _ = conn.read(&mut buf).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_get_on_a_connection_the_server_closed_under_it_is_sent_again() {
    let (addr, accepted) = closes_at_the_second_request().await;
    let config = service("p", "") + &crate::harness::pool("p", &[("a", addr)], "");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    // Idle long enough that the server could be closing it: the head is kept and the
    // request goes again over a new connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A connection that answered a moment ago was not closed for idleness: the server
    // failed this request, and it is not sent twice.
    assert_eq!(client.get("/").await.unwrap().status, 502);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
