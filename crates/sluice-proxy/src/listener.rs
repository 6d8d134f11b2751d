//! Accepting clients: bind, accept, TLS handshake (ALPN picks HTTP/2 or HTTP/1.1), then
//! serve the connection with hyper until it ends or shutdown asks it to finish.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_config::{HeadLimits, Mode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessLog, Record};
use crate::body::ProxyBody;
use crate::conn_io::{ConnPhase, PhaseIo, WaitTimeout};
use crate::forward::{handle, ConnCtx};
use crate::gate::WhenWoken;
use crate::pinning::PinSlot;
use crate::state::Snapshot;
use crate::stream::{ClientStream, Stream, Tcp};

/// Binds with SO_REUSEADDR; IPv6 sockets are IPv6-only so `[::]:443` and `0.0.0.0:443`
/// can both be listed.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Counts open client connections so shutdown can wait for them.
#[derive(Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    idle: Notify,
}

impl ConnTracker {
    pub fn enter(self: &Arc<Self>) -> TrackGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Returns when no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct TrackGuard(Arc<ConnTracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything an accept loop needs. The service is named, not numbered: a reload may
/// move it in the list.
#[derive(Clone)]
pub struct Listening {
    pub service: Arc<str>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub log: AccessLog,
    /// Every client connection of the process.
    pub tracker: Arc<ConnTracker>,
    /// This service's client connections (all its listeners), for `max_connections`.
    pub service_tracker: Arc<ConnTracker>,
    pub shutdown: CancellationToken,
}

/// Accepts until shutdown (or until the task is aborted: a reload removed the listener,
/// which leaves the connections it accepted alone).
pub async fn accept_loop(listener: Arc<TcpListener>, ctx: Listening) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, client)) => admit(tcp, client, &ctx),
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// Serves a new connection in its own task, unless its service or the process is at
/// `max_connections`: then it is closed at once (and logged), before it costs anything.
fn admit(tcp: TcpStream, client: SocketAddr, ctx: &Listening) {
    let snapshot = ctx.snapshot.load_full();
    let Some(index) = snapshot.service_index(&ctx.service) else {
        return;
    };
    let service = &snapshot.config.services[index];
    let (mode, limit) = (service.mode, service.max_connections);
    let service_full = limit.is_some_and(|max| ctx.service_tracker.open() >= max as usize);
    if service_full || ctx.tracker.open() >= snapshot.max_connections {
        ctx.log.write(&Record {
            time: Some(std::time::SystemTime::now()),
            client: Some(client),
            service: ctx.service.clone(),
            proto: if mode == Mode::Tcp { "TCP" } else { "HTTP" },
            end: "max_connections",
            ..Record::default()
        });
        return;
    }
    let ctx = ctx.clone();
    let guards = (ctx.tracker.enter(), ctx.service_tracker.enter());
    match mode {
        // Setting up (TLS; all of HTTP/2) is a task of its own; an HTTP/1 connection then
        // goes on in a second one, whose state is only what serving it needs: such a
        // connection is parked for most of its life.
        Mode::Http => {
            tokio::spawn(async move {
                if let Some(http1) = serve(tcp, client, ctx, snapshot, index, guards).await {
                    tokio::spawn(http1.run());
                }
            });
        }
        Mode::Tcp => {
            tokio::spawn(async move {
                crate::l4::serve(tcp, client, ctx, &snapshot, index).await;
                drop(guards);
            });
        }
    }
}

/// Counted as open, for the whole process and for its service, while held.
type OpenGuards = (TrackGuard, TrackGuard);

