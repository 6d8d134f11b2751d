//! Outlook Anywhere ([MS-RPCH]): `RPC_IN_DATA` and `RPC_OUT_DATA` on `/rpc/rpcproxy.dll`
//! behind connection-bound authentication.
//!
//! - A request declaring at most 16 bytes is an echo: `200 Success` with the 20-byte echo
//!   PDU.
//! - `RPC_OUT_DATA` (the 76-byte CONN/A1): `200 Success` declaring 1 GiB, then CONN/A3 and
//!   CONN/C2, then a ping PDU every ping period for as long as the client keeps reading.
//! - `RPC_IN_DATA` (1 GiB declared): the body is read and counted for as long as the
//!   client sends; the answer comes when it ends.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use sluice_lab::bodies::ChannelBody;
use tokio::sync::mpsc;

use crate::reply::{self, Body};
use crate::server::Shared;

/// What Outlook declares for a channel.
pub const CHANNEL_LENGTH: u64 = 1 << 30;

const RTS_FLAG_PING: u16 = 0x1;
const RTS_FLAG_ECHO: u16 = 0x40;

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    if !req
        .uri()
        .path()
        .to_ascii_lowercase()
        .ends_with("/rpcproxy.dll")
        || !matches!(method.as_str(), "RPC_IN_DATA" | "RPC_OUT_DATA")
    {
        let mut response = reply::text(StatusCode::OK, "RPC proxy\n");
        if req.method() != Method::GET {
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        }
        return response;
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let body = req.into_body();
    if declared <= 16 {
        let _ = reply::read_body(shared, body, 16).await;
        success(reply::full(rts(RTS_FLAG_ECHO, &[])), 20)
    } else if method == "RPC_OUT_DATA" {
        let _ = reply::read_body(shared, body, 1024).await;
        success(out_channel(shared.timings.rpc_ping), CHANNEL_LENGTH)
    } else {
        let _ = reply::read_body(shared, body, 0).await;
        success(reply::full(Bytes::new()), 0)
    }
}

fn success(body: Body, length: u64) -> Response<Body> {
    let mut response = reply::with_type(StatusCode::OK, "application/rpc", body);
    response
        .extensions_mut()
        .insert(ReasonPhrase::from_static(b"Success"));
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// CONN/A3 and CONN/C2, then pings until the client goes away.
fn out_channel(every: std::time::Duration) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let timeout = (2u32, 900_000u32.to_le_bytes().to_vec());
        let a3 = rts(0, std::slice::from_ref(&timeout));
        let c2 = rts(
            0,
            &[
                (6, 1u32.to_le_bytes().to_vec()),
                (0, 65_536u32.to_le_bytes().to_vec()),
                timeout,
            ],
        );
        for pdu in [a3, c2] {
            if tx.send(Bytes::from(pdu)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::time::sleep(every).await;
            if tx.send(Bytes::from(ping())).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed_unsync()
}

/// An RTS PDU: the 16-byte DCE/RPC common header (version 5.0, type 20, first and last
/// fragment, little-endian), flags, and `(command type, value)` pairs.
pub fn rts(flags: u16, commands: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let body_len: usize = commands.iter().map(|(_, v)| 4 + v.len()).sum();
    let frag_len = (20 + body_len) as u16;
    let mut pdu = vec![5, 0, 20, 3, 0x10, 0, 0, 0];
    pdu.extend_from_slice(&frag_len.to_le_bytes());
    pdu.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    pdu.extend_from_slice(&flags.to_le_bytes());
    pdu.extend_from_slice(&(commands.len() as u16).to_le_bytes());
    for (kind, value) in commands {
        pdu.extend_from_slice(&kind.to_le_bytes());
        pdu.extend_from_slice(value);
    }
    pdu
}

/// A keep-alive ping PDU (20 bytes).
pub fn ping() -> Vec<u8> {
    rts(RTS_FLAG_PING, &[])
}

/// The client's CONN/A1, which opens an OUT channel (76 bytes).
pub fn conn_a1(cookie: [u8; 16]) -> Vec<u8> {
    rts(
        0,
        &[
            (6, 1u32.to_le_bytes().to_vec()),
            (3, cookie.to_vec()),
            (3, cookie.map(|b| b ^ 0x5a).to_vec()),
            (0, 65_536u32.to_le_bytes().to_vec()),
        ],
    )
}

/// The client's CONN/B1, which opens an IN channel (104 bytes).
pub fn conn_b1(cookie: [u8; 16]) -> Vec<u8> {
    rts(
        0,
        &[
            (6, 1u32.to_le_bytes().to_vec()),
            (3, cookie.to_vec()),
            (3, cookie.map(|b| b ^ 0xa5).to_vec()),
            (4, (CHANNEL_LENGTH as u32).to_le_bytes().to_vec()),
            (5, 300_000u32.to_le_bytes().to_vec()),
            (0xC, cookie.map(|b| b ^ 0x3c).to_vec()),
        ],
    )
}

/// Whether `bytes` starts with an RTS PDU header.
pub fn is_rts(bytes: &[u8]) -> bool {
    bytes.starts_with(&[5, 0, 20, 3, 0x10, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdus_have_their_specified_lengths_and_first_bytes() {
        let cookie = [7; 16];
        assert_eq!(conn_a1(cookie).len(), 76);
        assert_eq!(conn_b1(cookie).len(), 104);
        assert_eq!(ping().len(), 20);
        assert_eq!(
            &conn_a1(cookie)[..20],
            &[5, 0, 0x14, 3, 0x10, 0, 0, 0, 0x4c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0]
        );
        assert_eq!(&conn_b1(cookie)[8..10], &[0x68, 0]);
        assert_eq!(&conn_b1(cookie)[18..20], &[6, 0]);
        assert!(is_rts(&ping()));
    }
}
