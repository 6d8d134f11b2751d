//! One request through the balancer: apply the rules, route it, choose a server, send it over a reused or
//! new connection (retrying elsewhere while that is safe), and relay the response.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use sluice_config::{Limits, OnServerDown, Service};

use crate::access_log::{AccessLog, Record};
use crate::body::{Direction, Exchange, Finish, Metered, ProxyBody, UploadFault};
use crate::conn_io::{ConnPhase, RequestPhase};
use crate::error::ProxyError;
use crate::expect::GateHandle;
use crate::framing;
use crate::headers::{self, remove_hop_by_hop};
use crate::local::{error_response, rule_response};
use crate::persistence::{forbid_shared_caching, Decision, Sticky};
use crate::pinning::{self, Leased, PinSlot, Pinned, Reuse};
use crate::request;
use crate::routing;
use crate::rules::{self, Answer, ResponseEdits};
use crate::state::{ActiveGuard, Choice, PoolRt, ServerRt, Snapshot};
use crate::upstream::{Reusable, ServerConn, UpstreamBody};

/// What a request handler knows about the client connection it serves.
pub struct ConnCtx {
    pub snapshot: Arc<Snapshot>,
    pub service: usize,
    pub client: SocketAddr,
    pub tls: bool,
    /// The server name the client's TLS handshake asked for.
    pub sni: Option<Arc<str>>,
    /// Header and idle deadlines, tracked on HTTP/1 connections only.
    pub phase: Option<Arc<ConnPhase>>,
    /// The pinned server connection of an HTTP/1 client connection. HTTP/2 connections
    /// have none: their streams cannot share one HTTP/1.1 server connection.
    pub pins: Option<Arc<PinSlot>>,
    pub log: AccessLog,
    /// `client` as `X-Forwarded-For` gives it, formatted at the first request.
    pub forwarded_for: OnceLock<HeaderValue>,
}

impl ConnCtx {
    pub fn forwarded_for(&self) -> &HeaderValue {
        self.forwarded_for
            .get_or_init(|| headers::forwarded_for(self.client.ip()))
    }

    pub fn service(&self) -> &Service {
        &self.snapshot.config.services[self.service]
    }
}

/// The server side of a request that got its response headers.
struct Answered<'r> {
    response: Response<Incoming>,
    leased: Leased,
    active: ActiveGuard,
    pool: Arc<PoolRt>,
    /// The request carried NTLM/Negotiate credentials.
    auth: bool,
    /// The request body's `Expect: 100-continue` gate, if it has one.
    gate: Option<GateHandle>,
    /// The longest silence allowed inside the response body.
    server_idle: Duration,
    edits: ResponseEdits<'r>,
    /// The persistence cookie to give the client.
    set_cookie: Option<HeaderValue>,
}

/// Where a request ended up.
enum Outcome<'r> {
    Proxied(Box<Answered<'r>>),
    /// A rule answered it.
    Ruled(Answer),
}

pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, h2::Error> {
    let (phase, first_byte) = match &ctx.phase {
        Some(p) => {
            let (guard, at) = p.begin_request();
            (guard, Some(at))
        }
        None => (RequestPhase::none(), None),
    };
    let start = Instant::now();
    let mut record = Record {
        client: Some(ctx.client),
        service: ctx.service().name.clone(),
        proto: version_name(req.version()),
        t_headers: first_byte.map(|at| start.saturating_duration_since(at)),
        ..Record::default()
    };
    if ctx.log.writes_lines() {
        // What only the log line shows.
        record.time = Some(SystemTime::now());
        record.method = req.method().to_string();
        record.uri = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        record.sni = ctx.sni.as_deref().map(str::to_string);
    }
    let exchange = Exchange::new(start);
    match forward(&ctx, req, &mut record, &exchange).await {
        Ok(Outcome::Proxied(answered)) => {
            let (head, body) = relay(&ctx, *answered, record, exchange, phase).into_parts();
            Ok(Response::from_parts(
                head,
                body.with_small_body_ahead().await,
            ))
        }
        Ok(Outcome::Ruled(answer)) => Ok(rule_response(&ctx, answer, record, &exchange, phase)),
        Err(ProxyError::Http11Required) if ctx.pins.is_none() => {
            let e = ProxyError::Http11Required;
            drop(error_response(&ctx, &e, record, &exchange, phase));
            Err(h2::Error::from(h2::Reason::HTTP_1_1_REQUIRED))
        }
        Err(e) => Ok(error_response(&ctx, &e, record, &exchange, phase)),
    }
}

