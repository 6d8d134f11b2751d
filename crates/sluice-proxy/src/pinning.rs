//! Connection-bound authentication. NTLM and Negotiate authenticate the TCP connection,
//! not the request: once a server connection has carried such a handshake, whoever sends
//! the next request over it acts as the user who authenticated. So from the first sign of
//! it, the server connection belongs to that one client connection for the rest of both
//! lives: never returned to the shared idle pool, closed when the client leaves, and the
//! client connection is closed when the server connection is lost.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, StatusCode};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::state::ServerRt;
use crate::upstream::{Sender, ServerConn};

/// Exchange's answer that the connection stays authenticated. A static: looking a header
/// up by a `&str` name parses the name again at every request.
static PERSISTENT_AUTH: HeaderName = HeaderName::from_static("persistent-auth");

/// Schemes whose authentication state lives in the connection.
const CONNECTION_SCHEMES: [&str; 2] = ["ntlm", "negotiate"];

/// Does the request carry an NTLM or Negotiate token?
pub fn request_binds(headers: &HeaderMap) -> bool {
    [AUTHORIZATION, PROXY_AUTHORIZATION].iter().any(|name| {
        headers
            .get_all(name)
            .iter()
            .any(|v| names_scheme(v.as_bytes()))
    })
}

/// Does the response start or confirm connection-bound authentication: a 401/407
/// offering NTLM or Negotiate, or `Persistent-Auth: true`?
pub fn response_binds(status: StatusCode, headers: &HeaderMap) -> bool {
    let challenge = match status {
        StatusCode::UNAUTHORIZED => Some(WWW_AUTHENTICATE),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => Some(PROXY_AUTHENTICATE),
        _ => None,
    };
    let offers = challenge.is_some_and(|name| {
        headers
            .get_all(name)
            .iter()
            .any(|v| offers_scheme(v.as_bytes()))
    });
    offers
        || headers
            .get_all(&PERSISTENT_AUTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"true"))
}

/// `NTLM <token>` or `Negotiate <token>` (the scheme is the first word).
fn names_scheme(value: &[u8]) -> bool {
    let first = value
        .trim_ascii()
        .split(|b| *b == b' ' || *b == b',')
        .next()
        .unwrap_or_default();
    CONNECTION_SCHEMES
        .iter()
        .any(|s| first.eq_ignore_ascii_case(s.as_bytes()))
}

/// A challenge list such as `Negotiate, NTLM` or `Basic realm="x", NTLM`: any element
/// (or parameterless word) naming a connection scheme.
fn offers_scheme(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(names_scheme)
}

/// A server connection and the server it leads to, for the length of one request.
pub enum Leased {
    /// From the server's idle pool or newly opened.
    Shared {
        server: Arc<ServerRt>,
        conn: ServerConn,
    },
    /// This client connection's own.
    Pinned(Pinned),
}

impl Leased {
    pub fn is_pinned(&self) -> bool {
        matches!(self, Leased::Pinned(_))
    }

    fn conn(&self) -> &ServerConn {
        match self {
            Leased::Shared { conn, .. } => conn,
            Leased::Pinned(p) => &p.conn,
        }
    }

    fn is_ready(&self) -> bool {
        self.conn().is_ready()
    }

    /// The response has ended: the connection is at a safe point.
    pub fn end_exchange(&self) {
        self.conn().end_exchange();
    }
}

/// What becomes of a server connection once its response has ended.
pub enum Reuse {
    /// Back to the server's shared idle pool (no connection-bound authentication seen).
    Pool { max_idle: usize, max_age: Duration },
    /// Kept for the next request of this client connection only.
    Pin(Arc<PinSlot>),
    /// Closed: authentication was seen where it cannot be pinned.
    Close,
}

impl Reuse {
    /// Hands a connection whose exchange completed cleanly to its next owner.
    pub fn settle(self, leased: Leased) {
        match (self, leased) {
            (_, leased) if !leased.is_ready() => {}
            (Reuse::Pool { max_idle, max_age }, Leased::Shared { server, conn }) => {
                server.live.idle.checkin(conn, max_idle, max_age)
            }
            (Reuse::Pin(slot), Leased::Shared { server, conn }) => slot.pin(server, conn),
            (Reuse::Pin(slot), Leased::Pinned(p)) => slot.put_back(p),
            // A pinned connection never goes anywhere but back to its own client.
            (Reuse::Pool { .. } | Reuse::Close, _) => {}
        }
    }
}

