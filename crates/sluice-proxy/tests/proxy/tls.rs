//! TLS termination with certificates chosen by SNI (HTTP/1.1 and HTTP/2), and
//! re-encryption to a self-signed server trusted by its pinned fingerprint.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use sluice_lab::{Backend, Client, TestCert};
use tokio::net::TcpStream;

use crate::harness::{pool, service_with_tls, start_in};

pub fn client_config(trusted: &[&TestCert], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add(c.cert_der()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn several_certificates_are_chosen_by_sni_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let mail = TestCert::new(&["mail.example.com"]);
    let other = TestCert::new(&["autodiscover.example.org"]);
    mail.write(dir.path(), "mail");
    other.write(dir.path(), "other");
    let backend = Backend::start("cas1").await;
    let config = format!(
        "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"p\"\n[service.tls]\ncertificates = [{{ cert = \"mail.pem\", key = \"mail.key\" }}, {{ cert = \"other.pem\", key = \"other.key\" }}]\n{}",
        pool("p", &[("cas1", backend.addr)], "")
    );
    let lb = start_in(&config, dir.path()).await;
    let trusted = client_config(&[&mail, &other], &[b"http/1.1"]);
    for (name, cert) in [
        ("mail.example.com", &mail),
        ("autodiscover.example.org", &other),
    ] {
        let tls = handshake(lb.addr, trusted.clone(), name).await;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(presented, cert.der, "certificate for {name}");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/headers")
            .header("host", name)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let reply = sender.send_request(req).await.unwrap();
        assert_eq!(reply.headers()["x-server"], "cas1");
        let text = String::from_utf8(
            reply
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
    }
    // HTTP/2 by ALPN, carried to the server as HTTP/1.1.
    let tls = handshake(
        lb.addr,
        client_config(&[&mail], &[b"h2"]),
        "mail.example.com",
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://mail.example.com/owa/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let reply = sender.send_request(req).await.unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()["x-server"], "cas1");
    }
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("proto=HTTP/2 sni=mail.example.com status=200")),
        "{lines:?}"
    );
}

/// A pool's re-encryption to `cas1.example.com`, trusted by its SHA-256 fingerprint.
fn pinned_tls(fingerprint: &str) -> String {
    format!("[pool.tls]\nverify = \"fingerprint\"\nfingerprints = [\"sha256:{fingerprint}\"]\nsni = \"cas1.example.com\"\n")
}

#[tokio::test]
async fn re_encryption_accepts_the_pinned_fingerprint_and_refuses_another() {
    let cert = TestCert::new(&["cas1.example.com"]);
    let backend = Backend::start_tls("cas1", cert.server_config()).await;
    let pin = sluice_proxy::tls::hex(&sluice_proxy::tls::fingerprint(&cert.der));
    let wrong = "00".repeat(32);
    for (fingerprint, want) in [(pin.as_str(), 200), (wrong.as_str(), 502)] {
        let tls = pinned_tls(fingerprint);
        let config = crate::harness::service("p", "") + &pool("p", &[("cas1", backend.addr)], &tls);
        let lb = crate::harness::start(&config).await;
        let mut client = Client::connect(lb.addr).await.unwrap();
        let reply = client.get("/ews/exchange.asmx").await.unwrap();
        assert_eq!(reply.status, want, "fingerprint {fingerprint}");
        if want == 200 {
            assert_eq!(reply.header("x-server"), Some("cas1"));
        }
    }
    assert_eq!(backend.hits(), 1, "the refused server never saw a request");
}

#[tokio::test]
async fn a_re_encrypted_server_connection_parked_while_idle_keeps_its_tls_session() {
    let cert = TestCert::new(&["cas1.example.com"]);
    let backend = Backend::start_tls("cas1", cert.server_config()).await;
    let pin = sluice_proxy::tls::hex(&sluice_proxy::tls::fingerprint(&cert.der));
    let config =
        crate::harness::service("p", "") + &pool("p", &[("cas1", backend.addr)], &pinned_tls(&pin));
    let lb = crate::harness::start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..2 {
        assert_eq!(client.get("/ews/exchange.asmx").await.unwrap().status, 200);
        // Idle for longer than sluice keeps a server connection's HTTP state (1 s, and
        // half a second between sweeps): only the TLS stream is kept.
        tokio::time::sleep(Duration::from_millis(1800)).await;
    }
    let post = client.request("POST", "/ews/exchange.asmx");
    let post = post
        .body(sluice_lab::client::full(vec![b'x'; 100_000]))
        .unwrap();
    assert_eq!(client.send(post).await.unwrap().status, 200);
    assert_eq!(backend.hits(), 3);
    assert_eq!(
        backend.connections(),
        1,
        "one TLS connection carried every request"
    );
}

#[tokio::test]
async fn ntlm_over_http2_is_sent_back_to_http1() {
    let dir = tempfile::tempdir().unwrap();
    let mail = TestCert::new(&["mail.example.com"]);
    mail.write(dir.path(), "mail");
    let backend = Backend::start("cas1").await;
    let config = service_with_tls("mail", "", "") + &pool("p", &[("cas1", backend.addr)], "");
    let lb = start_in(&config, dir.path()).await;
    let tls = handshake(
        lb.addr,
        client_config(&[&mail], &[b"h2"]),
        "mail.example.com",
    )
    .await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |auth: Option<&str>| {
        let mut req = Request::get("https://mail.example.com/whoami");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    // The challenge itself passes (its server connection is then closed, not shared)...
    let challenge = sender.send_request(get(None)).await.unwrap();
    assert_eq!(challenge.status(), 401);
    // ...but the handshake must move to HTTP/1.1, where the connection can be pinned.
    let err = sender
        .send_request(get(Some("NTLM negotiate")))
        .await
        .expect_err("the stream is reset");
    let reason = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::HTTP_1_1_REQUIRED), "{err:?}");
    assert_eq!(
        backend.hits(),
        1,
        "the NTLM message never reached the server"
    );
    let lines = lb.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("end=http11_required")),
        "{lines:?}"
    );
}
