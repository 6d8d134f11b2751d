//! Idle keep-alive connections: parked (hyper's buffers freed) after a short pause and
//! served again on the same socket, closed once `client_idle` has passed.

use std::time::{Duration, Instant};

use sluice_lab::raw::{read_response, status};
use sluice_lab::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{pool, service, start, Lb};

const GET: &[u8] = b"GET /owa/ HTTP/1.1\r\nHost: x\r\n\r\n";
/// Longer than the pause after which sluice parks an idle connection (200 ms).
const PAUSE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests() {
    let b = Backend::start("cas1").await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut conn = BufReader::new(TcpStream::connect(lb.addr).await.unwrap());
    for _ in 0..3 {
        conn.get_mut().write_all(GET).await.unwrap();
        let (head, _) = read_response(&mut conn).await.unwrap();
        assert_eq!(status(&head), Some(200), "{head}");
        tokio::time::sleep(PAUSE).await;
    }
    // A request whose first half came before the pause and the rest after it.
    let (first, rest) = GET.split_at(10);
    conn.get_mut().write_all(first).await.unwrap();
    tokio::time::sleep(PAUSE).await;
    conn.get_mut().write_all(rest).await.unwrap();
    let (head, _) = read_response(&mut conn).await.unwrap();
    assert_eq!(status(&head), Some(200), "{head}");
    // A request and half of the next in one write, the rest after the pause.
    let mut both = GET.to_vec();
    both.extend_from_slice(first);
    conn.get_mut().write_all(&both).await.unwrap();
    let (head, _) = read_response(&mut conn).await.unwrap();
    assert_eq!(status(&head), Some(200), "{head}");
    tokio::time::sleep(PAUSE).await;
    conn.get_mut().write_all(rest).await.unwrap();
    let (head, _) = read_response(&mut conn).await.unwrap();
    assert_eq!(status(&head), Some(200), "{head}");
    tokio::time::sleep(PAUSE).await;
    conn.get_mut().write_all(GET).await.unwrap();
    let (head, _) = read_response(&mut conn).await.unwrap();
    assert_eq!(status(&head), Some(200), "{head}");
    assert_eq!(b.hits(), 7);
}

#[tokio::test]
async fn an_idle_connection_closes_after_client_idle_counted_from_its_last_answer() {
    let (_b, _lb, mut conn) = answered_once("client_idle = \"700ms\"").await;
    let answered = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    let waited = answered.elapsed();
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

/// The connection's timer is moved lazily: set for the pause after an answer, it fires
/// before a later request's header deadline and must be set again for the rest.
#[tokio::test]
async fn a_later_request_gets_its_whole_header_deadline() {
    let (_b, _lb, mut conn) = answered_once("request_header = \"700ms\"").await;
    // Within the pause before parking, half of the next request, and no more.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.get_mut().write_all(&GET[..10]).await.unwrap();
    let begun = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let waited = begun.elapsed();
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_millis(2500),
        "408 after {waited:?}"
    );
}

/// A connection through sluice (with `timeout`, a line of `[service.timeouts]`) whose
/// first request has been answered.
async fn answered_once(timeout: &str) -> (Backend, Lb, BufReader<TcpStream>) {
    let b = Backend::start("cas1").await;
    let timeouts = format!("[service.timeouts]\n{timeout}\n");
    let lb = start(&(service("p", &timeouts) + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut conn = BufReader::new(TcpStream::connect(lb.addr).await.unwrap());
    conn.get_mut().write_all(GET).await.unwrap();
    let (head, _) = read_response(&mut conn).await.unwrap();
    assert_eq!(status(&head), Some(200), "{head}");
    (b, lb, conn)
}
