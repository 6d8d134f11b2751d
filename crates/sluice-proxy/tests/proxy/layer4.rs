//! Layer 4 end to end: bytes relayed exactly both ways (spliced and copied), half-close,
//! routing by the TLS server name with real TLS servers whose certificates reach the
//! client untouched, what happens to ClientHellos that are absent, malformed or slow,
//! limits, the PROXY protocol, and a server killed under load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use sluice_lab::{Mail, TcpServer, TestCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{pool, start, wait_for, Lb};

/// A tcp `[[service]]` called "web" on an ephemeral port.
fn tcp_service(default_pool: Option<&str>, extra: &str) -> String {
    let default = default_pool
        .map(|p| format!("default_pool = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "[[service]]\nname = \"web\"\nmode = \"tcp\"\nlisten = \"127.0.0.1:0\"\n{default}{extra}\n"
    )
}

/// Deterministic bytes that do not repeat in any useful way (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Sends `data`, shuts the sending side, and reads until the other side ends too.
async fn round_trip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut read, mut write) = tcp.into_split();
    let sent = data.to_vec();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await?;
        write.shutdown().await
    });
    let mut back = Vec::with_capacity(data.len());
    let reading = read.read_to_end(&mut back);
    tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .map_err(|_| std::io::Error::other("no end of stream within 30 s"))??;
    writer.await.map_err(std::io::Error::other)??;
    Ok(back)
}

/// The access log line whose `end=` is `end`, waiting up to 2 s for it.
async fn logged(lb: &Lb, end: &str) -> String {
    let mut seen = Vec::new();
    let want = format!(" end={end}");
    wait_for(Duration::from_secs(2), || {
        seen.extend(lb.log_lines());
        seen.iter().any(|l| l.contains(&want))
    })
    .await;
    seen.into_iter()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no access log line with end={end}"))
}

#[tokio::test]
async fn bulk_data_is_relayed_byte_exact_both_ways_spliced_and_copied() {
    let echo = TcpServer::echo().await;
    let config = tcp_service(Some("p"), "")
        + "[[service]]\nname = \"copied\"\nmode = \"tcp\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"p\"\nsplice = false\n"
        + &pool("p", &[("e", echo.addr())], "");
    let lb = start(&config).await;
    let copied = lb.proxy.local_addrs("copied")[0];
    let data = noise(16 << 20, 7);
    for addr in [lb.addr, copied] {
        let back = round_trip(addr, &data).await.expect("relayed");
        assert_eq!(back.len(), data.len(), "through {addr}");
        assert_eq!(sha256(&back), sha256(&data), "through {addr}");
    }
    let line = logged(&lb, "done").await;
    assert!(line.contains("proto=TCP"), "{line}");
    assert!(
        line.contains(&format!("in={} out={}", 16 << 20, 16 << 20)),
        "{line}"
    );
    assert!(line.contains("pool=p server=e"), "{line}");
}

#[tokio::test]
async fn a_half_closed_client_still_gets_the_servers_answer() {
    let echo = TcpServer::echo().await;
    let lb = start(&(tcp_service(Some("p"), "") + &pool("p", &[("e", echo.addr())], ""))).await;
    let mut tcp = TcpStream::connect(lb.addr).await.unwrap();
    tcp.write_all(b"last words").await.unwrap();
    tcp.shutdown().await.unwrap();
    // The server sees the end of the client's stream, and can still send after it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut back))
        .await
        .expect("the server's end arrives")
        .unwrap();
    assert_eq!(back, b"last words");
}

/// TLS servers for two names, and sluice routing between them by SNI.
struct SniLab {
    lb: Lb,
    a: TestCert,
    b: TestCert,
    _servers: (TcpServer, TcpServer),
}

