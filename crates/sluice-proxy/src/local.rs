//! Responses sluice makes itself: errors (mapped to a status in one place, the error
//! taxonomy's `status`), the sorry page, and the answers of redirect and deny rules.

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use crate::access_log::Record;
use crate::body::{Exchange, ProxyBody};
use crate::conn_io::RequestPhase;
use crate::error::ProxyError;
use crate::forward::ConnCtx;
use crate::rules::Answer;

const TEXT: &str = "text/plain; charset=utf-8";

/// The one place where an error becomes a response.
pub fn error_response(
    ctx: &ConnCtx,
    err: &ProxyError,
    mut record: Record,
    exchange: &Exchange,
    phase: RequestPhase,
) -> Response<ProxyBody> {
    let service = ctx.service();
    let (status, content_type, body) = match err {
        ProxyError::NoServer(_) => {
            let sorry = &service.sorry;
            let status =
                StatusCode::from_u16(sorry.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, sorry.content_type.as_str(), sorry.body.clone())
        }
        _ => {
            let status = err.status();
            let reason = status.canonical_reason().unwrap_or("Error");
            (status, TEXT, format!("{} {reason}\n", status.as_u16()))
        }
    };
    if status.is_server_error() {
        tracing::warn!(service = %service.name, "{err}");
    }
    record.end = err.end_state();
    // A pinned server connection that went with this error takes the client connection,
    // whose authentication lived in it, along.
    let close = record.pinned || err.closes_connection();
    let mut response = respond(ctx, status, content_type, body, record, exchange, phase);
    if close {
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A redirect or deny rule's answer.
pub fn rule_response(
    ctx: &ConnCtx,
    answer: Answer,
    mut record: Record,
    exchange: &Exchange,
    phase: RequestPhase,
) -> Response<ProxyBody> {
    let (status, body, location) = match answer {
        Answer::Redirect { status, location } => {
            record.end = "redirect";
            (status, String::new(), Some(location))
        }
        Answer::Deny { status, body } => {
            record.end = "denied";
            (status, body, None)
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = respond(ctx, status, TEXT, body, record, exchange, phase);
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

fn respond(
    ctx: &ConnCtx,
    status: StatusCode,
    content_type: &str,
    body: String,
    mut record: Record,
    exchange: &Exchange,
    phase: RequestPhase,
) -> Response<ProxyBody> {
    record.status = status.as_u16();
    record.t_total = Some(exchange.start.elapsed());
    ctx.log.write(&record);
    let mut response = Response::new(ProxyBody::local(body, phase));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
