//! Request smuggling stops here. A request whose body length or target two HTTP parsers
//! could read differently is refused before anything is sent on; the variants RFC 9112
//! allows are normalised, so the server reads exactly the message sluice read.
//!
//! hyper has already refused what does not parse at all (obs-fold, whitespace before a
//! colon, bare CR, NUL and other control characters, malformed chunk sizes); what is
//! checked here parses but is ambiguous. docs/security.md lists every decision.

use http::header::{HeaderName, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::uri::{Authority, Uri};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use sluice_config::HeadLimits;

use crate::error::ProxyError;

/// Refuses an ambiguous or oversized request, or makes it unambiguous.
pub fn check(parts: &mut Parts, limits: &HeadLimits) -> Result<(), ProxyError> {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.max_uri {
        return Err(ProxyError::UriTooLong(limits.max_uri));
    }
    if parts.headers.len() > limits.max_headers {
        return Err(ProxyError::TooManyHeaders(limits.max_headers));
    }
    check_transfer_encoding(&parts.headers, parts.version)?;
    normalise_content_length(&mut parts.headers)?;
    check_host(&parts.headers, &parts.uri, parts.version)
}

fn bad(why: &str) -> ProxyError {
    ProxyError::BadRequest(why.to_string())
}

/// `Transfer-Encoding` must be exactly `chunked`, once, on HTTP/1.1 only, without
/// `Content-Length` (RFC 9112 6.1 and 6.3).
fn check_transfer_encoding(headers: &HeaderMap, version: Version) -> Result<(), ProxyError> {
    let codings = list_items(headers, TRANSFER_ENCODING)
        .ok_or_else(|| bad("Transfer-Encoding is not text"))?;
    let Some((last, before)) = codings.split_last() else {
        return Ok(());
    };
    if version != Version::HTTP_11 {
        // HTTP/1.0 has no chunks and HTTP/2 its own frames (h2 already refuses it there).
        return Err(bad("Transfer-Encoding outside HTTP/1.1"));
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
    if !chunked(last) || before.iter().any(chunked) {
        return Err(bad("Transfer-Encoding does not end in one chunked"));
    }
    if let Some(other) = before.first() {
        if !is_token(other) {
            return Err(bad("malformed Transfer-Encoding"));
        }
        return Err(ProxyError::NotImplemented(format!(
            "transfer coding {other:?}"
        )));
    }
    Ok(())
}

/// Every `Content-Length` value must be the same run of digits; several equal ones become
/// one header (RFC 9112 6.3).
fn normalise_content_length(headers: &mut HeaderMap) -> Result<(), ProxyError> {
    let values =
        list_items(headers, CONTENT_LENGTH).ok_or_else(|| bad("Content-Length is not text"))?;
    let Some(first) = values.first() else {
        return Ok(());
    };
    let digits =
        !first.is_empty() && first.len() <= 19 && first.bytes().all(|b| b.is_ascii_digit());
    if !digits || values.iter().any(|v| v != first) {
        return Err(bad("invalid or conflicting Content-Length"));
    }
    if values.len() > 1 {
        let one = HeaderValue::from_str(first).expect("digits are a value");
        headers.insert(CONTENT_LENGTH, one);
    }
    Ok(())
}

/// HTTP/1.1 needs exactly one valid `Host`; HTTP/1.0 at most one. A target in absolute form
/// (or HTTP/2's `:authority`) must name the same host and port as `Host` (RFC 9112 3.2,
/// RFC 9113 8.3.1).
fn check_host(headers: &HeaderMap, uri: &Uri, version: Version) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host"));
    }
    let host = match host {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|h| is_authority(h))
                .ok_or_else(|| bad("malformed Host"))?,
        ),
        None if version == Version::HTTP_11 => return Err(bad("no Host")),
        None => None,
    };
    let (Some(host), Some(target)) = (host, uri.authority()) else {
        return Ok(());
    };
    let host = parse_authority(host).ok_or_else(|| bad("malformed Host"))?;
    let target = parse_authority(target.as_str()).ok_or_else(|| bad("malformed target"))?;
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let same = host.host().eq_ignore_ascii_case(target.host())
        && host.port_u16().unwrap_or(default_port) == target.port_u16().unwrap_or(default_port);
    if !same {
        return Err(bad("the target and Host name different hosts"));
    }
    Ok(())
}

