//! Connections to servers: connect (TCP, then TLS when the pool re-encrypts), the HTTP/1.1
//! handshake, and the per-server stack of idle keep-alive connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::gate::WhenWoken;
use crate::server::CutSignal;
use crate::stream::{ServerStream, Stream};
use crate::sync::lock;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every request body sent to a server has this type.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
pub type Sender = http1::SendRequest<UpstreamBody>;

/// One HTTP/1.1 connection to a server.
pub struct ServerConn {
    pub sender: Sender,
    /// Completes when the connection has ended, whoever closed it. Taken by whoever must
    /// react to that (a pinned client connection closes with its server connection).
    pub closed: Option<oneshot::Receiver<()>>,
    /// When the exchange in progress began; `None` between exchanges.
    busy_since: Arc<Mutex<Option<Instant>>>,
}

impl ServerConn {
    pub fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }

    /// Marks the start, `at`, of a request over this connection.
    pub fn begin_exchange(&self, at: Instant) {
        *lock(&self.busy_since) = Some(at);
    }

    /// Marks the end of the response: the connection is at a safe point to close.
    pub fn end_exchange(&self) {
        *lock(&self.busy_since) = None;
    }
}

/// How a pool reaches its servers.
#[derive(Clone)]
pub struct Connector {
    tls: Option<(Arc<ClientConfig>, Option<ServerName<'static>>)>,
    connect_timeout: Duration,
    /// Written first on every connection, before any TLS (a PROXY protocol header).
    preamble: Option<Arc<[u8]>>,
    /// Responses keep the case of their header names.
    preserve_header_case: bool,
}

impl Connector {
    pub fn new(
        tls: Option<Arc<ClientConfig>>,
        sni: Option<&str>,
        connect_timeout: Duration,
    ) -> Self {
        let sni = sni.and_then(|s| ServerName::try_from(s.to_string()).ok());
        Connector {
            tls: tls.map(|c| (c, sni)),
            connect_timeout,
            preamble: None,
            preserve_header_case: false,
        }
    }

    /// Keeps the case of response header names (requests keep theirs whenever the client
    /// side read it).
    pub fn preserving_header_case(mut self, preserve: bool) -> Self {
        self.preserve_header_case = preserve;
        self
    }

    /// Starts every connection with `bytes`.
    pub fn with_preamble(mut self, bytes: Vec<u8>) -> Self {
        self.preamble = Some(bytes.into());
        self
    }

    /// TCP (and TLS) to `addr`, bounded by the connect timeout.
    pub async fn connect(&self, addr: SocketAddr) -> Result<ServerStream, String> {
        match tokio::time::timeout(self.connect_timeout, self.connect_unbounded(addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "connect timed out after {}ms",
                self.connect_timeout.as_millis()
            )),
        }
    }

    async fn connect_unbounded(&self, addr: SocketAddr) -> Result<ServerStream, String> {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        if let Some(preamble) = &self.preamble {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, preamble)
                .await
                .map_err(|e| format!("sending the PROXY header: {e}"))?;
        }
        let Some((config, sni)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = sni
            .clone()
            .unwrap_or(ServerName::IpAddress(addr.ip().into()));
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// A new HTTP/1.1 connection; its driver runs as its own task until the connection
    /// ends, or until `cut` asks for it and it reaches a safe point.
    pub async fn open(&self, addr: SocketAddr, cut: CutSignal) -> Result<ServerConn, String> {
        let stream = self.connect(addr).await?;
        handshake(stream, Some(cut), self.preserve_header_case).await
    }
}

pub async fn handshake(
    stream: ServerStream,
    cut: Option<CutSignal>,
    preserve_header_case: bool,
) -> Result<ServerConn, String> {
    let (sender, conn) = http1::Builder::new()
        .preserve_header_case(preserve_header_case)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let (ended, closed) = oneshot::channel();
    let busy_since = Arc::new(Mutex::new(None));
    let busy = busy_since.clone();
    tokio::spawn(async move {
        tokio::select! {
            ended = conn => if let Err(e) = ended {
                tracing::debug!("server connection ended: {e}");
            },
            // Dropping the connection closes it.
            _ = WhenWoken::new(safe_point_after_cut(cut, &busy)) => {
                tracing::debug!("server connection closed: its server's drain timed out");
            }
        }
        let _ = ended.send(());
    });
    Ok(ServerConn {
        sender,
        closed: Some(closed),
        busy_since,
    })
}

/// How often a connection in the middle of an exchange is looked at again once its
/// server's drain has timed out.
const SAFE_POINT_POLL: Duration = Duration::from_millis(50);

/// Completes once the server's drain has timed out and the connection is at a safe point:
/// between exchanges, or in one that began before the drain did (a long poll or a
/// stream the whole drain did not end). Never completes without a cut.
async fn safe_point_after_cut(cut: Option<CutSignal>, busy: &Mutex<Option<Instant>>) {
    let Some(mut cut) = cut else {
        return std::future::pending().await;
    };
    let began = cut.wait_for(Option::is_some).await.map(|b| *b);
    let Ok(Some(drain_began)) = began else {
        return std::future::pending().await;
    };
    loop {
        let busy_since = *lock(busy);
        match busy_since {
            None => return,
            Some(started) if started < drain_began => return,
            Some(_) => {}
        }
        tokio::time::sleep(SAFE_POINT_POLL).await;
    }
}

/// Idle keep-alive connections to one server, most recently used last.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<(ServerConn, Instant)>>,
}

impl IdlePool {
    /// A ready idle connection younger than `max_age`, if any, and how long it sat idle.
    /// Stale ones are dropped.
    pub fn checkout(&self, max_age: Duration) -> Option<(ServerConn, Duration)> {
        let mut idle = lock(&self.idle);
        while let Some((conn, since)) = idle.pop() {
            let idle_for = since.elapsed();
            if conn.is_ready() && idle_for < max_age {
                return Some((conn, idle_for));
            }
        }
        None
    }

    pub fn checkin(&self, conn: ServerConn, max_idle: usize) {
        if !conn.is_ready() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        lock(&self.idle).clear();
    }
}
