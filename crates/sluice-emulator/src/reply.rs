//! Response builders, and the headers every Client Access server response carries.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, SERVER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use sluice_exchange::Version;

use crate::server::Shared;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", full(body))
}

pub fn html(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", full(body))
}

pub fn xml(body: impl Into<Bytes>) -> Response<Body> {
    with_type(StatusCode::OK, "text/xml; charset=utf-8", full(body))
}

/// A status with an empty body.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = self::status(status);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

pub fn header(response: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(name, value);
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// `X-FEServer`, a fresh `request-id` and IIS's `Server`, as on every CAS response.
pub fn stamp(shared: &Shared, response: &mut Response<Body>) {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    header(response, "x-feserver", &shared.name);
    header(
        response,
        "request-id",
        &format!("00000000-0000-4000-8000-{id:012x}"),
    );
    let iis = match shared.version {
        Version::V2010 => "Microsoft-IIS/7.5",
        Version::V2013 => "Microsoft-IIS/8.5",
        _ => "Microsoft-IIS/10.0",
    };
    response
        .headers_mut()
        .insert(SERVER, HeaderValue::from_static(iis));
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The decoded value of `key` in a query string or form body.
pub fn param(query: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(query)
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

/// Reads a request body whole, counting it, up to `limit` bytes (the rest is read and
/// counted but dropped).
pub async fn read_body(
    shared: &Shared,
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Vec<u8>, hyper::Error> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            shared.counters.body_bytes(data.len());
            let room = limit.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(kept)
}
