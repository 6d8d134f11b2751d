//! The validated, typed configuration. Every value here has passed its checks: names are
//! unique, references resolve (pools are indices, not names), durations are positive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

/// The name of a service, route, pool or server: shared, since every request's log record
/// and metrics carry the names it went through.
pub type Name = Arc<str>;

#[derive(Debug, Clone)]
pub struct Config {
    pub global: Global,
    /// The admin API; `None` when the file has no `[admin]` table.
    pub admin: Option<Admin>,
    pub services: Vec<Service>,
    pub pools: Vec<Pool>,
}

impl Config {
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| &*p.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Global {
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// Write one access log line per request to stdout.
    pub access_log: bool,
    pub access_log_format: LogFormat,
    /// Keys the persistence cookie's server ids. Without it a random key is made at start,
    /// so cookies do not survive a restart or work across several instances.
    pub persistence_secret: Option<String>,
    /// Threads that carry traffic; `None` is one per CPU. Read at start only: a reload
    /// cannot resize the running thread pool.
    pub workers: Option<usize>,
    /// How long the one traffic thread (`workers = 1`) watches for new work before it
    /// sleeps; zero sleeps at once. Read at start only.
    pub busy_poll: Duration,
    /// Open client connections of the whole process; one more is closed at once. `None`:
    /// what the open-files limit allows.
    pub max_connections: Option<u32>,
    /// Header names keep the case they arrived in on HTTP/1.1 (as nginx does); off, they
    /// go out in lower case (as HAProxy sends them), which costs less per request.
    pub preserve_header_case: bool,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            shutdown_timeout: Duration::from_secs(30),
            access_log: true,
            access_log_format: LogFormat::Logfmt,
            persistence_secret: None,
            workers: None,
            busy_poll: Duration::from_micros(2),
            max_connections: None,
            preserve_header_case: true,
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs after a timestamp (docs/access-log.md).
    Logfmt,
    /// One JSON object per line, with the same fields.
    Json,
}

/// The admin API: status, drain and maintenance, weights, reload, metrics, dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Every change must carry it; without one, changes are refused.
    pub token: Option<AdminToken>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9900)),
            token: None,
        }
    }
}

/// The admin token, read from `token_file` when the configuration is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub file: std::path::PathBuf,
    pub secret: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken({})", self.file.display())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Layer 7: HTTP requests, routed, rewritten and relayed one by one.
    Http,
    /// Layer 4: each connection is relayed byte for byte to one server; routes may look
    /// at the TLS server name (SNI) without decrypting.
    Tcp,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: Name,
    pub listen: Vec<SocketAddr>,
    pub mode: Mode,
    /// Index into `Config::pools` used when no route matches; `None` answers 404.
    pub default_pool: Option<usize>,
    pub tls: Option<ServiceTls>,
    pub timeouts: ServiceTimeouts,
    pub routes: Vec<Route>,
    /// Add `X-Forwarded-For`, `-Proto` and `-Host` to requests.
    pub x_forwarded: bool,
    /// Answer sent when a pool has no server left to take a request.
    pub sorry: Sorry,
    /// What to do with `Expect: 100-continue`.
    pub expect: ExpectMode,
    /// Applied in order to every request before routing.
    pub rules: Vec<Rule>,
    pub limits: Limits,
    /// How large a request head may be.
    pub head_limits: HeadLimits,
    /// Open client connections beyond this are closed as soon as they are accepted.
    pub max_connections: Option<u32>,
    /// `mode = "tcp"`: relay with Linux `splice` (zero-copy) where the system has it.
    pub splice: bool,
}

/// Bounds on a request head, checked before anything is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line and headers together, in bytes (431 beyond; also HTTP/2's
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_size: usize,
    /// Header fields in one request (431 beyond).
    pub max_headers: usize,
    /// The request target, in bytes (414 beyond).
    pub max_uri: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            // A Kerberos ticket of a user in many groups makes a 48 KB token, 64 KiB once
            // base64-encoded in `Authorization` (Exchange's MaxTokenSize guidance).
            max_header_size: 96 << 10,
            max_headers: 100,
            max_uri: 16 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectMode {
    /// Pass it to the server and hold the body until the server's 100 (or a wait).
    Forward,
    /// Answer 100 at once and send the body with the request.
    Answer,
}

