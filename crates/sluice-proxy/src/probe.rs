//! The health probes: TCP (with the TLS handshake when the pool re-encrypts) and HTTP,
//! which asks for a page and wants an exact status and, optionally, a body substring.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty, Limited};
use sluice_config::HttpProbe;

use crate::upstream::{handshake, Connector};

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
        let mut sender = handshake(stream, None).await?.sender;
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