async fn sni_lab(default_pool: Option<&str>) -> SniLab {
    let a = TestCert::new(&["mail.example.com"]);
    let b = TestCert::new(&["*.b.example.com"]);
    let sa = TcpServer::tls("a", a.server_config()).await;
    let sb = TcpServer::tls("b", b.server_config()).await;
    let routes = "[service.timeouts]\nclient_hello = \"300ms\"\n\
        [[service.route]]\nname = \"mail\"\nmatch = { sni = \"mail.example.com\" }\npool = \"a\"\n\
        [[service.route]]\nname = \"b\"\nmatch = { sni = [\"*.b.example.com\", \"b.example.com\"] }\npool = \"b\"\n";
    let config = tcp_service(default_pool, routes)
        + &pool("a", &[("sa", sa.addr())], "")
        + &pool("b", &[("sb", sb.addr())], "");
    SniLab {
        lb: start(&config).await,
        a,
        b,
        _servers: (sa, sb),
    }
}

/// A TLS client through sluice: the certificate it was shown and the server's greeting.
async fn tls_hello(
    addr: SocketAddr,
    name: ServerName<'static>,
) -> std::io::Result<(Vec<u8>, String)> {
    let connector = tokio_rustls::TlsConnector::from(sluice_proxy::tls::handshake_only_config());
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(name, tcp).await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut line = vec![0u8; 64];
    let n = tls.read(&mut line).await?;
    Ok((cert, String::from_utf8_lossy(&line[..n]).trim().to_string()))
}

fn name(s: &str) -> ServerName<'static> {
    ServerName::try_from(s.to_string()).unwrap()
}

#[tokio::test]
async fn tls_is_routed_by_server_name_and_the_servers_certificate_arrives_untouched() {
    let lab = sni_lab(Some("a")).await;
    let (cert, hello) = tls_hello(lab.lb.addr, name("mail.example.com"))
        .await
        .unwrap();
    assert_eq!(cert, lab.a.der);
    assert_eq!(hello, "hello from a");
    let (cert, hello) = tls_hello(lab.lb.addr, name("x.b.example.com"))
        .await
        .unwrap();
    assert_eq!(cert, lab.b.der);
    assert_eq!(hello, "hello from b");
    let line = logged(&lab.lb, "done").await;
    assert!(line.contains("proto=TLS sni="), "{line}");
    // No server name at all (a client connecting by address): the default pool.
    let by_ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let (cert, hello) = tls_hello(lab.lb.addr, by_ip).await.unwrap();
    assert_eq!((cert, hello.as_str()), (lab.a.der.clone(), "hello from a"));
}

#[tokio::test]
async fn an_unknown_name_without_a_default_pool_is_closed_and_logged() {
    let lab = sni_lab(None).await;
    assert!(tls_hello(lab.lb.addr, name("other.example.com"))
        .await
        .is_err());
    let line = logged(&lab.lb, "no_route").await;
    assert!(line.contains("sni=other.example.com"), "{line}");
}

