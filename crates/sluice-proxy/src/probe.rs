//! The health probes: TCP (with a TLS handshake when the check speaks TLS), HTTP, which
//! asks for a page and wants an exact status and, optionally, a body substring, and
//! dialogues (SMTP, IMAP, POP or written out), which send lines and check the replies.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty, Limited};
use sluice_config::{CheckTls, HttpProbe, Pool, Step};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::l4::proxy_protocol;
use crate::tls::handshake_only_config;
use crate::upstream::{handshake, Connector};

/// How a pool's checks reach its servers: as its traffic does, or as the check's `tls`
/// says; announced as sluice's own connection when the servers expect the PROXY protocol.
pub fn connector_for(pool: &Pool, traffic: &Connector) -> Connector {
    let timeout = pool.timeouts.connect;
    let tls = pool.health.as_ref().map_or(&CheckTls::AsPool, |h| &h.tls);
    let connector = match tls {
        CheckTls::AsPool => traffic.clone(),
        CheckTls::Off => Connector::new(None, None, timeout),
        CheckTls::Handshake { sni } => {
            Connector::new(Some(handshake_only_config()), sni.as_deref(), timeout)
        }
    };
    match pool.send_proxy {
        Some(v) => connector.with_preamble(proxy_protocol::local_header(v)),
        None => connector,
    }
}

/// The body read for an `expect_body` check is cut at this length.
const MAX_PROBE_BODY: usize = 64 * 1024;

pub struct TcpCheck {
    pub connector: Connector,
    pub addr: SocketAddr,
}

impl sluice_health::Probe for TcpCheck {
    async fn check(&self) -> Result<(), String> {
        self.connector.connect(self.addr).await.map(drop)
    }
}

pub struct HttpCheck {
    pub connector: Connector,
    pub addr: SocketAddr,
    pub probe: HttpProbe,
}

impl sluice_health::Probe for HttpCheck {
    async fn check(&self) -> Result<(), String> {
        let stream = self.connector.connect(self.addr).await?;
        let mut sender = handshake(stream, None, false).await?.sender;
        let host = self
            .probe
            .host
            .clone()
            .unwrap_or_else(|| self.addr.to_string());
        let method = Method::from_bytes(self.probe.method.as_bytes()).map_err(|e| e.to_string())?;
        let body = Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync();
        let req = Request::builder()
            .method(method)
            .uri(self.probe.path.as_str())
            .header(HOST, host)
            .header(USER_AGENT, "sluice-health")
            .header(CONNECTION, "close")
            .body(body)
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        if status != self.probe.expect_status {
            // A redirect here is the classic mistake (Exchange sends `/` to /owa/ since
            // 2013 CU6): say where it points.
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| format!(" (redirect to {l})"))
                .unwrap_or_default();
            return Err(format!(
                "{} answered {status}{location}, expected {}",
                self.probe.path, self.probe.expect_status
            ));
        }
        let Some(expected) = &self.probe.expect_body else {
            return Ok(());
        };
        let body = Limited::new(response.into_body(), MAX_PROBE_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        if String::from_utf8_lossy(&body).contains(expected.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "{} answered {status} without \"{expected}\" in the body",
                self.probe.path
            ))
        }
    }
}

/// A reply line longer than this fails the check rather than being read on.
const MAX_REPLY_LINE: u64 = 4096;
/// Continuation lines read after an SMTP `250-...` before the check gives up.
const MAX_REPLY_LINES: usize = 100;

pub struct DialogueCheck {
    pub connector: Connector,
    pub addr: SocketAddr,
    pub steps: Vec<Step>,
}

impl sluice_health::Probe for DialogueCheck {
    async fn check(&self) -> Result<(), String> {
        let mut stream = BufReader::new(self.connector.connect(self.addr).await?);
        for step in &self.steps {
            if let Some(send) = &step.send {
                let out = stream.get_mut();
                out.write_all(send.as_bytes())
                    .await
                    .map_err(|e| format!("sending {:?}: {e}", send.trim_end()))?;
                out.flush().await.map_err(|e| e.to_string())?;
            }
            let Some(expect) = &step.expect else {
                continue;
            };
            let reply = read_reply(&mut stream).await?;
            if !reply.starts_with(expect.as_str()) {
                let after = step
                    .send
                    .as_ref()
                    .map(|s| format!(" to {:?}", s.trim_end()))
                    .unwrap_or_default();
                return Err(format!("answered {reply:?}{after}, expected {expect:?}"));
            }
        }
        Ok(())
    }
}

/// One reply: its first line, after reading the rest of a multi-line SMTP reply
/// (`250-...` lines up to the `250 ...` one) so the next step reads its own.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(stream: &mut R) -> Result<String, String> {
    let first = read_line(stream).await?;
    let mut line = first.clone();
    for _ in 0..MAX_REPLY_LINES {
        let continues = line.len() >= 4
            && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && line.as_bytes()[3] == b'-';
        if !continues {
            return Ok(first);
        }
        line = read_line(stream).await?;
    }
    Err(format!("a reply of more than {MAX_REPLY_LINES} lines"))
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(stream: &mut R) -> Result<String, String> {
    let mut line = Vec::new();
    let n = stream
        .take(MAX_REPLY_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection without a reply".into());
    }
    if !line.ends_with(b"\n") {
        return Err(format!(
            "a reply line longer than {MAX_REPLY_LINE} bytes, or cut short"
        ));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}