/// Sets up an HTTP connection of service `index` of `snapshot`, the generation it was
/// accepted under, and serves it if it speaks HTTP/2; an HTTP/1 connection is returned,
/// ready to be served.
async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    ctx: Listening,
    snapshot: Arc<Snapshot>,
    index: usize,
    guards: OpenGuards,
) -> Option<Http1> {
    let _ = tcp.set_nodelay(true);
    let service = &snapshot.config.services[index];
    let timeouts = service.timeouts.clone();
    let tls = snapshot.acceptors[index].clone();
    let (stream, h2, sni) = match &tls {
        None => (Stream::Plain(Tcp(tcp)), false, None),
        Some(acceptor) => {
            // Boxed: the handshake's state is large and over once it is done.
            let handshake = Box::pin(tokio::time::timeout(
                timeouts.tls_handshake,
                acceptor.accept(Tcp(tcp)),
            ));
            match handshake.await {
                Ok(Ok(tls)) => {
                    let session = tls.get_ref().1;
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let sni = session.server_name().map(Arc::from);
                    (Stream::Tls(Box::new(tls)), h2, sni)
                }
                Ok(Err(e)) => {
                    tracing::debug!(%client, "TLS handshake failed: {e}");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%client, "TLS handshake timed out");
                    return None;
                }
            }
        }
    };
    let phase = (!h2).then(ConnPhase::new);
    let pins = (!h2).then(|| Arc::new(PinSlot::default()));
    let pin_lost = pins.as_ref().map(|p| p.lost.clone());
    let conn = Conn {
        current: ctx.snapshot.clone(),
        ctx: Arc::new(ConnCtx {
            snapshot: snapshot.clone(),
            service: index,
            client,
            tls: tls.is_some(),
            sni,
            phase: phase.clone(),
            pins,
            log: ctx.log.clone(),
            forwarded_for: OnceLock::new(),
        }),
    };
    let report = timeout_reporter(&conn.ctx);
    let ends = Ends {
        shutdown: ctx.shutdown.clone(),
        pin_lost,
    };
    let result = match phase {
        Some(phase) => {
            let io = PhaseIo::new(
                stream,
                phase.clone(),
                timeouts.request_header,
                timeouts.client_idle,
                report,
            );
            return Some(Http1 {
                io,
                svc: Handler(conn),
                ends,
                _guards: guards,
            });
        }
        None => {
            let cancels = Arc::new(Cancels::default());
            let counted = cancels.clone();
            let svc = service_fn(move |req| {
                let guard = CancelGuard::new(counted.clone());
                let answer = handle(conn.for_request(), req);
                async move {
                    let response = answer.await;
                    guard.answered();
                    response
                }
            });
            let streams = service.tls.as_ref().map_or(100, |t| t.http2_max_streams);
            serve_http2(stream, svc, service.head_limits, streams, ends, cancels).await
        }
    };
    if let Err(e) = result {
        log_connection_error(&ctx.log, &service.name, client, &e);
    }
    None
}

/// What ends a connection at its next safe point, other than the client.
struct Ends {
    shutdown: CancellationToken,
    /// Signalled when the server connection a client is pinned to is lost.
    pin_lost: Option<Arc<Notify>>,
}

impl Ends {
    async fn wait(&mut self) {
        let Ends { shutdown, pin_lost } = self;
        let lost = async {
            match pin_lost {
                Some(lost) => lost.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = lost => tracing::debug!("pinned server connection closed; closing the client's"),
        }
    }
}

/// Rapid reset (CVE-2023-44487) paced so that every stream is accepted before it is
/// cancelled escapes h2's count of streams reset before acceptance, yet makes sluice start
/// work (routing, a server request) that the client throws away. A connection whose client
/// cancels this many streams before their answers began ends with GOAWAY.
const MAX_CANCELLED: usize = 100;

#[derive(Default)]
struct Cancels {
    count: AtomicUsize,
    too_many: Notify,
}

/// Counts its stream as cancelled unless the answer came before it was dropped.
struct CancelGuard(Option<Arc<Cancels>>);

impl CancelGuard {
    fn new(cancels: Arc<Cancels>) -> Self {
        CancelGuard(Some(cancels))
    }

    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(cancels) = &self.0 {
            if cancels.count.fetch_add(1, Ordering::Relaxed) + 1 == MAX_CANCELLED {
                cancels.too_many.notify_one();
            }
        }
    }
}