#[tokio::test]
async fn malformed_and_slow_client_hellos_are_closed_without_reaching_a_server() {
    let lab = sni_lab(Some("a")).await;
    // Plain HTTP where TLS is expected.
    let mut tcp = TcpStream::connect(lab.lb.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed at once");
    logged(&lab.lb, "bad_client_hello").await;
    // Nothing at all: closed after client_hello (300 ms).
    let started = Instant::now();
    let mut tcp = TcpStream::connect(lab.lb.addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    logged(&lab.lb, "client_hello_timeout").await;
    assert_eq!(
        lab._servers.0.connections() + lab._servers.1.connections(),
        0
    );
}

#[tokio::test]
async fn a_client_hello_trickled_in_small_pieces_is_still_routed() {
    let lab = sni_lab(None).await;
    let connector = tokio_rustls::TlsConnector::from(sluice_proxy::tls::handshake_only_config());
    let tcp = TcpStream::connect(lab.lb.addr).await.unwrap();
    let mut tls = connector
        .connect(name("x.b.example.com"), Trickle(tcp))
        .await
        .expect("handshake through sluice");
    let mut line = vec![0u8; 64];
    let n = tls.read(&mut line).await.unwrap();
    assert_eq!(&line[..n], b"hello from b\n");
}

/// A stream whose writes go out 16 bytes at a time.
struct Trickle(TcpStream);

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = buf.len().min(16);
        std::pin::Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn servers_learn_the_client_address_through_the_proxy_protocol() {
    let echo = TcpServer::echo().await;
    for version in ["v1", "v2"] {
        let extra = format!("send_proxy = \"{version}\"");
        let lb =
            start(&(tcp_service(Some("p"), "") + &pool("p", &[("e", echo.addr())], &extra))).await;
        let mut tcp = TcpStream::connect(lb.addr).await.unwrap();
        let client = tcp.local_addr().unwrap();
        tcp.write_all(b"payload").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut back = Vec::new();
        tcp.read_to_end(&mut back).await.unwrap();
        let rest = match version {
            "v1" => {
                let header = format!(
                    "PROXY TCP4 {} {} {} {}\r\n",
                    client.ip(),
                    lb.addr.ip(),
                    client.port(),
                    lb.addr.port()
                );
                back.strip_prefix(header.as_bytes())
                    .unwrap_or_else(|| panic!("{back:?}"))
            }
            _ => {
                let header = ppp::v2::Header::try_from(&back[..]).expect("a v2 header");
                let ppp::v2::Addresses::IPv4(a) = header.addresses else {
                    panic!("{:?}", header.addresses)
                };
                assert_eq!(
                    (a.source_address, a.source_port),
                    (std::net::Ipv4Addr::LOCALHOST, client.port())
                );
                assert_eq!(a.destination_port, lb.addr.port());
                &back[header.len()..]
            }
        };
        assert_eq!(rest, b"payload", "{version}");
    }
}

#[tokio::test]
async fn idle_connections_are_closed_and_the_limit_refuses_the_one_too_many() {
    let echo = TcpServer::echo().await;
    let extra = "max_connections = 2\n[service.timeouts]\nidle = \"300ms\"\n";
    let lb = start(&(tcp_service(Some("p"), extra) + &pool("p", &[("e", echo.addr())], ""))).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(lb.addr).await.unwrap();
        tcp.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        tcp.read_exact(&mut one).await.unwrap();
        held.push(tcp);
    }
    let mut third = TcpStream::connect(lb.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the third is closed"
    );
    logged(&lb, "max_connections").await;
    // Both held connections fall idle: closed after 300 ms.
    for mut tcp in held {
        let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))));
    }
    logged(&lb, "idle_timeout").await;
    let back = round_trip(lb.addr, b"room again").await.unwrap();
    assert_eq!(back, b"room again");
}

