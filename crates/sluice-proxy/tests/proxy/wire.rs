//! What crosses the wire: header-name case kept on HTTP/1.1 (or lower case, if so
//! configured), hop-by-hop headers removed both ways, forwarding headers added, custom
//! method tokens passed.

use std::time::Duration;

use sluice_lab::{Backend, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool, service, start};

/// Reads until the end of a header section.
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before the end of the headers: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A server that answers one request with `response` and hands over the request head.
async fn raw_server(
    response: &'static str,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    raw_server_in_pieces(vec![response], Duration::ZERO).await
}

/// [`raw_server`] writing its response in `pieces`, `gap` apart.
async fn raw_server_in_pieces(
    pieces: Vec<&'static str>,
    gap: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let _ = tx.send(head);
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            s.write_all(piece.as_bytes()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    (addr, rx)
}

/// How long the server of [`first_read_of`] waits between the pieces of its response.
const GAP: Duration = Duration::from_millis(300);

/// What the client's first read gets of the answer to a `GET` through sluice, in front of
/// a server writing `pieces` [`GAP`] apart.
async fn first_read_of(pieces: Vec<&'static str>) -> String {
    let (server, _) = raw_server_in_pieces(pieces, GAP).await;
    let lb = start(&(service("p", "") + &pool("p", &[("s", server)], ""))).await;
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    client
        .write_all(b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(GAP + Duration::from_millis(250), client.read(&mut buf))
        .await
        .expect("nothing arrived within 250 ms of the server's second piece")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The response head `got` starts with, and what came after it.
fn head_and_rest(got: &str) -> (&str, &str) {
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
    got.split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no whole head: {got:?}"))
}

#[tokio::test]
async fn a_small_body_a_moment_behind_its_head_goes_out_with_it() {
    let got = first_read_of(vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok"]).await;
    assert_eq!(head_and_rest(&got).1, "ok", "the head came alone: {got:?}");
}

#[tokio::test]
async fn the_head_of_a_streamed_or_large_body_is_not_held_back() {
    let chunked = first_read_of(vec![
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "2\r\nok\r\n0\r\n\r\n",
    ])
    .await;
    assert_eq!(
        head_and_rest(&chunked).1,
        "",
        "held with its body: {chunked:?}"
    );
    let large = first_read_of(vec![
        "HTTP/1.1 200 OK\r\nContent-Length: 16385\r\n\r\n",
        "x",
    ])
    .await;
    assert_eq!(head_and_rest(&large).1, "", "held with its body: {large:?}");
}

#[tokio::test]
async fn header_name_case_is_kept_and_hop_by_hop_headers_are_removed_both_ways() {
    let response = "HTTP/1.1 200 Success\r\nX-FEServer: CAS1\r\nContent-Type: application/rpc\r\n\
                    Connection: X-Server-Hop\r\nX-Server-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok";
    let (server, head_rx) = raw_server(response).await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", server)], ""))).await;
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    let request = "RPC_OUT_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail.contoso.com\r\nX-MiXeD-CaSe: 1\r\n\
                   Connection: keep-alive, X-Client-Hop\r\nX-Client-Hop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\n\
                   Proxy-Connection: keep-alive\r\nX-Forwarded-For: 192.0.2.7\r\nContent-Length: 0\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let seen = head_rx.await.unwrap();
    assert!(
        seen.starts_with("RPC_OUT_DATA /rpc/rpcproxy.dll HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("\r\nX-MiXeD-CaSe: 1\r\n"),
        "case lost: {seen}"
    );
    assert!(seen.contains("\r\nHost: mail.contoso.com\r\n"), "{seen}");
    for gone in ["x-client-hop", "keep-alive", "te:", "proxy-connection"] {
        assert!(
            !seen.to_ascii_lowercase().contains(gone),
            "{gone} forwarded: {seen}"
        );
    }
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-for: 192.0.2.7, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-proto: http\r\n"),
        "{seen}"
    );
    let answer = read_head(&mut client).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 Success\r\n"),
        "reason phrase lost: {answer}"
    );
    assert!(
        answer.contains("\r\nX-FEServer: CAS1\r\n"),
        "case lost: {answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("x-server-hop"),
        "{answer}"
    );
    assert!(
        !answer.to_ascii_lowercase().contains("keep-alive: timeout"),
        "{answer}"
    );
}

#[tokio::test]
async fn header_names_go_out_in_lower_case_when_their_case_is_not_kept() {
    let response = "HTTP/1.1 200 Success\r\nX-FEServer: CAS1\r\nContent-Length: 2\r\n\r\nok";
    let (server, head_rx) = raw_server(response).await;
    let config = service("p", "")
        + &pool("p", &[("cas1", server)], "")
        + "[global]\npreserve_header_case = false\n";
    let lb = start(&config).await;
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    let request = "GET /owa/ HTTP/1.1\r\nHost: mail.contoso.com\r\nX-MiXeD-CaSe: 1\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let seen = head_rx.await.unwrap();
    assert!(seen.contains("\r\nx-mixed-case: 1\r\n"), "{seen}");
    assert!(seen.contains("\r\nhost: mail.contoso.com\r\n"), "{seen}");
    let answer = read_head(&mut client).await;
    assert!(answer.contains("\r\nx-feserver: CAS1\r\n"), "{answer}");
    assert!(
        answer.starts_with("HTTP/1.1 200 Success\r\n"),
        "reason phrase lost: {answer}"
    );
}

#[tokio::test]
async fn forwarding_headers_can_be_turned_off() {
    let b = Backend::start("cas1").await;
    let lb =
        start(&(service("p", "x_forwarded = false") + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let text = client.get("/headers").await.unwrap().text();
    assert!(!text.contains("x-forwarded"), "{text}");
}