/// An HTTP/1.1 client connection between hyper sessions: what serving it needs.
struct Http1 {
    io: PhaseIo<ClientStream>,
    svc: Handler,
    ends: Ends,
    _guards: OpenGuards,
}

impl Http1 {
    /// Serves HTTP/1.1 until the client leaves. A connection idle for
    /// [`crate::conn_io::PARK_AFTER`] is parked: hyper's connection (and its buffers) is
    /// ended without closing the socket, and a new one is started when the next
    /// request's bytes arrive.
    // Not an `async fn`: one keeps its arguments apart from the locals they move into,
    // and `self` would take its room twice in every connection's task.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self) -> impl Future<Output = ()> {
        async move {
            loop {
                // Boxed: a parked connection holds none of a session's state.
                match Box::pin(self.session()).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        let ctx = &self.svc.0.ctx;
                        log_connection_error(&ctx.log, &ctx.service().name, ctx.client, &e);
                        return;
                    }
                }
                let socket = self.io.get_ref();
                let goes_on = tokio::select! {
                    readable = poll_fn(|cx| socket.poll_read_ready(cx)) => readable.is_ok(),
                    _ = tokio::time::sleep(self.io.idle_after_park()) => false,
                    _ = self.ends.wait() => false,
                };
                if !goes_on {
                    close(&mut self.io).await;
                    return;
                }
            }
        }
    }

    /// One hyper session: until the client leaves or an end is asked for (then the
    /// connection is closed and `false` returned), or until it parks (`true`): then the
    /// socket is ready to be read again.
    async fn session(&mut self) -> hyper::Result<bool> {
        let Http1 { io, svc, ends, .. } = self;
        let phase = io.phase();
        let ctx = &svc.0.ctx;
        let builder = http1_builder(
            ctx.service().head_limits,
            ctx.snapshot.config.global.preserve_header_case,
        );
        // The connection's own fields are lent, not moved: what hyper hands back at the
        // end would otherwise sit in the task's future beside them.
        let mut conn = builder.serve_connection(TokioIo::new(&mut *io), &*svc);
        let park = loop {
            let park = tokio::select! {
                r = poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                    r?;
                    break false;
                }
                _ = WhenWoken::new(phase.parked.notified()) => {
                    if phase.in_request() {
                        continue;
                    }
                    true
                }
                _ = WhenWoken::new(ends.wait()) => false,
            };
            // An idle connection ends at once, leaving the socket open; one with a request
            // in progress (even one begun just now) ends after it with `Connection: close`.
            let requests = phase.requests();
            Pin::new(&mut conn).graceful_shutdown();
            poll_fn(|cx| conn.poll_without_shutdown(cx)).await?;
            break park && phase.requests() == requests;
        };
        let read_ahead = conn.into_parts().read_buf;
        if !park {
            close(io).await;
            return Ok(false);
        }
        tracing::trace!(read_ahead = read_ahead.len(), "parked");
        io.unpark(read_ahead);
        Ok(true)
    }
}

fn http1_builder(limits: HeadLimits, preserve_header_case: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .preserve_header_case(preserve_header_case)
        .header_read_timeout(None)
        .max_header_size(limits.max_header_size)
        .timer(TokioTimer::new());
    if limits.max_headers != HYPER_MAX_HEADERS {
        // Any other count moves hyper's header array from the stack to the heap.
        builder.max_headers(limits.max_headers);
    }
    builder
}

/// Ends a connection the way hyper would: TLS `close_notify`, then FIN.
async fn close(io: &mut PhaseIo<ClientStream>) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

const RAPID_RESETS: usize = 20;
const LOCAL_ERROR_RESETS: usize = 1024;