/// Rules, routing, then the server.
async fn forward<'r>(
    ctx: &'r ConnCtx,
    req: Request<Incoming>,
    record: &mut Record,
    exchange: &Arc<Exchange>,
) -> Result<Outcome<'r>, ProxyError> {
    let service = ctx.service();
    let client = ctx.client.ip();
    let (mut parts, body) = req.into_parts();
    framing::check(&mut parts, &service.head_limits)?;
    let host = routing::host_value(&parts.headers, &parts.uri);
    let mut edits = ResponseEdits::default();
    if let Some(answer) = rules::apply(&service.rules, &mut parts, client, &mut edits)? {
        return Ok(Outcome::Ruled(answer));
    }
    let view = routing::View::of(&parts, client);
    let (route, pool) =
        routing::select(service, |c| view.holds_all(c)).ok_or(ProxyError::NoRoute)?;
    record.route = route.map(|r| r.name.clone());
    if let Some(route) = route {
        if let Some(answer) = rules::apply(&route.rules, &mut parts, client, &mut edits)? {
            return Ok(Outcome::Ruled(answer));
        }
    }
    let limits = route.map_or(service.limits.clone(), |r| r.limits.over(&service.limits));
    request::check_declared_length(&parts, &limits)?;
    let pool = ctx.snapshot.pools[pool].clone();
    record.pool = Some(pool.cfg.name.clone());
    let auth = pinning::request_binds(&parts.headers);
    if auth && pool.cfg.pin_auth && ctx.pins.is_none() {
        return Err(ProxyError::Http11Required);
    }
    // Persistence's clock: the request's start is recent enough.
    let now = exchange.start;
    let (sticky, choice) = affinity(&pool, &mut parts.headers, client, now)?;
    let (req, gate) = request::prepare(ctx, (parts, body), host, &limits, exchange)?;
    // A pinned connection serves this request only if its server is in the request's
    // pool; otherwise it is closed here and the request is balanced as usual.
    let pinned = ctx.pins.as_ref().and_then(|slot| slot.take()).filter(|p| {
        pool.servers
            .iter()
            .any(|s| s.cfg.address == p.server.cfg.address)
    });
    let pinned = pinned.and_then(|p| usable_pin(ctx, p));
    let server_idle = limits.server.unwrap_or(pool.cfg.timeouts.server);
    let sent = match pinned {
        Some(pinned) => send_pinned(pinned, req, server_idle, record, exchange).await,
        None => send(&pool, req, choice, server_idle, record, exchange).await,
    };
    let (response, leased, active) = match (sent, exchange.upload_fault()) {
        (Ok(sent), _) => sent,
        (Err(e), None) => return Err(e),
        (Err(_), Some(fault)) => return Err(client_fault(fault, &limits, service)),
    };
    if let Err(reason) = framing::check_response(response.status(), response.headers()) {
        // Dropping the response and its connection here closes the connection.
        return Err(ProxyError::BadResponse {
            server: record.server.clone().unwrap_or_default(),
            reason,
        });
    }
    let set_cookie = remember(&pool, sticky, &leased, record, now);
    Ok(Outcome::Proxied(Box::new(Answered {
        response,
        leased,
        active,
        pool,
        auth,
        gate,
        server_idle,
        edits,
        set_cookie,
    })))
}

/// The error for a request whose body the client failed: the server's answer to half a
/// request (or its hanging up) is not the server's fault.
fn client_fault(fault: UploadFault, limits: &Limits, service: &Service) -> ProxyError {
    match fault {
        UploadFault::TooLarge => ProxyError::BodyTooLarge(limits.max_body.unwrap_or(0)),
        UploadFault::Malformed => ProxyError::BadRequest("malformed or unfinished body".into()),
        UploadFault::Idle => {
            ProxyError::ClientTimeout(limits.client_idle.unwrap_or(service.timeouts.client_idle))
        }
    }
}