/// A server response whose length could be read two ways, or that answers what was never
/// asked, is not passed on (the caller answers 502 and drops the server connection).
/// hyper has already failed what does not parse (a malformed status line, differing
/// `Content-Length` values, obs-fold) and swallowed interim 1xx answers.
pub fn check_response(status: StatusCode, headers: &HeaderMap) -> Result<(), &'static str> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // sluice never forwards `Upgrade`, so no server may switch.
        return Err("101 Switching Protocols, which no request asked for");
    }
    if status.as_u16() >= 600 {
        return Err("a status code beyond 599");
    }
    if !headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    match list_items(headers, TRANSFER_ENCODING).as_deref() {
        Some([only]) if only.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err("a Transfer-Encoding other than chunked"),
    }
}

/// The items of a comma-separated header over all its lines, without the spaces and tabs
/// around them (RFC 9110 5.6.1); `None` if a line is not text.
fn list_items(headers: &HeaderMap, name: HeaderName) -> Option<Vec<&str>> {
    let mut items = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        items.extend(text.split(',').map(|item| item.trim_matches([' ', '\t'])));
    }
    Some(items)
}

/// `host [":" port]` with no user info, a non-empty host and a port that is a number
/// up to 65535.
pub fn parse_authority(text: &str) -> Option<Authority> {
    if text.is_empty() || text.contains('@') {
        return None;
    }
    let authority: Authority = text.parse().ok()?;
    let host_len = authority.host().len();
    if host_len == 0 {
        return None;
    }
    // Without user info the host starts the authority; what follows it is `:port` or
    // nothing.
    match authority.as_str()[host_len..].strip_prefix(':') {
        Some(port) if !is_port(port) => None,
        _ => Some(authority),
    }
}

/// Whether `text` is what [`parse_authority`] accepts. The common form, a name or IPv4
/// address and perhaps a port, is recognised without building an `Authority` (which
/// copies it).
fn is_authority(text: &str) -> bool {
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(is_port);
    plain || parse_authority(text).is_some()
}

/// 1 to 5 digits, at most 65535.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

