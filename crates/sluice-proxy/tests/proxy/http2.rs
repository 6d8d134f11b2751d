//! HTTP/2 from clients, frame by frame (RFC 9113): protocol errors are answered as
//! stream or connection errors, and the limits on concurrent streams, header list size
//! and cancelled streams (rapid reset) hold.

use std::time::Duration;

use sluice_lab::{Backend, TestCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{pool, service_with_tls, start_in, Lb};
use crate::tls::{client_config, handshake};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(first: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block for `GET https://mail.contoso.com{path}` plus `extra`, every field a
/// literal without indexing and without Huffman coding.
fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    // :method GET and :scheme https are static table entries 2 and 7.
    let mut block = vec![0x82, 0x87];
    literal(&mut block, ":path", path);
    literal(&mut block, ":authority", "mail.contoso.com");
    for (k, v) in extra {
        literal(&mut block, k, v);
    }
    block
}

/// Appends a field as a literal without indexing or Huffman coding.
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    hpack_int(0, 7, name.len(), block);
    block.extend(name.as_bytes());
    hpack_int(0, 7, value.len(), block);
    block.extend(value.as_bytes());
}

struct Conn {
    tls: Tls,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(lb: &Lb, cert: &TestCert) -> Conn {
        let tls = handshake(
            lb.addr,
            client_config(&[cert], &[b"h2"]),
            "mail.contoso.com",
        )
        .await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut conn = Conn {
            tls,
            buf: Vec::new(),
        };
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec())
            .await;
        conn.send(frame(SETTINGS, 0, 0, &[])).await;
        conn
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        // The peer may already have closed: what it sent before that is what is checked.
        let _ = self.tls.write_all(&bytes).await;
        let _ = self.tls.flush().await;
    }

    /// The next frame (kind, flags, stream, payload), or `None` once the connection is
    /// closed or silent for 5 s.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some((head[3], head[4], stream, payload));
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(Duration::from_secs(5), self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads frames until one of `kind` on `stream` (stream 0 for GOAWAY) arrives; returns
    /// its payload.
    async fn until(&mut self, kind: u8, stream: u32) -> Option<Vec<u8>> {
        for _ in 0..100_000 {
            let (k, _, s, payload) = self.next().await?;
            if k == kind && s == stream {
                return Some(payload);
            }
        }
        None
    }

    /// The error code of the GOAWAY that ends the connection.
    async fn goaway(&mut self) -> Option<u32> {
        let payload = self.until(GOAWAY, 0).await?;
        Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()))
    }

    /// Opens `n` streams (1, 3, ...) on requests whose bodies never come, so that each
    /// waits on the server, and cancels each 2 ms after opening it.
    async fn open_and_cancel(&mut self, n: u32) {
        let block = request_block("/upload", &[]);
        for i in 0..n {
            let stream = 1 + 2 * i;
            self.send(frame(HEADERS, END_HEADERS, stream, &block)).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.send(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()))
                .await;
        }
    }

    /// Sends a request and waits for its response headers: whether the first field is
    /// `:status 200` (static table entry 8).
    async fn get_ok(&mut self, stream: u32, path: &str) -> bool {
        let block = request_block(path, &[]);
        self.send(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .await;
        self.until(HEADERS, stream)
            .await
            .is_some_and(|b| b.first() == Some(&0x88))
    }
}

async fn h2_service(extra: &str) -> (Lb, TestCert, Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new(&["mail.contoso.com"]);
    cert.write(dir.path(), "site");
    let backend = Backend::start("cas1").await;
    let config = service_with_tls("site", extra, "http2_max_streams = 10")
        + &pool("p", &[("cas1", backend.addr)], "");
    let lb = start_in(&config, dir.path()).await;
    (lb, cert, backend, dir)
}

fn code(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

#[tokio::test]
async fn connection_errors_end_the_connection_with_goaway() {
    let (lb, cert, _backend, _dir) = h2_service("").await;
    let block = request_block("/", &[]);
    // A client may only open odd-numbered streams.
    let mut c = Conn::open(&lb, &cert).await;
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 2, &block))
        .await;
    assert_eq!(c.goaway().await, Some(PROTOCOL_ERROR));
    // DATA belongs to a stream, never to the connection.
    let mut c = Conn::open(&lb, &cert).await;
    c.send(frame(DATA, 0, 0, b"x")).await;
    assert_eq!(c.goaway().await, Some(PROTOCOL_ERROR));
    // A frame larger than the 16 KiB sluice announced.
    let mut c = Conn::open(&lb, &cert).await;
    c.send(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &vec![0u8; 20_000],
    ))
    .await;
    assert_eq!(c.goaway().await, Some(FRAME_SIZE_ERROR));
    // A header block that is not valid HPACK.
    let mut c = Conn::open(&lb, &cert).await;
    c.send(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &[0xff, 0xff, 0xff, 0xff],
    ))
    .await;
    assert!(c.goaway().await.is_some());
}