#[derive(Debug, Clone)]
pub struct ServiceTls {
    pub certificates: Vec<CertificateFiles>,
    /// Offer HTTP/2 to clients through ALPN.
    pub http2: bool,
    /// HTTP/2 streams a client may have open at once.
    pub http2_max_streams: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTimeouts {
    /// A keep-alive client connection with no request for this long is closed; also the
    /// longest pause allowed while a client sends a request body.
    pub client_idle: Duration,
    /// The request line and headers must arrive within this time (408 otherwise).
    pub request_header: Duration,
    pub tls_handshake: Duration,
    /// With `Expect: 100-continue` forwarded: how long to wait for the server's 100
    /// before sending the body anyway.
    pub expect_continue: Duration,
    /// `mode = "tcp"`: a connection with no byte either way for this long is closed.
    pub idle: Duration,
    /// `mode = "tcp"` with SNI routes: how long to wait for the TLS ClientHello.
    pub client_hello: Duration,
}

impl Default for ServiceTimeouts {
    fn default() -> Self {
        ServiceTimeouts {
            client_idle: Duration::from_secs(300),
            request_header: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            expect_continue: Duration::from_secs(2),
            // An IMAP IDLE client refreshes within 29 minutes (RFC 9051).
            idle: Duration::from_secs(3600),
            client_hello: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sorry {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Default for Sorry {
    fn default() -> Self {
        Sorry {
            status: 503,
            content_type: "text/html; charset=utf-8".into(),
            body: "<!doctype html><title>Service unavailable</title>\
                   <h1>Service unavailable</h1><p>No server is available to take this request. \
                   Please try again shortly.</p>\n"
                .into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Name,
    /// Every condition must hold (an empty list matches everything).
    pub conditions: Vec<Condition>,
    pub pool: usize,
    /// Applied after the service's rules, to this route's requests only.
    pub rules: Vec<Rule>,
    pub limits: Limits,
}

/// Per-request limits; a route's replace its service's where given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The longest pause allowed inside a request body.
    pub client_idle: Option<Duration>,
    /// The longest the server may stay silent (replaces the pool's `server` timeout).
    pub server: Option<Duration>,
    /// Largest request body accepted (413 beyond it).
    pub max_body: Option<u64>,
}

impl Limits {
    /// `self` where set, else `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            client_idle: self.client_idle.or(base.client_idle),
            server: self.server.or(base.server),
            max_body: self.max_body.or(base.max_body),
        }
    }
}

/// One request condition. Text comparisons ignore ASCII case.
#[derive(Debug, Clone)]
pub enum Condition {
    Path(String),
    PathPrefix(String),
    PathSuffix(String),
    PathRegex(Regex),
    /// Host without port; a leading `*.` matches any subdomain.
    Host(String),
    /// `mode = "tcp"`: the server name of the TLS ClientHello is one of these (lower
    /// case; a leading `*.` matches any subdomain).
    Sni(Vec<String>),
    /// Header present (value `None`) or equal to the value.
    Header {
        name: String,
        value: Option<String>,
    },
    /// One of these methods (upper case).
    Method(Vec<String>),
    /// The client address is in one of these networks.
    Source(Vec<ipnet::IpNet>),
    /// Not all of these hold.
    Not(Vec<Condition>),
    /// At least one of these groups holds entirely.
    Any(Vec<Vec<Condition>>),
}

/// An ordered request/response rule: when its conditions hold, its action applies.
#[derive(Debug, Clone)]
pub struct Rule {
    pub conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with a redirect; no server sees the request.
    Redirect {
        status: u16,
        to: RedirectTo,
    },
    /// Answer with this status and body; no server sees the request.
    Deny {
        status: u16,
        body: String,
    },
    SetHeader {
        side: Side,
        name: String,
        value: String,
    },
    AddHeader {
        side: Side,
        name: String,
        value: String,
    },
    RemoveHeader {
        side: Side,
        name: String,
    },
    /// Replace the path by the regex's expansion of `to` (`$1`, `${name}`); the query
    /// is kept.
    RewritePath {
        regex: Regex,
        to: String,
    },
    /// Replace the `Host` header sent to the server.
    SetHost(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTo {
    /// This exact location.
    Location(String),
    /// The same path and query under another scheme, and optionally host and port.
    Scheme {
        scheme: String,
        host: Option<String>,
        port: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    /// Consistent (rendezvous) hashing: instances with the same servers agree without
    /// sharing state, and removing one of N servers moves only its own keys.
    Hash(HashOn),
}

/// What `algorithm = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's address.
    Source,
    /// A request header's value (lowercase name); requests without it are balanced by
    /// round robin.
    Header(String),
}

/// Keeping a client's requests on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    pub kind: PersistenceKind,
    /// A table entry unused this long is forgotten (source and header kinds).
    pub idle_timeout: Duration,
    /// The most entries kept; the least recently used goes first.
    pub max_entries: usize,
    pub on_server_down: OnServerDown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistenceKind {
    /// A cookie naming the server, inserted by sluice and removed before the server sees it.
    Cookie(PersistCookie),
    /// The client's address, masked to these prefix lengths.
    Source { prefix_v4: u8, prefix_v6: u8 },
    /// A request header's value (lowercase name).
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistCookie {
    pub name: String,
    pub path: String,
    pub domain: Option<String>,
    /// None: a session cookie.
    pub max_age: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// What a request persisted to an unavailable server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServerDown {
    /// Another server, and the persistence moves there.
    Redispatch,
    /// An error (503).
    Fail,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: Name,
    pub algorithm: Algorithm,
    pub servers: Vec<Server>,
    pub health: Option<HealthCheck>,
    pub tls: Option<UpstreamTls>,
    pub timeouts: PoolTimeouts,
    /// Further servers tried when a connection cannot be made.
    pub retries: u32,
    /// Idle keep-alive connections kept per server.
    pub max_idle_per_server: usize,
    /// Idle keep-alive connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// Give a client connection its own server connection once connection-bound
    /// authentication (NTLM, Negotiate) is seen on it. Off: such server connections are
    /// closed after the exchange instead of being shared.
    pub pin_auth: bool,
    pub persistence: Option<Persistence>,
    /// A server coming back up ramps from a small share of its weight to all of it over
    /// this long.
    pub slow_start: Option<Duration>,
    /// After this long draining, a server's remaining connections are closed at the next
    /// safe point; `None` waits for them to end by themselves.
    pub drain_timeout: Option<Duration>,
    /// Announce each client's address with the PROXY protocol (tcp services only).
    pub send_proxy: Option<ProxyProtocol>,
}

/// The PROXY protocol version a pool's servers expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary header.
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: Name,
    pub address: SocketAddr,
    pub weight: u32,
    pub max_connections: Option<u32>,
    pub backup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTimeouts {
    pub connect: Duration,
    /// Longest wait for response headers and longest pause inside a response body.
    pub server: Duration,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        PoolTimeouts {
            connect: Duration::from_secs(5),
            server: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Whether the check speaks TLS, and how.
    pub tls: CheckTls,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The connection (and TLS handshake, if any) succeeds.
    Tcp,
    Http(HttpProbe),
    /// Lines sent and answers expected, e.g. an SMTP banner and EHLO.
    Dialogue(Vec<Step>),
}

/// How a health check reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTls {
    /// As the pool's traffic does: TLS with its verification when it has `[pool.tls]`.
    AsPool,
    /// Plain TCP.
    Off,
    /// A TLS handshake that checks the server completes it, not who it is (the pool
    /// passes TLS through; its clients check the certificate end to end).
    Handshake { sni: Option<String> },
}

/// One step of a dialogue: send a line (if any), then read one reply and require it to
/// start with `expect` (if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub send: Option<String>,
    pub expect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub expect_status: u16,
    pub expect_body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub verify: Verify,
    /// Server name sent in the ClientHello and checked by `verify = "full"`.
    pub sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The certificate chain is checked against the system roots or `ca_file`.
    Full { ca_file: Option<PathBuf> },
    /// The server's end certificate must have one of these SHA-256 digests.
    Fingerprint(Vec<[u8; 32]>),
    /// No verification at all.
    None,
}
