//! The routes: what each path does, and the one place errors become statuses.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/` | the dashboard |
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/api/v1/status` | services, routes, pools, servers, health, counters |
//! | POST | `/api/v1/pools/{pool}/servers/{server}/state` | `{"state": "ready" \| "drain" \| "maint", "timeout": "10m"}` |
//! | POST | `/api/v1/servers/{server}/state` | the same, in every pool holding that server |
//! | POST | `/api/v1/pools/{pool}/servers/{server}/weight` | `{"weight": 0..256}` |
//! | POST | `/api/v1/reload` | read the configuration file again |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use sluice_proxy::{Control, ControlError, Mode};

use crate::auth;

/// The dashboard: one self-contained page that reads `/api/v1/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Request bodies are a few fields of JSON.
const MAX_BODY: usize = 64 * 1024;

type Answer = Response<Full<Bytes>>;

/// What went wrong with an admin request, mapped to a status in `respond`.
enum Failure {
    Refused(auth::Refusal),
    NotFound,
    MethodNotAllowed,
    BadRequest(String),
    Control(ControlError),
}

pub async fn handle(
    control: Arc<Control>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let answer = match route(&control, peer, req).await {
        Ok(answer) => answer,
        Err(failure) => {
            log_failure(&failure, &method, &path, peer);
            respond(failure)
        }
    };
    Ok(answer)
}

async fn route(
    control: &Control,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Answer, Failure> {
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let change = match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""] | ["metrics"] | ["api", "v1", "status"]) => false,
        (&Method::POST, ["api", "v1", ..]) => true,
        (_, [""] | ["metrics"] | ["api", "v1", "status"]) => return Err(Failure::MethodNotAllowed),
        _ => return Err(Failure::NotFound),
    };
    let token = control.admin_token();
    auth::check(req.headers(), peer, change, token.as_deref()).map_err(Failure::Refused)?;
    match segments.as_slice() {
        [""] => Ok(text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            DASHBOARD.into(),
        )),
        ["metrics"] => Ok(text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            control.metrics(),
        )),
        ["api", "v1", "status"] => Ok(ok_json(&control.status())),
        ["api", "v1", "reload"] => {
            let changes = control.reload().map_err(Failure::Control)?;
            Ok(ok_json(&json!({ "ok": true, "changes": changes })))
        }
        ["api", "v1", "pools", pool, "servers", server, "state"] => {
            let wanted: StateChange = body_json(req).await?;
            set_state(control, Some(pool), server, wanted)
        }
        ["api", "v1", "servers", server, "state"] => {
            let wanted: StateChange = body_json(req).await?;
            set_state(control, None, server, wanted)
        }
        ["api", "v1", "pools", pool, "servers", server, "weight"] => {
            let wanted: WeightChange = body_json(req).await?;
            let servers = control
                .set_weight(pool, server, wanted.weight)
                .map_err(Failure::Control)?;
            Ok(ok_json(&servers))
        }
        _ => Err(Failure::NotFound),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: String,
    /// Overrides the pool's `drain_timeout`, e.g. `"10m"`.
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightChange {
    weight: u32,
}

fn set_state(
    control: &Control,
    pool: Option<&str>,
    server: &str,
    wanted: StateChange,
) -> Result<Answer, Failure> {
    let mode = Mode::parse(&wanted.state).ok_or_else(|| {
        Failure::BadRequest(format!(
            "unknown state \"{}\": use ready, drain or maint",
            wanted.state
        ))
    })?;
    let timeout = wanted.timeout.as_deref().map(parse_duration).transpose()?;
    let servers = control
        .set_mode(pool, server, mode, timeout)
        .map_err(Failure::Control)?;
    Ok(ok_json(&servers))
}

fn parse_duration(s: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(s).map_err(|e| Failure::BadRequest(format!("timeout \"{s}\": {e}")))
}

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Failure> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Failure::BadRequest(format!("cannot read the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| Failure::BadRequest(format!("invalid JSON: {e}")))
}

fn log_failure(failure: &Failure, method: &Method, path: &str, peer: SocketAddr) {
    match failure {
        Failure::Refused(why) => {
            tracing::warn!(%peer, "admin: refused {method} {path}: {}", why.message())
        }
        Failure::Control(e) => tracing::warn!(%peer, "admin: {method} {path}: {e}"),
        Failure::BadRequest(why) => tracing::info!(%peer, "admin: {method} {path}: {why}"),
        Failure::NotFound | Failure::MethodNotAllowed => {
            tracing::debug!(%peer, "admin: {method} {path}: no such endpoint")
        }
    }
}

/// The one place a failure becomes a status.
fn respond(failure: Failure) -> Answer {
    let (status, message) = match failure {
        Failure::Refused(why) => (StatusCode::UNAUTHORIZED, why.message().to_string()),
        Failure::NotFound => (StatusCode::NOT_FOUND, "no such endpoint".to_string()),
        Failure::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        ),
        Failure::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
        Failure::Control(e) => {
            let status = match &e {
                ControlError::NoSuchServer { .. } => StatusCode::NOT_FOUND,
                ControlError::BadWeight(_) => StatusCode::BAD_REQUEST,
                ControlError::NoFile => StatusCode::CONFLICT,
                ControlError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let body = match &e {
                ControlError::Rejected(errors) => json!({ "ok": false, "errors": errors }),
                other => json!({ "error": other.to_string() }),
            };
            return json_answer(status, &body);
        }
    };
    let mut answer = json_answer(status, &json!({ "error": message }));
    if status == StatusCode::UNAUTHORIZED {
        answer
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    answer
}

fn ok_json<T: serde::Serialize>(value: &T) -> Answer {
    json_answer(StatusCode::OK, value)
}

fn json_answer<T: serde::Serialize>(status: StatusCode, value: &T) -> Answer {
    let body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text(status, "application/json", body + "\n")
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}