/// What persistence and hashing make of the request. With `on_server_down = "fail"`, a
/// request whose server cannot take it gets an error instead of another server.
pub(crate) fn affinity(
    pool: &PoolRt,
    headers: &mut HeaderMap,
    client: IpAddr,
    now: Instant,
) -> Result<(Sticky, Choice), ProxyError> {
    let hash = pool.hash_key(headers, client);
    let Some(persistence) = &pool.persistence else {
        return Ok((Sticky::default(), Choice { prefer: None, hash }));
    };
    let sticky = persistence.read(headers, client, now);
    if let Some(server) = sticky.prefer.map(|i| &pool.servers[i]) {
        if persistence.cfg.on_server_down == OnServerDown::Fail && !server.can_continue() {
            return Err(ProxyError::SessionServerDown(server.cfg.name.clone()));
        }
    }
    Ok((
        sticky,
        Choice {
            prefer: sticky.prefer,
            hash,
        },
    ))
}

/// Records where a persisted pool's request went; the cookie to set, if any.
fn remember(
    pool: &PoolRt,
    sticky: Sticky,
    leased: &Leased,
    record: &mut Record,
    now: Instant,
) -> Option<HeaderValue> {
    let persistence = pool.persistence.as_ref()?;
    let Leased::Shared { server, .. } = leased else {
        return None;
    };
    let chosen = pool.servers.iter().position(|s| Arc::ptr_eq(s, server))?;
    record.persist = Some(Decision::of(sticky, chosen).as_str());
    persistence.remember(sticky, chosen, now)
}

/// A pinned connection whose server the operator took out of service (maintenance, or a
/// drain that timed out) carries no more requests: the request is balanced afresh and
/// the client connection, whose authentication lived in the pinned one, closes after it.
fn usable_pin(ctx: &ConnCtx, pinned: Pinned) -> Option<Pinned> {
    if pinned.server.live.continues_sessions() {
        return Some(pinned);
    }
    if let Some(slot) = &ctx.pins {
        slot.lost.notify_one();
    }
    None
}

/// How many times a request without a body is re-sent after a reused connection died
/// under it, on top of the pool's retries.
const STALE_RESENDS: u32 = 3;

/// A request over the connection its client connection owns: no retry, no other
/// server. Losing it is the client's loss too (see `local_error`).
async fn send_pinned(
    mut pinned: Pinned,
    req: Request<UpstreamBody>,
    limit: Duration,
    record: &mut Record,
    exchange: &Arc<Exchange>,
) -> Result<Sent, ProxyError> {
    record.pinned = true;
    let server = pinned.server.clone();
    record.server = Some(server.cfg.name.clone());
    let active = server.live.begin();
    pinned.begin_exchange(Instant::now());
    let sent = pinned.sender().try_send_request(req);
    match await_response(sent, exchange, limit).await {
        Some(Ok(response)) => Ok((response, Leased::Pinned(pinned), active)),
        Some(Err(e)) => Err(ProxyError::PinnedLost {
            server: server.cfg.name.clone(),
            reason: e.into_error().to_string(),
        }),
        None => Err(ProxyError::ServerTimeout {
            server: server.cfg.name.clone(),
            after: limit,
        }),
    }
}

/// A response's head, the connection it came over, and the server's request count.
type Sent = (Response<Incoming>, Leased, ActiveGuard);

/// A connection idle for less than this is not one its server is closing for idleness:
/// servers keep idle connections for seconds (nginx 75 s, IIS 120 s, Apache 5 s). A
/// bodiless request sent over an older one keeps a copy of its head, to send it again
/// should the server have closed the connection just as the request went out.
const RISKY_IDLE: Duration = Duration::from_millis(250);

