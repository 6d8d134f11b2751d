//! Connections to servers: connect (TCP, then TLS when the pool re-encrypts), the HTTP/1.1
//! handshake, and the per-server stacks of idle keep-alive connections.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::gate::WhenWoken;
use crate::server::CutSignal;
use crate::stream::{ServerStream, Stream, Tcp};
use crate::sync::lock;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every request body sent to a server has this type.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
pub type Sender = http1::SendRequest<UpstreamBody>;

/// One HTTP/1.1 connection to a server.
pub struct ServerConn {
    pub sender: Sender,
    /// Completes when the connection has ended, whoever closed it, with its socket if it
    /// ended to be parked. Taken by whoever must react to the end (a pinned client
    /// connection closes with its server connection).
    pub closed: Option<oneshot::Receiver<Option<ServerStream>>>,
    shared: Arc<Shared>,
}

/// What a connection's owner and the task driving it both see.
#[derive(Default)]
struct Shared {
    /// When the exchange in progress began; `None` between exchanges.
    busy_since: Mutex<Option<Instant>>,
    /// The owner ends the connection to park it: its socket is handed back, not closed.
    park: AtomicBool,
}

impl ServerConn {
    pub fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }

    /// Marks the start, `at`, of a request over this connection.
    pub fn begin_exchange(&self, at: Instant) {
        *lock(&self.shared.busy_since) = Some(at);
    }

    /// Marks the end of the response: the connection is at a safe point to close.
    pub fn end_exchange(&self) {
        *lock(&self.shared.busy_since) = None;
    }

    /// Ends the HTTP/1.1 state of an idle connection; its socket comes back through the
    /// receiver once the driving task has let go of it.
    fn park(mut self) -> Option<oneshot::Receiver<Option<ServerStream>>> {
        self.shared.park.store(true, Ordering::Release);
        self.closed.take()
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
            return Ok(Stream::Plain(Tcp(tcp)));
        };
        let name = sni
            .clone()
            .unwrap_or(ServerName::IpAddress(addr.ip().into()));
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, Tcp(tcp))
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// A new HTTP/1.1 connection; its driver runs as its own task until the connection
    /// ends, or until `cut` asks for it and it reaches a safe point.
    pub async fn open(&self, addr: SocketAddr, cut: CutSignal) -> Result<ServerConn, String> {
        let stream = self.connect(addr).await?;
        self.resume(stream, cut).await
    }

    /// An HTTP/1.1 connection over `stream`: a new one, or a parked one's socket.
    pub async fn resume(&self, stream: ServerStream, cut: CutSignal) -> Result<ServerConn, String> {
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
    let shared = Arc::new(Shared::default());
    let driver = shared.clone();
    tokio::spawn(async move {
        let parked = tokio::select! {
            ended = conn.without_shutdown() => match ended {
                Ok(parts) if parts.read_buf.is_empty() && driver.park.load(Ordering::Acquire) => {
                    Some(parts.io.into_inner())
                }
                Ok(parts) => {
                    let _ = parts.io.into_inner().shutdown().await;
                    None
                }
                Err(e) => {
                    tracing::debug!("server connection ended: {e}");
                    None
                }
            },
            // Dropping the connection closes it.
            _ = WhenWoken::new(safe_point_after_cut(cut, &driver.busy_since)) => {
                tracing::debug!("server connection closed: its server's drain timed out");
                None
            }
        };
        let _ = ended.send(parked);
    });
    Ok(ServerConn {
        sender,
        closed: Some(closed),
        shared,
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

/// A connection idle this long gives up its HTTP/1.1 state (hyper's buffers, some 25 KiB)
/// and keeps only its socket, which the next request over it starts a new state on.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Idle keep-alive connections to one server: ready ones and parked ones (sockets only),
/// each most recently used last.
#[derive(Default)]
pub struct IdlePool {
    stacks: Mutex<Stacks>,
}

#[derive(Default)]
struct Stacks {
    ready: Vec<(ServerConn, Instant)>,
    parked: Vec<(Parked, Instant)>,
    /// The pool's idle timeout as of the last check-in: older parked sockets are closed.
    max_age: Duration,
    /// A task parks and expires these connections while there are any.
    swept: bool,
}

/// An idle connection whose HTTP/1.1 state has ended.
enum Parked {
    /// Its driving task is handing the socket back.
    Ending(oneshot::Receiver<Option<ServerStream>>),
    Socket(ServerStream),
}

/// What a check-out finds.
pub enum Reusable {
    Ready(ServerConn),
    Parked(ServerStream),
}

impl IdlePool {
    /// The most recently used idle connection younger than `max_age` that can carry a
    /// request, if any, and how long it sat idle until `now`. Stale ones are dropped.
    pub fn checkout(&self, max_age: Duration, now: Instant) -> Option<(Reusable, Duration)> {
        let mut stacks = lock(&self.stacks);
        while let Some((conn, since)) = stacks.ready.pop() {
            let idle_for = now.saturating_duration_since(since);
            if conn.is_ready() && idle_for < max_age {
                return Some((Reusable::Ready(conn), idle_for));
            }
        }
        while let Some((mut parked, since)) = stacks.parked.pop() {
            let idle_for = now.saturating_duration_since(since);
            if idle_for < max_age && parked.is_usable() {
                if let Parked::Socket(socket) = parked {
                    return Some((Reusable::Parked(socket), idle_for));
                }
            }
        }
        None
    }

    /// Keeps `conn` for reuse, unless it cannot carry a request or `max_idle` are kept
    /// already; a sweeping task parks and expires the pool's connections while it has any.
    pub fn checkin(self: &Arc<Self>, conn: ServerConn, max_idle: usize, max_age: Duration) {
        if !conn.is_ready() {
            return;
        }
        let mut stacks = lock(&self.stacks);
        if stacks.ready.len() + stacks.parked.len() >= max_idle {
            return;
        }
        stacks.ready.push((conn, Instant::now()));
        stacks.max_age = max_age;
        if !stacks.swept {
            stacks.swept = true;
            tokio::spawn(sweep_while_idle(Arc::downgrade(self)));
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        let mut stacks = lock(&self.stacks);
        stacks.ready.clear();
        stacks.parked.clear();
    }

    /// Parks the connections idle for `PARK_AFTER`, closes the parked ones that aged or
    /// whose server closed them, as of `now`. Whether any are left to watch.
    fn sweep(&self, now: Instant) -> bool {
        let mut stacks = lock(&self.stacks);
        let Stacks {
            ready,
            parked,
            max_age,
            swept,
        } = &mut *stacks;
        // Oldest first: a prefix has idled long enough.
        let idle_for = |since: &Instant| now.saturating_duration_since(*since);
        let idled = ready.partition_point(|(_, since)| idle_for(since) >= PARK_AFTER);
        let parking = ready.drain(..idled).filter_map(|(conn, since)| {
            conn.park().map(|handing| (Parked::Ending(handing), since))
        });
        parked.extend(parking);
        parked.retain_mut(|(p, since)| idle_for(since) < *max_age && p.is_usable());
        *swept = !ready.is_empty() || !parked.is_empty();
        *swept
    }
}

async fn sweep_while_idle(pool: Weak<IdlePool>) {
    loop {
        tokio::time::sleep(PARK_AFTER / 2).await;
        match pool.upgrade() {
            Some(pool) if pool.sweep(Instant::now()) => {}
            _ => return,
        }
    }
}

impl Parked {
    /// Whether the socket can carry a request: it is (or may still become) in hand and
    /// has nothing to read, not even its end.
    fn is_usable(&mut self) -> bool {
        if let Parked::Ending(handing) = self {
            match handing.try_recv() {
                Ok(Some(socket)) => *self = Parked::Socket(socket),
                Err(oneshot::error::TryRecvError::Empty) => return true,
                _ => return false,
            }
        }
        let Parked::Socket(socket) = self else {
            return false;
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(socket).poll_read(&mut cx, &mut buf).is_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use sluice_lab::Backend;

    async fn get(conn: &mut ServerConn) -> u16 {
        let req = http::Request::get("/")
            .header("host", "x")
            .body(crate::request::no_body())
            .unwrap();
        let response = conn.sender.send_request(req).await.unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }

    async fn connected(addr: SocketAddr) -> ServerConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        handshake(Stream::Plain(Tcp(stream)), None, false)
            .await
            .unwrap()
    }

    /// A connection to `addr` that has carried a request, checked in to `pool`.
    async fn checked_in(pool: &Arc<IdlePool>, addr: SocketAddr, max_age: Duration) {
        let mut conn = connected(addr).await;
        assert_eq!(get(&mut conn).await, 200);
        pool.checkin(conn, 8, max_age);
    }

    /// Parks what is idle, as a sweep `PARK_AFTER` from now would, and lets the driving
    /// task hand the socket back.
    async fn parked(pool: &IdlePool) -> bool {
        let left = pool.sweep(Instant::now() + PARK_AFTER);
        tokio::time::sleep(Duration::from_millis(50)).await;
        left
    }

    const MAX_AGE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn an_idle_connection_is_parked_and_its_socket_carries_the_next_request() {
        let server = Backend::start("a").await;
        let pool = Arc::new(IdlePool::default());
        checked_in(&pool, server.addr, MAX_AGE).await;
        // Not yet idle for long enough: still ready.
        assert!(pool.sweep(Instant::now()));
        assert_eq!(lock(&pool.stacks).ready.len(), 1);
        assert!(parked(&pool).await);
        assert!(lock(&pool.stacks).ready.is_empty());
        let Some((Reusable::Parked(socket), _)) = pool.checkout(MAX_AGE, Instant::now()) else {
            panic!("no parked socket");
        };
        let mut conn = handshake(socket, None, false).await.unwrap();
        assert_eq!(get(&mut conn).await, 200);
        assert_eq!(server.connections(), 1, "the same socket");
    }

    #[tokio::test]
    async fn a_parked_socket_its_server_closed_is_let_go() {
        let server = Backend::start("a").await;
        let pool = Arc::new(IdlePool::default());
        checked_in(&pool, server.addr, MAX_AGE).await;
        assert!(parked(&pool).await);
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pool.sweep(Instant::now()), "nothing left to watch");
        assert!(pool.checkout(MAX_AGE, Instant::now()).is_none());
    }

    #[tokio::test]
    async fn a_parked_socket_older_than_the_idle_timeout_is_closed() {
        let server = Backend::start("a").await;
        let pool = Arc::new(IdlePool::default());
        let max_age = PARK_AFTER * 2;
        checked_in(&pool, server.addr, max_age).await;
        assert!(parked(&pool).await);
        assert!(
            pool.checkout(max_age, Instant::now()).is_some(),
            "young enough"
        );
        checked_in(&pool, server.addr, max_age).await;
        assert!(parked(&pool).await);
        assert!(!pool.sweep(Instant::now() + max_age));
        assert!(pool.checkout(max_age, Instant::now()).is_none());
    }
}
