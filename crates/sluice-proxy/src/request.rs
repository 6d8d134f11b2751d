//! The request as the server gets it: hop-by-hop headers out, forwarding headers in,
//! origin-form target, HTTP/1.1, the body metered and, for `Expect: 100-continue`, gated.

use std::sync::Arc;

use http::header::{EXPECT, HOST};
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_config::{ExpectMode, Limits};

use crate::body::{Direction, Exchange, Metered};
use crate::error::ProxyError;
use crate::expect::{self, GateHandle};
use crate::forward::ConnCtx;
use crate::headers::{add_forwarded, remove_hop_by_hop};
use crate::upstream::UpstreamBody;

/// A request ready for the server and its `Expect: 100-continue` gate.
pub type Prepared = (Request<UpstreamBody>, Option<GateHandle>);

/// Rewrites a client request for the server. `host` is the host the client asked for,
/// before any rule changed it (it goes in `X-Forwarded-Host`).
pub fn prepare(
    ctx: &ConnCtx,
    (mut parts, body): (Parts, Incoming),
    host: Option<HeaderValue>,
    limits: &Limits,
    exchange: &Arc<Exchange>,
) -> Result<Prepared, ProxyError> {
    let service = ctx.service();
    remove_hop_by_hop(&mut parts.headers);
    if service.x_forwarded {
        add_forwarded(
            &mut parts.headers,
            ctx.forwarded_for(),
            ctx.tls,
            host.as_ref(),
        );
    }
    if !parts.headers.contains_key(HOST) {
        let host =
            host.ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
        parts.headers.insert(HOST, host);
    }
    if parts.uri.authority().is_some() {
        // Absolute form (or HTTP/2's): the server gets the origin form.
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = target
            .parse::<Uri>()
            .map_err(|e| ProxyError::BadRequest(format!("invalid target: {e}")))?;
    }
    parts.version = Version::HTTP_11;
    if body.is_end_stream() {
        // Nothing to count or time: no body to relay (and no box to allocate).
        return Ok((Request::from_parts(parts, no_body()), None));
    }
    let expects = expect::expects_continue(&parts.headers);
    let idle = limits.client_idle.unwrap_or(service.timeouts.client_idle);
    let body = Metered::new(body, exchange.clone(), Direction::Upload, idle)
        .limit(limits.max_body)
        .boxed_unsync();
    if !expects {
        return Ok((Request::from_parts(parts, body), None));
    }
    if service.expect == ExpectMode::Answer {
        // hyper sends the client its 100 when the body is first read, which is at once.
        parts.headers.remove(EXPECT);
        return Ok((Request::from_parts(parts, body), None));
    }
    let (body, gate) = expect::gate(body, service.timeouts.expect_continue);
    let mut req = Request::from_parts(parts, body);
    let opener = gate.clone();
    hyper::ext::on_informational(&mut req, move |res| {
        if res.status() == StatusCode::CONTINUE {
            opener.proceed();
        }
    });
    Ok((req, Some(gate)))
}

/// A bodiless request's head, kept to send it again; `None` for a request with a body,
/// which cannot be.
pub fn replayable<B: http_body::Body>(req: &Request<B>) -> Option<Request<()>> {
    req.body().is_end_stream().then(|| with_head(req, ()))
}

/// The request again from its kept head, for a re-send.
pub fn bodiless(head: &Request<()>) -> Request<UpstreamBody> {
    with_head(head, no_body())
}

/// An empty body; boxing it allocates nothing.
pub(crate) fn no_body() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// `from`'s head (everything but the body) with `body`.
fn with_head<B, C>(from: &Request<B>, body: C) -> Request<C> {
    let mut req = Request::new(body);
    *req.method_mut() = from.method().clone();
    *req.uri_mut() = from.uri().clone();
    *req.version_mut() = from.version();
    *req.headers_mut() = from.headers().clone();
    *req.extensions_mut() = from.extensions().clone();
    req
}

/// A declared body larger than the limit is refused before anything is sent.
pub fn check_declared_length(parts: &Parts, limits: &Limits) -> Result<(), ProxyError> {
    let Some(max) = limits.max_body else {
        return Ok(());
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(ProxyError::BodyTooLarge(max)),
        _ => Ok(()),
    }
}