/// RFC 9110 5.6.2 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().version(version).uri(target);
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        req.body(()).unwrap().into_parts().0
    }

    fn verdict(version: Version, target: &str, headers: &[(&str, &str)]) -> Option<u16> {
        check(&mut parts(version, target, headers), &HeadLimits::default())
            .err()
            .map(|e| e.status().as_u16())
    }

    const H11: Version = Version::HTTP_11;

    #[test]
    fn transfer_encoding_must_be_one_final_chunked_without_content_length() {
        let te = |v: &str| verdict(H11, "/", &[("host", "a"), ("transfer-encoding", v)]);
        assert_eq!(te("chunked"), None);
        assert_eq!(te(" ChunKed\t"), None);
        assert_eq!(te("chunked, gzip"), Some(400));
        assert_eq!(te("chunked, chunked"), Some(400));
        assert_eq!(te("gzip, chunked"), Some(501));
        assert_eq!(te("\"gzip\", chunked"), Some(400));
        assert_eq!(te("xchunked"), Some(400));
        assert_eq!(te(""), Some(400));
        assert_eq!(
            verdict(
                H11,
                "/",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "0")
                ]
            ),
            Some(400)
        );
        assert_eq!(
            verdict(
                Version::HTTP_10,
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked")]
            ),
            Some(400)
        );
    }

    #[test]
    fn content_length_values_must_agree_and_several_become_one() {
        let cl = |vs: &[&str]| {
            let mut headers = vec![("host", "a")];
            headers.extend(vs.iter().map(|v| ("content-length", *v)));
            let mut p = parts(H11, "/", &headers);
            check(&mut p, &HeadLimits::default()).map(|()| {
                let all: Vec<_> = p.headers.get_all(CONTENT_LENGTH).iter().cloned().collect();
                all
            })
        };
        assert_eq!(cl(&["5", "5"]).unwrap(), ["5"]);
        assert_eq!(cl(&["5, 5"]).unwrap(), ["5"]);
        assert_eq!(cl(&["12"]).unwrap(), ["12"]);
        for bad in [
            &["5", "6"][..],
            &["5, 6"],
            &["+5"],
            &["-1"],
            &["0x5"],
            &[""],
            &["99999999999999999999"],
        ] {
            assert!(cl(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ambiguous_responses_are_refused() {
        let check = |status: u16, headers: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(
                    http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            check_response(StatusCode::from_u16(status).unwrap(), &map)
        };
        assert!(check(200, &[("content-length", "2")]).is_ok());
        assert!(check(200, &[("transfer-encoding", "Chunked")]).is_ok());
        assert!(check(200, &[]).is_ok());
        let te_cl = [("transfer-encoding", "chunked"), ("content-length", "2")];
        assert!(check(200, &te_cl).is_err());
        assert!(check(200, &[("transfer-encoding", "gzip, chunked")]).is_err());
        assert!(check(
            200,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]
        )
        .is_err());
        assert!(check(101, &[]).is_err());
        assert!(check(600, &[]).is_err());
    }

    #[test]
    fn long_targets_and_many_fields_are_refused() {
        let limits = HeadLimits {
            max_uri: 20,
            max_headers: 3,
            ..HeadLimits::default()
        };
        let mut p = parts(H11, "/0123456789/0123456789", &[("host", "a")]);
        assert_eq!(check(&mut p, &limits).unwrap_err().status(), 414);
        let mut p = parts(H11, "/0123456789?x=012345", &[("host", "a")]);
        assert!(check(&mut p, &limits).is_ok());
        let four = [("host", "a"), ("a", "1"), ("b", "2"), ("b", "3")];
        let mut p = parts(Version::HTTP_2, "https://a/", &four);
        assert_eq!(check(&mut p, &limits).unwrap_err().status(), 431);
    }

    #[test]
    fn host_must_be_one_valid_authority_agreeing_with_the_target() {
        let host = |h: &[&str]| {
            let headers: Vec<_> = h.iter().map(|v| ("host", *v)).collect();
            verdict(H11, "/", &headers)
        };
        assert_eq!(host(&["mail.contoso.com"]), None);
        assert_eq!(host(&["mail.contoso.com:443"]), None);
        assert_eq!(host(&["[2001:db8::1]:8443"]), None);
        assert_eq!(host(&["10.0.0.1"]), None);
        for bad in [
            "", "a b", "user@a", "a:80:80", "a:", ":80", "a:99999", "a:+80", "a/b", "[::1",
        ] {
            assert_eq!(host(&[bad]), Some(400), "{bad:?} accepted");
        }
        assert_eq!(host(&[]), Some(400));
        // The names and ports recognised without a full parse agree with it.
        for text in [
            "a",
            "a-b.c",
            "a.b:1",
            "1.2.3.4:65535",
            "a:0",
            "A:08080",
            "a:",
            "a:x",
            ":1",
        ] {
            assert_eq!(
                is_authority(text),
                parse_authority(text).is_some(),
                "{text:?}"
            );
        }
        assert_eq!(host(&["a", "a"]), Some(400));
        assert_eq!(verdict(Version::HTTP_10, "/", &[]), None);
        let absolute = |target: &str, host: &str| verdict(H11, target, &[("host", host)]);
        assert_eq!(absolute("http://A/x", "a:80"), None);
        assert_eq!(absolute("https://a/x", "a:443"), None);
        assert_eq!(absolute("http://b/x", "a"), Some(400));
        assert_eq!(absolute("http://a:8080/x", "a"), Some(400));
        // HTTP/2: :authority and Host alike.
        assert_eq!(verdict(Version::HTTP_2, "https://a/x", &[]), None);
        assert_eq!(
            verdict(Version::HTTP_2, "https://a/x", &[("host", "b")]),
            Some(400)
        );
    }
}
