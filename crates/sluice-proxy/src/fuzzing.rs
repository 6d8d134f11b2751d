//! Entry points for the fuzz targets in `fuzz/` (and for the corpus replay that runs with
//! the tests): each takes arbitrary bytes, feeds them to one of sluice's own parsers the
//! way traffic would, and asserts what must hold whatever the input.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Instant;

use http::header::{HeaderName, COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use sluice_config::{Config, HeadLimits, PersistenceKind};

use crate::framing;
use crate::persistence::{cookie_key, PoolPersistence};
use crate::routing;
use crate::rules::{self, ResponseEdits};

/// A request head from text: a request line, then `name: value` lines. Lines that make
/// no valid field are skipped, as hyper would have refused them before sluice saw them.
pub fn request_head(data: &[u8]) -> Option<Parts> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut line = lines.next()?.splitn(3, ' ');
    let method = Method::from_bytes(line.next()?.as_bytes()).ok()?;
    let uri: Uri = line.next()?.parse().ok()?;
    let version = match line.next() {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::new();
    for field in lines {
        let Some((name, value)) = field.split_once(':') else {
            continue;
        };
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_bytes(value.trim_matches([' ', '\t']).as_bytes());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Some(req.into_parts().0)
}

/// Request framing and host checks: never a panic; what passes has one framing.
pub fn framing(data: &[u8]) {
    let Some(mut parts) = request_head(data) else {
        return;
    };
    if framing::check(&mut parts, &HeadLimits::default()).is_err() {
        return;
    }
    let headers = &parts.headers;
    let lengths = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    assert!(lengths <= 1, "several Content-Length passed");
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        assert_eq!(lengths, 0, "Content-Length with Transfer-Encoding passed");
        assert_eq!(parts.version, Version::HTTP_11);
    }
    if parts.version == Version::HTTP_11 {
        assert_eq!(headers.get_all(http::header::HOST).iter().count(), 1);
    }
    let host = routing::host_of(headers, &parts.uri).unwrap_or("");
    let _ = routing::strip_port(host);
}

/// The persistence cookie read from arbitrary `Cookie` headers (one per line): never a
/// panic, sluice's own cookie never reaches the server, and only a value sluice issued
/// names a server.
pub fn persistence_cookie(data: &[u8]) {
    let (persistence, issued) = cookie_pool();
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let sticky = persistence.read(&mut headers, client, Instant::now());
    if let Some(server) = sticky.prefer {
        let text = String::from_utf8_lossy(data);
        assert!(
            text.contains(issued[server].as_str()),
            "a server named by a value never issued"
        );
    }
    // A cookie's name is a token and the space around it SP or HTAB (RFC 6265 4.2.1).
    for value in headers.get_all(COOKIE) {
        let leaked = value
            .as_bytes()
            .split(|b| *b == b';')
            .map(|pair| pair.split(|b| *b == b'=').next().unwrap_or(pair))
            .any(|name| name.trim_ascii() == COOKIE_NAME.as_bytes());
        assert!(
            !leaked,
            "the persistence cookie reached the server: {value:?}"
        );
    }
}

const COOKIE_NAME: &str = "SLUICE";

/// A pool of three servers with cookie persistence, and the value naming each.
fn cookie_pool() -> &'static (PoolPersistence, Vec<String>) {
    static POOL: OnceLock<(PoolPersistence, Vec<String>)> = OnceLock::new();
    POOL.get_or_init(|| {
        let config = fuzz_config();
        let pool = &config.pools[0];
        let cfg = pool.persistence.as_ref().expect("the pool persists");
        assert!(matches!(cfg.kind, PersistenceKind::Cookie(_)));
        let key = cookie_key(Some("fuzzing-secret-0123456789"));
        let persistence = PoolPersistence::new(cfg, &pool.servers, &key);
        let issued = (0..pool.servers.len())
            .map(|i| {
                let set = persistence
                    .remember(Default::default(), i, Instant::now())
                    .expect("a cookie is issued");
                let text = set.to_str().expect("ASCII").to_string();
                let value = text.split(';').next().and_then(|p| p.split_once('='));
                value.expect("name=value").1.to_string()
            })
            .collect();
        (persistence, issued)
    })
}

/// The service's rules and routes over an arbitrary request: never a panic, and a
/// redirect always has a location that is a valid header value.
pub fn rules(data: &[u8]) {
    let Some(mut parts) = request_head(data) else {
        return;
    };
    let config = fuzz_config();
    let service = &config.services[0];
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let mut edits = ResponseEdits::default();
    match rules::apply(&service.rules, &mut parts, client, &mut edits) {
        Ok(Some(rules::Answer::Redirect { location, .. })) => {
            assert!(HeaderValue::from_str(&location).is_ok(), "{location:?}");
            return;
        }
        Ok(Some(_)) | Err(_) => return,
        Ok(None) => {}
    }
    let view = routing::View::of(&parts, client);
    if let Some((Some(route), _)) = routing::select(service, |c| view.holds_all(c)) {
        let _ = rules::apply(&route.rules, &mut parts, client, &mut edits);
    }
    let mut response = HeaderMap::new();
    edits.apply(&mut response);
}

/// One service with rules of every kind and routes on every condition, and one pool
/// with cookie persistence.
fn fuzz_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        sluice_config::parse(FUZZ_CONFIG, "fuzz.toml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

const FUZZ_CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
default_pool = "p"
[[service.rule]]
when = { path = "/" }
redirect = { status = 302, location = "/owa/" }
[[service.rule]]
rewrite_path = { regex = "^/old/(?P<rest>.*)$", to = "/new/${rest}?x=$1" }
[[service.rule]]
when = { header = { name = "X-Deny" } }
deny = { status = 403, body = "no" }
[[service.rule]]
when = { host = "*.contoso.com", not = { method = ["GET"] } }
set_header = { name = "X-A", value = "1" }
[[service.rule]]
when = { source = ["192.0.2.0/24"] }
add_response_header = { name = "X-Src", value = "lab" }
[[service.rule]]
when = { path_prefix = "/http" }
redirect = { status = 301, scheme = "https", port = 8443 }
[[service.rule]]
remove_header = "X-Remove"
[[service.route]]
name = "owa"
match = { path_prefix = "/owa", any = [{ method = ["GET", "POST"] }, { path_suffix = ".aspx" }] }
pool = "p"
[[service.route.rule]]
when = { path_regex = "^/owa/x" }
set_host = "mail.contoso.com"

[[pool]]
name = "p"
servers = [
  { name = "cas1", address = "127.0.0.1:1" },
  { name = "cas2", address = "127.0.0.1:2" },
  { name = "cas3", address = "127.0.0.1:3" },
]
[pool.persistence]
kind = "cookie"
cookie = "SLUICE"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_configuration_parses() {
        assert_eq!(fuzz_config().services[0].rules.len(), 7);
        assert_eq!(cookie_pool().1.len(), 3);
    }

    #[test]
    fn each_entry_point_takes_what_traffic_would_bring() {
        framing(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n");
        framing(b"GET http://b/ HTTP/1.1\nHost: a\n");
        let issued = cookie_pool().1[1].clone();
        persistence_cookie(format!("a=1; SLUICE={issued}; b=2\nSLUICE=forged").as_bytes());
        rules(b"GET /old/thing HTTP/1.1\nHost: mail.contoso.com\n");
        rules(b"GET / HTTP/1.1\nHost: mail.contoso.com\n");
    }
}