/// The server connection pinned to one client connection.
pub struct Pinned {
    pub server: Arc<ServerRt>,
    conn: ServerConn,
    watcher: AbortHandle,
    _count: PinCount,
}

impl Pinned {
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.conn.sender
    }

    pub fn begin_exchange(&self, at: Instant) {
        self.conn.begin_exchange(at);
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Dropped on purpose (the client left, or moved to a pool without this server):
        // that must not close the client connection.
        self.watcher.abort();
    }
}

/// Counts a server's pinned connections for as long as it lives.
struct PinCount(Arc<ServerRt>);

impl PinCount {
    fn new(server: &Arc<ServerRt>) -> Self {
        server.live.pinned.fetch_add(1, Ordering::Relaxed);
        PinCount(server.clone())
    }
}

impl Drop for PinCount {
    fn drop(&mut self) {
        self.0.live.pinned.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where one HTTP/1 client connection keeps its pinned server connection between
/// requests. Requests on an HTTP/1 connection come one after the other, so the lock is
/// never contended; it is held only to put the connection in or take it out.
#[derive(Default)]
pub struct PinSlot {
    pinned: Mutex<Option<Pinned>>,
    /// Notified when the pinned server connection ends: the client connection follows.
    pub lost: Arc<Notify>,
}

impl PinSlot {
    pub fn take(&self) -> Option<Pinned> {
        self.lock().take()
    }

    /// Makes `conn` this client connection's own from now on.
    fn pin(&self, server: Arc<ServerRt>, mut conn: ServerConn) {
        let closed = conn.closed.take();
        let lost = self.lost.clone();
        let watcher = tokio::spawn(async move {
            if let Some(closed) = closed {
                let _ = closed.await;
            }
            lost.notify_one();
        })
        .abort_handle();
        let count = PinCount::new(&server);
        self.put_back(Pinned {
            server,
            conn,
            watcher,
            _count: count,
        });
    }

    fn put_back(&self, pinned: Pinned) {
        *self.lock() = Some(pinned);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pinned>> {
        crate::sync::lock(&self.pinned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn requests_with_connection_schemes_bind() {
        assert!(request_binds(&headers(&[(
            "authorization",
            "NTLM TlRMTVNTUAABAAAAB4IIog=="
        )])));
        assert!(request_binds(&headers(&[(
            "authorization",
            "negotiate YIIG"
        )])));
        assert!(request_binds(&headers(&[(
            "proxy-authorization",
            "NTLM abc"
        )])));
        assert!(!request_binds(&headers(&[("authorization", "Basic dTpw")])));
        assert!(!request_binds(&headers(&[(
            "authorization",
            "Bearer NTLM"
        )])));
        assert!(!request_binds(&headers(&[("x-note", "NTLM")])));
    }

    #[test]
    fn challenges_offering_connection_schemes_bind() {
        let unauthorized = StatusCode::UNAUTHORIZED;
        assert!(response_binds(
            unauthorized,
            &headers(&[
                ("www-authenticate", "Negotiate"),
                ("www-authenticate", "NTLM")
            ])
        ));
        assert!(response_binds(
            unauthorized,
            &headers(&[("www-authenticate", "Basic realm=\"x\", NTLM")])
        ));
        assert!(response_binds(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            &headers(&[("proxy-authenticate", "NTLM")])
        ));
        assert!(!response_binds(
            unauthorized,
            &headers(&[("www-authenticate", "Basic realm=\"NTLM\"")])
        ));
        assert!(!response_binds(
            StatusCode::OK,
            &headers(&[("www-authenticate", "NTLM")])
        ));
    }

    #[test]
    fn persistent_auth_binds_on_any_status() {
        assert!(response_binds(
            StatusCode::OK,
            &headers(&[("persistent-auth", "true")])
        ));
        assert!(response_binds(
            StatusCode::OK,
            &headers(&[("Persistent-Auth", " TRUE ")])
        ));
        assert!(!response_binds(
            StatusCode::OK,
            &headers(&[("persistent-auth", "false")])
        ));
    }
}
