//! One error taxonomy for the data plane, mapped to a status code in exactly one place.

use std::time::Duration;

use http::StatusCode;
use sluice_config::Name;

/// Why a request could not be proxied, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Client: nothing in the service matches and there is no default pool.
    #[error("no route matches and the service has no default pool")]
    NoRoute,
    /// Capacity: every server of the pool is down, drained, full or weight 0.
    #[error("no server available in pool {0}")]
    NoServer(Name),
    /// Capacity: the server a persisted client belongs to is down and the pool says
    /// `on_server_down = "fail"`.
    #[error("server {0}, which holds this client's session, is unavailable")]
    SessionServerDown(Name),
    /// Server: a connection could not be made (after any retries).
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: Name, reason: String },
    /// Server: connected, but it did not answer in time.
    #[error("server {server} sent no response within {}s", .after.as_secs())]
    ServerTimeout { server: Name, after: Duration },
    /// Server: the exchange failed after the request was handed over.
    #[error("server {server} failed: {reason}")]
    ServerFailed { server: Name, reason: String },
    /// Server: its response could be read more than one way; it is not passed on and the
    /// connection is closed.
    #[error("server {server} sent an ambiguous response: {reason}")]
    BadResponse { server: Name, reason: &'static str },
    /// Server: the connection pinned to this client (NTLM/Negotiate) is gone; the request
    /// is not re-sent elsewhere, and the client connection is closed.
    #[error("pinned connection to {server} lost: {reason}")]
    PinnedLost { server: Name, reason: String },
    /// Client: connection-bound authentication over HTTP/2, which cannot be pinned; the
    /// stream is reset with HTTP_1_1_REQUIRED so the client retries over HTTP/1.1.
    #[error("NTLM/Negotiate over HTTP/2: HTTP/1.1 required")]
    Http11Required,
    /// Client: the request body is larger than the route allows.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// Client: the request cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Client: the request target is longer than the service allows.
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// Client: more header fields than the service allows (HTTP/2; hyper answers HTTP/1).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Client: the request uses a transfer coding sluice does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// Client: the request body stopped for longer than the idle limit.
    #[error("the client sent no body data for {}s", .0.as_secs())]
    ClientTimeout(Duration),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer(_) | ProxyError::SessionServerDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. }
            | ProxyError::ServerFailed { .. }
            | ProxyError::BadResponse { .. }
            | ProxyError::PinnedLost { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Http11Required => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ServerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::TooManyHeaders(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The `end=` word of the access log line.
    pub fn end_state(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoServer(_) => "no_server",
            ProxyError::SessionServerDown(_) => "session_server_down",
            ProxyError::Connect { .. } => "connect_failed",
            ProxyError::ServerTimeout { .. } => "server_timeout",
            ProxyError::ServerFailed { .. } => "server_failed",
            ProxyError::BadResponse { .. } => "bad_response",
            ProxyError::PinnedLost { .. } => "pinned_lost",
            ProxyError::Http11Required => "http11_required",
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NotImplemented(_) => "not_implemented",
            ProxyError::UriTooLong(_) => "uri_too_long",
            ProxyError::TooManyHeaders(_) => "headers_too_large",
            ProxyError::ClientTimeout(_) => "client_timeout",
        }
    }

    /// The client connection cannot carry another request after this error: the rest of
    /// the request (or where it ends) is unknown.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::NotImplemented(_)
                | ProxyError::UriTooLong(_)
                | ProxyError::TooManyHeaders(_)
                | ProxyError::ClientTimeout(_)
                | ProxyError::BodyTooLarge(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_status() {
        let s = |e: ProxyError| e.status().as_u16();
        assert_eq!(s(ProxyError::NoRoute), 404);
        assert_eq!(s(ProxyError::NoServer("p".into())), 503);
        let server: Name = "cas1".into();
        let reason = "refused".to_string();
        assert_eq!(
            s(ProxyError::Connect {
                server: server.clone(),
                reason: reason.clone()
            }),
            502
        );
        assert_eq!(
            s(ProxyError::ServerFailed {
                server: server.clone(),
                reason
            }),
            502
        );
        assert_eq!(
            s(ProxyError::ServerTimeout {
                server,
                after: Duration::from_secs(1)
            }),
            504
        );
        assert_eq!(s(ProxyError::BadRequest("x".into())), 400);
        assert_eq!(s(ProxyError::NotImplemented("gzip".into())), 501);
        assert_eq!(s(ProxyError::ClientTimeout(Duration::from_secs(1))), 408);
    }
}
