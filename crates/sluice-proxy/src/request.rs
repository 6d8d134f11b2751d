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

/// A request ready for the server, its head again when it has no body (to re-send it if
/// a reused connection turns out to be dead), and its `Expect: 100-continue` gate.
pub type Prepared = (Request<UpstreamBody>, Option<Parts>, Option<GateHandle>);

/// Rewrites a client request for the server. `host` is the host the client asked for,
/// before any rule changed it (it goes in `X-Forwarded-Host`).
pub fn prepare(
    ctx: &ConnCtx,
    (mut parts, body): (Parts, Incoming),
    host: Option<String>,
    limits: &Limits,
    exchange: &Arc<Exchange>,
) -> Result<Prepared, ProxyError> {
    let service = ctx.service();
    remove_hop_by_hop(&mut parts.headers);
    if service.x_forwarded {
        add_forwarded(
            &mut parts.headers,
            ctx.client.ip(),
            ctx.tls,
            host.as_deref(),
        );
    }
    if !parts.headers.contains_key(HOST) {
        let host =
            host.ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
        let value = HeaderValue::from_str(&host)
            .map_err(|_| ProxyError::BadRequest("invalid host".into()))?;
        parts.headers.insert(HOST, value);
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = target
        .parse::<Uri>()
        .map_err(|e| ProxyError::BadRequest(format!("invalid target: {e}")))?;
    parts.version = Version::HTTP_11;
    let replay = body.is_end_stream().then(|| copy_head(&parts));
    let expects = !body.is_end_stream() && expect::expects_continue(&parts.headers);
    let idle = limits.client_idle.unwrap_or(service.timeouts.client_idle);
    let body = Metered::new(body, exchange.clone(), Direction::Upload, idle)
        .limit(limits.max_body)
        .boxed_unsync();
    if !expects {
        return Ok((Request::from_parts(parts, body), replay, None));
    }
    if service.expect == ExpectMode::Answer {
        // hyper sends the client its 100 when the body is first read, which is at once.
        parts.headers.remove(EXPECT);
        return Ok((Request::from_parts(parts, body), replay, None));
    }
    let (body, gate) = expect::gate(body, service.timeouts.expect_continue);
    let mut req = Request::from_parts(parts, body);
    let opener = gate.clone();
    hyper::ext::on_informational(&mut req, move |res| {
        if res.status() == StatusCode::CONTINUE {
            opener.proceed();
        }
    });
    Ok((req, replay, Some(gate)))
}

/// A copy of a request head (everything but the body).
fn copy_head(head: &Parts) -> Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.uri = head.uri.clone();
    parts.version = head.version;
    parts.headers = head.headers.clone();
    parts.extensions = head.extensions.clone();
    parts
}

/// The request again from its copied head, for a re-send.
pub fn bodiless(head: &Parts) -> Request<UpstreamBody> {
    let empty = http_body_util::Empty::new()
        .map_err(|e| match e {})
        .boxed_unsync();
    Request::from_parts(copy_head(head), empty)
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