async fn send(
    pool: &Arc<PoolRt>,
    req: Request<UpstreamBody>,
    choice: Choice,
    limit: Duration,
    record: &mut Record,
    exchange: &Arc<Exchange>,
) -> Result<Sent, ProxyError> {
    let mut attempts = Attempts::new(pool, choice);
    let mut pending = Some(req);
    let mut replay = None;
    let mut stale = 0;
    while let Some((index, server, active)) = attempts.next(record) {
        // One clock reading serves the choice's time, the idle connection's age and, when
        // one is ready, the start of sending.
        let connecting = Instant::now();
        record
            .t_wait
            .get_or_insert(connecting.saturating_duration_since(exchange.start));
        let checkout = server.live.idle.checkout(pool.cfg.idle_timeout, connecting);
        let (mut conn, idle_for, sending) = match checkout {
            Some((Reusable::Ready(conn), idle_for)) => (conn, Some(idle_for), connecting),
            // Boxed: connecting (TCP, TLS) is rare with reuse, and its state is large; in
            // place it would grow every request's future.
            parked => match Box::pin(connect(pool, &server, parked)).await {
                Ok((conn, idle_for)) => (conn, idle_for, Instant::now()),
                Err(reason) => {
                    attempts.unreachable(index, &server, reason);
                    continue;
                }
            },
        };
        let reused = idle_for.is_some();
        record.t_connect = Some(sending - connecting);
        let Some(request) = pending
            .take()
            .or_else(|| replay.as_ref().map(request::bodiless))
        else {
            break;
        };
        if replay.is_none() && idle_for.is_some_and(|idle| idle >= RISKY_IDLE) {
            replay = request::replayable(&request);
        }
        conn.begin_exchange(sending);
        let outcome = await_response(conn.sender.try_send_request(request), exchange, limit).await;
        match outcome {
            Some(Ok(response)) => {
                record.t_response = Some(sending.elapsed());
                return Ok((response, Leased::Shared { server, conn }, active));
            }
            Some(Err(mut e)) => {
                let unsent = e.take_message();
                let resend = unsent.is_some() || (reused && replay.is_some());
                if resend && reused && stale < STALE_RESENDS {
                    // A kept-alive connection the server had closed: not the server's fault.
                    stale += 1;
                    pending = unsent;
                    continue;
                }
                if let Some(req) = unsent {
                    attempts.unreachable(index, &server, e.into_error().to_string());
                    pending = Some(req);
                    continue;
                }
                return Err(ProxyError::ServerFailed {
                    server: server.cfg.name.clone(),
                    reason: e.into_error().to_string(),
                });
            }
            None => {
                return Err(ProxyError::ServerTimeout {
                    server: server.cfg.name.clone(),
                    after: limit,
                })
            }
        }
    }
    Err(attempts.gave_up())
}

/// The connection a check-out found (resumed if it was parked) and how long it idled, or
/// a new one.
async fn connect(
    pool: &PoolRt,
    server: &ServerRt,
    parked: Option<(Reusable, Duration)>,
) -> Result<(ServerConn, Option<Duration>), String> {
    let cut = server.live.cut_signal();
    match parked {
        Some((Reusable::Parked(socket), idle_for)) => {
            Ok((pool.connector.resume(socket, cut).await?, Some(idle_for)))
        }
        Some((Reusable::Ready(conn), idle_for)) => Ok((conn, Some(idle_for))),
        None => Ok((pool.connector.open(server.cfg.address, cut).await?, None)),
    }
}

/// The servers one request (or layer 4 connection) tries in turn: no more than the pool's
/// retries allow, none twice, and why the last one could not be reached.
pub(crate) struct Attempts<'p> {
    pool: &'p PoolRt,
    choice: Choice,
    tried: Vec<usize>,
    last_error: Option<ProxyError>,
}

impl<'p> Attempts<'p> {
    pub(crate) fn new(pool: &'p PoolRt, choice: Choice) -> Self {
        Attempts {
            pool,
            choice,
            tried: Vec::new(),
            last_error: None,
        }
    }

    /// The next server to try, named in the log line and counted busy until the guard
    /// drops; `None` once the retries are spent or no untried server can take it.
    pub(crate) fn next(
        &mut self,
        record: &mut Record,
    ) -> Option<(usize, Arc<ServerRt>, ActiveGuard)> {
        if self.tried.len() > self.pool.cfg.retries as usize {
            return None;
        }
        let index = self.pool.pick(&self.tried, self.choice)?;
        let server = self.pool.servers[index].clone();
        record.server = Some(server.cfg.name.clone());
        let active = server.live.begin();
        Some((index, server, active))
    }