#[tokio::test]
async fn a_server_killed_under_load_costs_only_its_connections_in_flight() {
    let (e1, e2) = (TcpServer::echo().await, TcpServer::echo().await);
    let check = "[pool.health]\nkind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1\n";
    let lb = start(
        &(tcp_service(Some("p"), "") + &pool("p", &[("e1", e1.addr()), ("e2", e2.addr())], check)),
    )
    .await;
    let addr = lb.addr;
    let killed_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let ok = Arc::new(AtomicU64::new(0));
    let failed_after_kill = Arc::new(AtomicU64::new(0));
    let failed_in_flight = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for seed in 0..8 {
        let (killed_at, ok) = (killed_at.clone(), ok.clone());
        let (after, in_flight) = (failed_after_kill.clone(), failed_in_flight.clone());
        clients.push(tokio::spawn(async move {
            let data = noise(256 << 10, seed + 1);
            while Instant::now() < stop_at {
                let started = Instant::now();
                let good = matches!(round_trip(addr, &data).await, Ok(back) if back == data);
                let killed = *killed_at.lock().unwrap();
                match (good, killed) {
                    (true, _) => ok.fetch_add(1, Ordering::Relaxed),
                    (false, Some(k)) if started > k => after.fetch_add(1, Ordering::Relaxed),
                    (false, _) => in_flight.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    e1.stop().await;
    *killed_at.lock().unwrap() = Some(Instant::now());
    for c in clients {
        c.await.unwrap();
    }
    let (ok, after, in_flight) = (
        ok.load(Ordering::Relaxed),
        failed_after_kill.load(Ordering::Relaxed),
        failed_in_flight.load(Ordering::Relaxed),
    );
    assert_eq!(
        after, 0,
        "connections begun after the kill all succeed ({ok} ok)"
    );
    assert!(
        in_flight <= 8,
        "at most one per client was in flight: {in_flight}"
    );
    assert!(ok >= 40, "{ok} connections relayed");
    assert!(!lb.is_up("p", "e1"));
}

#[tokio::test]
async fn source_persistence_holds_a_client_and_drain_sends_new_ones_elsewhere() {
    let (e1, e2) = (TcpServer::echo().await, TcpServer::echo().await);
    let sticky = "[pool.persistence]\nkind = \"source\"\n";
    let lb = start(
        &(tcp_service(Some("p"), "") + &pool("p", &[("e1", e1.addr()), ("e2", e2.addr())], sticky)),
    )
    .await;
    let from = |ip: &str| -> std::net::IpAddr { ip.parse().unwrap() };
    let connect_from = |ip: std::net::IpAddr| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
        let mut tcp = socket.connect(lb.addr).await.unwrap();
        tcp.write_all(b"hi").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut back = Vec::new();
        tcp.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hi");
    };
    let served = || (e1.connections(), e2.connections());
    connect_from(from("127.0.0.1")).await;
    let first = served();
    let home = if first.0 == 1 { "e1" } else { "e2" };
    for _ in 0..4 {
        connect_from(from("127.0.0.1")).await;
    }
    let (a, b) = served();
    assert!(a == 5 || b == 5, "5 of 5 on one server: {a}/{b}");
    lb.proxy
        .control()
        .set_mode(None, home, sluice_proxy::Mode::Drain, None)
        .unwrap();
    connect_from(from("127.0.0.1")).await;
    for i in 2..6 {
        connect_from(from(&format!("127.0.0.{i}"))).await;
    }
    let (a2, b2) = served();
    let (home_gain, other_gain) = if home == "e1" {
        (a2 - a, b2 - b)
    } else {
        (b2 - b, a2 - a)
    };
    assert_eq!(
        (home_gain, other_gain),
        (1, 4),
        "the persisted client stays, new ones go elsewhere"
    );
}

#[tokio::test]
async fn mail_dialogues_take_out_the_servers_that_do_not_greet_properly() {
    let mut servers = Vec::new();
    let mut config = tcp_service(Some("smtp"), "");
    let protocols = [
        (Mail::Smtp, "smtp", "554 5.3.2 Service not available"),
        (Mail::Imap, "imap", "* BYE server shutting down"),
        (Mail::Pop, "pop", "-ERR maintenance"),
    ];
    for (protocol, kind, bad) in protocols {
        let good = TcpServer::mail(protocol, protocol.ready_greeting()).await;
        let sick = TcpServer::mail(protocol, bad).await;
        let check = format!("[pool.health]\nkind = \"{kind}\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n");
        config += &pool(
            kind,
            &[("good", good.addr()), ("sick", sick.addr())],
            &check,
        );
        servers.push((good, sick));
    }
    // A dialogue written out: HELO is not a command the lab's server knows.
    let smtp = TcpServer::mail(Mail::Smtp, Mail::Smtp.ready_greeting()).await;
    let helo = "[pool.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfall = 1\n\
        dialogue = [{ expect = \"220\" }, { send = \"HELO x\\r\\n\", expect = \"250\" }]\n";
    config += &pool("helo", &[("strict", smtp.addr())], helo);
    let lb = start(&config).await;
    let settled = wait_for(Duration::from_secs(5), || {
        ["smtp", "imap", "pop", "helo"].iter().all(|p| {
            let sick = if *p == "helo" { "strict" } else { "sick" };
            !lb.is_up(p, sick)
        })
    })
    .await;
    assert!(settled.is_some(), "{:#?}", lb.proxy.server_status());
    for pool in ["smtp", "imap", "pop"] {
        assert!(lb.is_up(pool, "good"), "{pool}");
    }
    let status = lb.proxy.server_status();
    let reason = |pool: &str, server: &str| {
        status
            .iter()
            .find(|s| s.pool == pool && s.server == server)
            .and_then(|s| s.last_failure.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("smtp", "sick").contains("554 5.3.2"),
        "{}",
        reason("smtp", "sick")
    );
    assert!(
        reason("helo", "strict").contains(
            "answered \"500 5.3.3 Unrecognized command\" to \"HELO x\", expected \"250\""
        ),
        "{}",
        reason("helo", "strict")
    );
    // Clients of the SMTP service all reach the server that greets with 220.
    for _ in 0..6 {
        let mut tcp = TcpStream::connect(lb.addr).await.unwrap();
        let mut banner = vec![0u8; 64];
        let n = tcp.read(&mut banner).await.unwrap();
        assert!(
            banner[..n].starts_with(b"220 "),
            "{:?}",
            String::from_utf8_lossy(&banner[..n])
        );
    }
}

#[tokio::test]
async fn tls_handshake_checks_and_proxy_headers_on_checks() {
    let cert = TestCert::new(&["imap.example.com"]);
    let tls = TcpServer::tls("t", cert.server_config()).await;
    let plain = TcpServer::echo().await;
    let handshake = "[pool.health]\nkind = \"tcp\"\ntls = true\nsni = \"imap.example.com\"\ninterval = \"100ms\"\nfall = 1\nrise = 1\n";
    // An echo server repeats the check's own PROXY header: proof it was sent first.
    let announced = "send_proxy = \"v1\"\n[pool.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfall = 1\nrise = 1\n\
        dialogue = [{ expect = \"PROXY UNKNOWN\" }]\n";
    let config = tcp_service(Some("tls"), "")
        + &pool(
            "tls",
            &[("tls", tls.addr()), ("plain", plain.addr())],
            handshake,
        )
        + &pool("announced", &[("echo", plain.addr())], announced);
    let lb = start(&config).await;
    let settled = wait_for(Duration::from_secs(5), || !lb.is_up("tls", "plain")).await;
    assert!(
        settled.is_some(),
        "a server that does not speak TLS fails the handshake check"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lb.is_up("tls", "tls"));
    assert!(
        lb.is_up("announced", "echo"),
        "{:#?}",
        lb.proxy.server_status()
    );
}

#[tokio::test]
async fn an_http_service_at_its_connection_limit_closes_the_next_one() {
    let backend = sluice_lab::Backend::start("b").await;
    let config = crate::harness::service("p", "max_connections = 1")
        + &pool("p", &[("b", backend.addr)], "");
    let lb = start(&config).await;
    let mut held = sluice_lab::Client::connect(lb.addr).await.unwrap();
    assert_eq!(held.get("/").await.unwrap().status, 200);
    let mut second = TcpStream::connect(lb.addr).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{answer:?}");
    let line = logged(&lb, "max_connections").await;
    assert!(line.contains("proto=HTTP"), "{line}");
    assert!(lb.proxy.control().metrics().contains("class=\"none\""));
    drop(held);
    let freed = wait_for(Duration::from_secs(2), || lb.proxy.open_connections() == 0).await;
    assert!(freed.is_some());
    let mut again = sluice_lab::Client::connect(lb.addr).await.unwrap();
    assert_eq!(again.get("/").await.unwrap().status, 200);
}
