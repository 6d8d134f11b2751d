//! Bodies stream: a 1 GiB RPC_IN_DATA reaches the server before the client has sent it
//! all, and the chunks of a slow response reach the client one by one.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use sluice_lab::{client::empty, Backend, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{pool, service, start};

#[tokio::test]
async fn rpc_in_data_declaring_one_gib_reaches_the_server_before_the_client_sends_the_rest() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        // Headers, then at least 64 KiB of the body.
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&got, b"\r\n\r\n") {
                if got.len() - end - 4 >= 65536 {
                    break;
                }
            }
        }
        let _ = seen_tx.send(got);
        // Keep the channel open until the test ends.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", server_addr)], ""))).await;
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    let head = "RPC_IN_DATA /rpc/rpcproxy.dll?guid@contoso.com:6001 HTTP/1.1\r\nHost: mail.contoso.com\r\n\
                Accept: application/rpc\r\nUser-Agent: MSRPC\r\nContent-Length: 1073741824\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[0x05; 65536]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), seen_rx)
        .await
        .expect("server saw the body start in time")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("RPC_IN_DATA /rpc/rpcproxy.dll?guid@contoso.com:6001 HTTP/1.1\r\n"),
        "{text:.200}"
    );
    assert!(
        text.contains("Content-Length: 1073741824\r\n"),
        "{text:.400}"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn chunks_of_a_slow_response_reach_the_client_one_by_one() {
    let b = Backend::start("cas1").await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", b.addr)], ""))).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let req = client
        .request("GET", "/chunks?n=4&ms=300")
        .body(empty())
        .unwrap();
    let start = Instant::now();
    let response = client.send_streaming(req).await.unwrap();
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            arrivals.push((start.elapsed(), String::from_utf8_lossy(data).into_owned()));
        }
    }
    let texts: Vec<&str> = arrivals.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["chunk 0\n", "chunk 1\n", "chunk 2\n", "chunk 3\n"]);
    // Each chunk arrives on its own, about 300 ms after the one before.
    for pair in arrivals.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(200),
            "chunks arrived together: {arrivals:?}"
        );
    }
    assert!(
        arrivals[0].0 < Duration::from_millis(250),
        "first chunk held back: {arrivals:?}"
    );
}