    /// Server `index` could not be reached: that counts against its health, and it is
    /// not tried again.
    pub(crate) fn unreachable(&mut self, index: usize, server: &ServerRt, reason: String) {
        passive_failure(self.pool, server, &reason);
        self.tried.push(index);
        self.last_error = Some(ProxyError::Connect {
            server: server.cfg.name.clone(),
            reason,
        });
    }

    /// The error when no server took it: the last connect failure, unless the failures
    /// just seen have taken every server out. Then the pool is down, which the sorry page
    /// says better than a bare 502.
    pub(crate) fn gave_up(self) -> ProxyError {
        match self.last_error {
            Some(e) if self.pool.pick(&[], Choice::default()).is_some() => e,
            _ => ProxyError::NoServer(self.pool.cfg.name.clone()),
        }
    }
}

/// Waits for the response headers. The server's time limit runs only while the client is
/// not uploading: a long request body (`RPC_IN_DATA`) is not the server being slow.
async fn await_response<F>(
    response: F,
    exchange: &Exchange,
    limit: Duration,
) -> Option<Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>>
where
    F: std::future::Future<
        Output = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>,
    >,
{
    tokio::pin!(response);
    loop {
        let deadline = exchange.last_upload() + limit;
        tokio::select! {
            r = &mut response => return Some(r),
            _ = tokio::time::sleep_until(deadline.into()) => {
                if exchange.last_upload() + limit <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// A connection failure seen in live traffic counts against the server's health. Only
/// pools with a health check take it into account: without probes nothing would bring
/// the server back.
fn passive_failure(pool: &PoolRt, server: &ServerRt, reason: &str) {
    tracing::warn!(pool = %pool.cfg.name, server = %server.cfg.name, "connection failed: {reason}");
    if pool.cfg.health.is_some() {
        if let Some(sluice_health::Transition::WentDown) =
            server.live.health.record(Err(reason.to_string()))
        {
            tracing::warn!(pool = %pool.cfg.name, server = %server.cfg.name, "server is DOWN: {reason}");
        }
    }
}

fn relay(
    ctx: &ConnCtx,
    answered: Answered<'_>,
    mut record: Record,
    exchange: Arc<Exchange>,
    phase: RequestPhase,
) -> Response<ProxyBody> {
    let Answered {
        response,
        leased,
        active,
        pool,
        auth,
        gate,
        server_idle,
        edits,
        set_cookie,
    } = answered;
    let (mut parts, body) = response.into_parts();
    let binds = auth || leased.is_pinned() || pinning::response_binds(parts.status, &parts.headers);
    // A body the server answered without asking for is never sent: the connection's
    // framing is then unfinished and it cannot carry another request.
    let unsent_body = gate.as_ref().is_some_and(GateHandle::answered);
    let reuse = match &ctx.pins {
        _ if unsent_body => Reuse::Close,
        _ if !binds => Reuse::Pool {
            max_idle: pool.cfg.max_idle_per_server,
            max_age: pool.cfg.idle_timeout,
        },
        Some(slot) if pool.cfg.pin_auth => Reuse::Pin(slot.clone()),
        _ => Reuse::Close,
    };
    record.pinned = matches!(reuse, Reuse::Pin(_));
    remove_hop_by_hop(&mut parts.headers);
    edits.apply(&mut parts.headers);
    if let Some(cookie) = set_cookie {
        parts.headers.append(SET_COOKIE, cookie);
        forbid_shared_caching(&mut parts.headers);
    }
    record.status = parts.status.as_u16();
    let body = Metered::new(body, exchange.clone(), Direction::Download, server_idle);
    let finish = Finish {
        leased,
        reuse,
        gate,
        active,
        record,
        exchange,
        log: ctx.log.clone(),
        phase,
    };
    Response::from_parts(parts, ProxyBody::relayed(body, finish))
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}
