//! Header handling between client and server: hop-by-hop removal (RFC 9110 7.6.1) and
//! the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::HeaderMap;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The headers that belong to one connection only (RFC 9110 7.6.1), beside those that
/// `Connection` names; `Connection` first, in the order [`hop_by_hop`] numbers them. A
/// static: a constant would be built (and dropped) again at every use.
static HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// Removes the headers that belong to one connection only, including every header that
/// `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present (most messages carry none, or only
    // `Connection`), instead of a lookup per hop-by-hop name.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present[i] = true;
        }
    }
    if present[0] {
        for name in connection_options(headers) {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// The place of a hop-by-hop name in [`HOP_BY_HOP`]. Compared as text, which mostly
/// differs in length alone: cheaper than comparing `HeaderName`s.
fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "te" => 1,
        "transfer-encoding" => 2,
        "upgrade" => 3,
        "keep-alive" => 4,
        "proxy-connection" => 5,
        _ => return None,
    })
}

/// The headers that `Connection` names. The usual values, `keep-alive` and `close`, name
/// none and are not taken apart.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter(|v| !names_none(v.as_bytes()))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.eq_ignore_ascii_case(KEEP_ALIVE.as_str()))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

fn names_none(value: &[u8]) -> bool {
    value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close")
}

/// The client's address as `X-Forwarded-For` gives it (IPv4-mapped addresses as IPv4).
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// Appends the client to `X-Forwarded-For` and states the original scheme and host.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let value = match prior {
        Some(prior) => {
            let client = client.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prior}, {client}")).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(v) = host {
        headers.insert(X_FORWARDED_HOST, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn each_hop_by_hop_name_is_numbered_by_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop(&http::header::CONTENT_LENGTH), None);
        assert_eq!(hop_by_hop(&HeaderName::from_static("x-te")), None);
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        let host = HeaderValue::from_static("mail.example.com");
        let client = forwarded_for("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &client, true, Some(&host));
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "mail.example.com");
        let mut h = HeaderMap::new();
        let client = forwarded_for("::ffff:10.1.2.3".parse().unwrap());
        add_forwarded(&mut h, &client, false, None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
