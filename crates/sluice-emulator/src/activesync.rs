//! Exchange ActiveSync (`/Microsoft-Server-ActiveSync`) with Basic authentication.
//!
//! `OPTIONS` answers the protocol discovery headers. `POST ?Cmd=Ping` is the Direct Push
//! long poll: the server holds it for the heartbeat the body asks for
//! (`<HeartbeatInterval>N</HeartbeatInterval>`, 480 s when absent; Exchange allows 60 to
//! 3,540 s) and answers Status 1 ("no changes"). Other commands answer at once.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::reply::{self, Body};
use crate::server::Shared;

const WBXML: &str = "application/vnd.ms-sync.wbxml";
const DEFAULT_HEARTBEAT: u64 = 480;
pub const HEARTBEAT_RANGE: std::ops::RangeInclusive<u64> = 60..=3540;

/// `<Ping><Status>N</Status></Ping>` in WBXML: header (1.3, UTF-8), code page 13 (Ping),
/// Ping and Status with content, an inline string, two ends. The tokens are recalled from
/// [MS-ASWBXML], not re-checked.
fn ping_status(status: u8) -> Vec<u8> {
    vec![
        0x03,
        0x01,
        0x6a,
        0x00,
        0x00,
        0x0d,
        0x45,
        0x47,
        0x03,
        b'0' + status,
        0x00,
        0x01,
        0x01,
    ]
}

/// The Ping status a WBXML answer carries.
pub fn status_of(body: &[u8]) -> Option<u8> {
    let at = body.windows(2).position(|w| w == [0x47, 0x03])?;
    body.get(at + 2).map(|b| b.wrapping_sub(b'0'))
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::OPTIONS {
        return options();
    }
    let basic = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    if !basic {
        let mut response = reply::status(StatusCode::UNAUTHORIZED);
        let realm = format!("Basic realm=\"{}\"", shared.fqdn);
        reply::header(&mut response, "www-authenticate", &realm);
        return response;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let Ok(body) = reply::read_body(shared, req.into_body(), 64 * 1024).await else {
        return reply::status(StatusCode::BAD_REQUEST);
    };
    let command = reply::param(query.as_bytes(), "Cmd").unwrap_or_default();
    if !command.eq_ignore_ascii_case("ping") {
        return reply::with_type(StatusCode::OK, WBXML, reply::full(Vec::new()));
    }
    let heartbeat = heartbeat(&body).unwrap_or(DEFAULT_HEARTBEAT);
    if !HEARTBEAT_RANGE.contains(&heartbeat) {
        return reply::with_type(StatusCode::OK, WBXML, reply::full(ping_status(5)));
    }
    tokio::time::sleep(shared.timings.heartbeat_second * heartbeat as u32).await;
    reply::with_type(StatusCode::OK, WBXML, reply::full(ping_status(1)))
}

fn heartbeat(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<HeartbeatInterval>")? + "<HeartbeatInterval>".len();
    let len = text[start..].find('<')?;
    text[start..start + len].trim().parse().ok()
}

/// A Ping request body asking for `seconds` of heartbeat on the inbox.
pub fn ping_request(seconds: u64) -> String {
    format!(
        "<Ping xmlns=\"Ping:\"><HeartbeatInterval>{seconds}</HeartbeatInterval>\
         <Folders><Folder><Id>5</Id><Class>Email</Class></Folder></Folders></Ping>"
    )
}

fn options() -> Response<Body> {
    let mut response = reply::status(StatusCode::OK);
    for (name, value) in [
        ("cache-control", "private"),
        ("allow", "OPTIONS,POST"),
        ("public", "OPTIONS,POST"),
        ("ms-server-activesync", "15.1"),
        ("ms-asprotocolversions", "2.5,12.0,12.1,14.0,14.1,16.0,16.1"),
        (
            "ms-asprotocolcommands",
            "Sync,SendMail,SmartForward,SmartReply,GetAttachment,FolderSync,FolderCreate,\
             FolderDelete,FolderUpdate,MoveItems,GetItemEstimate,MeetingResponse,Search,\
             Settings,Ping,ItemOperations,Provision,ResolveRecipients,ValidateCert,Find",
        ),
    ] {
        reply::header(&mut response, name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_read_from_the_request() {
        assert_eq!(heartbeat(ping_request(480).as_bytes()), Some(480));
        assert_eq!(heartbeat(b""), None);
        assert_eq!(status_of(&ping_status(1)), Some(1));
        assert_eq!(status_of(&ping_status(5)), Some(5));
    }
}
