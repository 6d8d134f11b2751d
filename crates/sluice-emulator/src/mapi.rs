//! MAPI over HTTP (`POST /mapi/emsmdb/`, `/mapi/nspi/`) behind connection-bound
//! authentication.
//!
//! `X-RequestType: Connect` is answered at once with a `Content-Length` and the session
//! cookies. Every other request type gets the chunked form: `PROCESSING` at once, a
//! `PENDING` chunk every pending period while the server works, then `DONE` with the
//! response metadata and body. `NotificationWait` (the long poll) is held for the wait
//! period; the others finish at once.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_lab::bodies::ChannelBody;
use tokio::sync::mpsc;

use crate::reply::{self, Body};
use crate::server::{Shared, Timings};

const CONTENT_TYPE: &str = "application/mapi-http";
const MAX_BODY: usize = 1024 * 1024;

pub(crate) async fn handle(shared: &Shared, user: &str, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return reply::text(StatusCode::OK, "MAPI over HTTP\n");
    }
    let echo = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (kind, request_id, client_info) = (
        echo("x-requesttype"),
        echo("x-requestid"),
        echo("x-clientinfo"),
    );
    if reply::read_body(shared, req.into_body(), MAX_BODY)
        .await
        .is_err()
    {
        return reply::status(StatusCode::BAD_REQUEST);
    }
    let mut response = if kind.eq_ignore_ascii_case("connect") {
        connected(user)
    } else {
        let hold = match kind.to_ascii_lowercase().as_str() {
            "notificationwait" => shared.timings.mapi_wait,
            _ => std::time::Duration::ZERO,
        };
        reply::with_type(StatusCode::OK, CONTENT_TYPE, pending(shared.timings, hold))
    };
    for (name, value) in [
        ("x-requesttype", kind.as_str()),
        ("x-requestid", request_id.as_str()),
        ("x-clientinfo", client_info.as_str()),
        ("x-responsecode", "0"),
        ("x-serverapplication", "Exchange/15.01.2507.000"),
        (
            "x-pendingperiod",
            &shared.timings.mapi_pending.as_millis().to_string(),
        ),
    ] {
        reply::header(&mut response, name, value);
    }
    response
}

/// The answer to `Connect`: not chunked, with the session in cookies.
fn connected(user: &str) -> Response<Body> {
    let body = format!("PROCESSING\r\nDONE\r\nX-ResponseCode: 0\r\nX-ElapsedTime: 1\r\n\r\nconnected as {user}\r\n");
    let mut response = reply::with_type(StatusCode::OK, CONTENT_TYPE, reply::full(body));
    reply::header(
        &mut response,
        "set-cookie",
        "MapiContext=1; path=/mapi/; secure; HttpOnly",
    );
    reply::header(
        &mut response,
        "set-cookie",
        "MapiSequence=1; path=/mapi/; secure; HttpOnly",
    );
    response
}

/// `PROCESSING`, `PENDING` every pending period for `hold`, then `DONE`: one chunk each.
fn pending(timings: Timings, hold: std::time::Duration) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let started = Instant::now();
        if tx
            .send(Bytes::from_static(b"PROCESSING\r\n"))
            .await
            .is_err()
        {
            return;
        }
        while started.elapsed() + timings.mapi_pending <= hold {
            tokio::time::sleep(timings.mapi_pending).await;
            if tx.send(Bytes::from_static(b"PENDING\r\n")).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
        let done = format!(
            "DONE\r\nX-ResponseCode: 0\r\nX-ElapsedTime: {}\r\n\r\n",
            started.elapsed().as_millis()
        );
        // StatusCode, ErrorCode, EventPending, AuxiliaryBufferSize: all zero.
        let mut last = done.into_bytes();
        last.extend_from_slice(&[0; 16]);
        let _ = tx.send(Bytes::from(last)).await;
    });
    ChannelBody(rx).boxed_unsync()
}

/// The lines of a MAPI response body that name its progress (`PROCESSING`, `PENDING`,
/// `DONE`), in order.
pub fn progress(body: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(body);
    text.split("\r\n")
        .filter_map(|line| {
            ["PROCESSING", "PENDING", "DONE"]
                .into_iter()
                .find(|word| *word == line)
        })
        .collect()
}