/// hyper's own header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// Serves HTTP/2 (RFC 9113): h2 answers protocol errors with RST_STREAM or GOAWAY itself;
/// what is set here bounds what one client may hold.
async fn serve_http2<S>(
    stream: ClientStream,
    svc: S,
    limits: HeadLimits,
    max_streams: u32,
    mut ends: Ends,
    cancels: Arc<Cancels>,
) -> hyper::Result<()>
where
    S: HttpService<Incoming, ResBody = ProxyBody, Error = h2::Error>,
    S::Future: Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(max_streams)
        .max_header_list_size(limits.max_header_size as u32)
        // Rapid reset (CVE-2023-44487): streams the client opens and cancels before
        // they are served, and streams sluice had to reset for a client's errors, end
        // the connection with GOAWAY past these counts.
        .max_pending_accept_reset_streams(RAPID_RESETS)
        .max_local_error_reset_streams(LOCAL_ERROR_RESETS);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = ends.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = cancels.too_many.notified() => {
            tracing::info!("client cancelled {MAX_CANCELLED} streams before their answers; closing it");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// The HTTP/1 request handler of a client connection. Its futures are boxed: hyper's
/// connection must be `Unpin` to be taken apart when it parks.
struct Handler(Conn);

type Handled = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, h2::Error>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for &Handler {
    type Response = Response<ProxyBody>;
    type Error = h2::Error;
    type Future = Handled;

    fn call(&self, req: Request<Incoming>) -> Handled {
        Box::pin(handle(self.0.for_request(), req))
    }
}

/// A client connection's context. Each request reads the configuration generation
/// current when it starts, so keep-alive connections follow reloads; one whose service
/// a reload removed (or turned from TLS to plain or back) keeps the generation it was
/// accepted under until it closes.
struct Conn {
    current: Arc<ArcSwap<Snapshot>>,
    ctx: Arc<ConnCtx>,
}

impl Conn {
    fn for_request(&self) -> Arc<ConnCtx> {
        let latest = self.current.load();
        if Arc::ptr_eq(&latest, &self.ctx.snapshot) {
            return self.ctx.clone();
        }
        let name = &self.ctx.service().name;
        let same_service = latest
            .service_index(name)
            .filter(|&i| latest.acceptors[i].is_some() == self.ctx.tls);
        match same_service {
            Some(service) => Arc::new(ConnCtx {
                snapshot: latest.clone(),
                service,
                client: self.ctx.client,
                tls: self.ctx.tls,
                sni: self.ctx.sni.clone(),
                phase: self.ctx.phase.clone(),
                pins: self.ctx.pins.clone(),
                log: self.ctx.log.clone(),
                forwarded_for: self.ctx.forwarded_for.clone(),
            }),
            None => self.ctx.clone(),
        }
    }
}

/// Logs a header deadline that passed as a request that ended in 408.
fn timeout_reporter(ctx: &Arc<ConnCtx>) -> Box<dyn FnOnce(WaitTimeout) + Send> {
    // The context, not copies of its parts: this lives as long as the connection.
    let ctx = ctx.clone();
    Box::new(move |what| {
        if what == WaitTimeout::Header {
            ctx.log.write(&Record {
                client: Some(ctx.client),
                service: ctx.service().name.clone(),
                status: 408,
                end: "header_timeout",
                ..Record::default()
            });
        }
    })
}

/// hyper answers malformed requests itself (400, 414, 431) and ends the connection; the
/// access log still gets a line for them.
fn log_connection_error(
    log: &AccessLog,
    service: &str,
    client: SocketAddr,
    e: &(dyn std::error::Error + 'static),
) {
    let Some(err) = e.downcast_ref::<hyper::Error>() else {
        tracing::debug!(%client, "connection ended: {e}");
        return;
    };
    if !err.is_parse() && !err.is_parse_too_large() {
        tracing::debug!(%client, "connection ended: {err}");
        return;
    }
    let status = status_hyper_sent(err);
    tracing::info!(%client, "malformed request: {err}");
    log.write(&Record {
        client: Some(client),
        service: service.into(),
        status,
        end: "bad_request",
        ..Record::default()
    });
}

/// The status hyper answered a request it could not parse with. hyper tells a long target
/// from large headers only in its message, so that is what is read.
fn status_hyper_sent(err: &hyper::Error) -> u16 {
    if !err.is_parse_too_large() {
        400
    } else if err.to_string().contains("URI too long") {
        414
    } else {
        431
    }
}