#[tokio::test]
async fn a_malformed_request_is_a_stream_error_and_the_connection_goes_on() {
    let (lb, cert, backend, _dir) = h2_service("").await;
    let mut c = Conn::open(&lb, &cert).await;
    // Malformed requests (RFC 9113 8.1.1): a connection-specific field, a pseudo-header
    // after a regular field, no :path.
    let connection_specific = request_block("/", &[("transfer-encoding", "chunked")]);
    let mut pseudo_late = request_block("/", &[("x-a", "1")]);
    literal(&mut pseudo_late, ":path", "/again");
    let mut no_path = vec![0x82, 0x87];
    literal(&mut no_path, ":authority", "mail.contoso.com");
    for (stream, block) in [(1, connection_specific), (3, pseudo_late), (5, no_path)] {
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .await;
        let reset = c
            .until(RST_STREAM, stream)
            .await
            .expect("the stream is reset");
        assert_eq!(code(&reset), PROTOCOL_ERROR, "stream {stream}");
    }
    assert!(c.get_ok(7, "/owa/").await, "the connection stopped serving");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn streams_past_the_concurrency_limit_are_refused() {
    let (lb, cert, _backend, _dir) = h2_service("").await;
    let mut c = Conn::open(&lb, &cert).await;
    // Eleven requests whose bodies never come keep eleven streams open; the limit is 10.
    let block = request_block("/upload", &[]);
    for i in 0..11 {
        c.send(frame(HEADERS, END_HEADERS, 1 + 2 * i, &block)).await;
    }
    let reset = c
        .until(RST_STREAM, 21)
        .await
        .expect("the eleventh stream is reset");
    assert!(
        [REFUSED_STREAM, PROTOCOL_ERROR].contains(&code(&reset)),
        "{}",
        code(&reset)
    );
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_not_served() {
    let (lb, cert, backend, _dir) = h2_service("max_header_size = \"16KiB\"").await;
    let mut c = Conn::open(&lb, &cert).await;
    let big = "b".repeat(20_000);
    let block = request_block("/", &[("x-big", &big)]);
    let (first, rest) = block.split_at(16_000);
    c.send(frame(HEADERS, END_STREAM, 1, first)).await;
    c.send(frame(CONTINUATION, END_HEADERS, 1, rest)).await;
    // Either an answer that is not 200 (431) or a reset, or the connection ends.
    loop {
        match c.next().await {
            Some((HEADERS, _, 1, block)) => {
                assert_ne!(block.first(), Some(&0x88), "served");
                break;
            }
            Some((RST_STREAM, _, 1, _)) | Some((GOAWAY, ..)) | None => break,
            Some(_) => {}
        }
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn rapid_reset_ends_the_connection() {
    let (lb, cert, backend, _dir) = h2_service("").await;
    let mut c = Conn::open(&lb, &cert).await;
    let block = request_block("/", &[]);
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let stream = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
        burst.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    c.send(burst).await;
    assert_eq!(c.goaway().await, Some(ENHANCE_YOUR_CALM));
    assert!(
        backend.hits() < 2000,
        "every cancelled stream reached the server"
    );
}

/// The same attack paced so that each stream is accepted before it is cancelled, which
/// h2's own count does not see: sluice counts the cancelled streams itself.
#[tokio::test]
async fn paced_rapid_reset_ends_the_connection_too() {
    let (lb, cert, _backend, _dir) = h2_service("").await;
    let mut c = Conn::open(&lb, &cert).await;
    c.open_and_cancel(150).await;
    assert_eq!(
        c.goaway().await,
        Some(NO_ERROR),
        "no GOAWAY after 150 cancelled streams"
    );
}

/// A client that cancels now and then (a user leaving a page) is not cut off.
#[tokio::test]
async fn a_few_cancelled_streams_are_tolerated() {
    let (lb, cert, _backend, _dir) = h2_service("").await;
    let mut c = Conn::open(&lb, &cert).await;
    c.open_and_cancel(20).await;
    assert!(
        c.get_ok(41, "/owa/").await,
        "the connection stopped serving"
    );
}
