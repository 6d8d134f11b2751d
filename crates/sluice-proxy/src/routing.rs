//! Content switching: the first route whose conditions all hold picks the pool. The same
//! conditions decide which rules apply.

use std::net::IpAddr;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Uri};
use sluice_config::{Condition, Route, Service};

/// The route (`None` for the default pool) and pool index of the first route whose
/// conditions all hold.
pub fn select(
    service: &Service,
    holds_all: impl Fn(&[Condition]) -> bool,
) -> Option<(Option<&Route>, usize)> {
    service
        .routes
        .iter()
        .find(|r| holds_all(&r.conditions))
        .map(|r| (Some(r), r.pool))
        .or(service.default_pool.map(|p| (None, p)))
}

/// The host a request is for: the `Host` header, or the authority of an absolute or
/// HTTP/2 target.
pub fn host_of<'r>(headers: &'r HeaderMap, uri: &'r Uri) -> Option<&'r str> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// [`host_of`] as a header value, for `Host` and `X-Forwarded-Host`.
pub fn host_value(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    match headers.get(HOST) {
        Some(h) if h.to_str().is_ok() => Some(h.clone()),
        _ => HeaderValue::from_str(uri.authority()?.as_str()).ok(),
    }
}

pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// What conditions look at in a request.
pub struct View<'a> {
    path: &'a str,
    host: &'a str,
    method: &'a Method,
    headers: &'a HeaderMap,
    client: IpAddr,
}

impl<'a> View<'a> {
    pub fn of(parts: &'a Parts, client: IpAddr) -> Self {
        View {
            path: parts.uri.path(),
            host: host_of(&parts.headers, &parts.uri)
                .map(strip_port)
                .unwrap_or(""),
            method: &parts.method,
            headers: &parts.headers,
            client: client.to_canonical(),
        }
    }

    pub fn holds_all(&self, conditions: &[Condition]) -> bool {
        conditions.iter().all(|c| self.holds(c))
    }

    fn holds(&self, c: &Condition) -> bool {
        match c {
            Condition::Path(p) => self.path.eq_ignore_ascii_case(p),
            Condition::PathPrefix(p) => starts_with_ignore_case(self.path, p),
            Condition::PathSuffix(s) => ends_with_ignore_case(self.path, s),
            Condition::PathRegex(re) => re.is_match(self.path),
            Condition::Host(h) => host_matches(self.host, h),
            // Only tcp services have SNI conditions (the configuration sees to it).
            Condition::Sni(_) => false,
            Condition::Header { name, value } => {
                let mut values = self.headers.get_all(name.as_str()).iter();
                match value {
                    None => values.next().is_some(),
                    Some(v) => values.any(|x| x.as_bytes().eq_ignore_ascii_case(v.as_bytes())),
                }
            }
            Condition::Method(methods) => methods.iter().any(|m| m == self.method.as_str()),
            Condition::Source(nets) => nets.iter().any(|n| n.contains(&self.client)),
            Condition::Not(inner) => !self.holds_all(inner),
            Condition::Any(groups) => groups.iter().any(|g| self.holds_all(g)),
        }
    }
}

/// What conditions look at in a layer 4 connection: its TLS server name, if it sent
/// one, and its address.
pub struct Connection<'a> {
    sni: Option<&'a str>,
    client: IpAddr,
}

impl<'a> Connection<'a> {
    pub fn new(sni: Option<&'a str>, client: IpAddr) -> Self {
        Connection {
            sni,
            client: client.to_canonical(),
        }
    }

    pub fn holds_all(&self, conditions: &[Condition]) -> bool {
        conditions.iter().all(|c| self.holds(c))
    }

    fn holds(&self, c: &Condition) -> bool {
        match c {
            Condition::Sni(names) => self
                .sni
                .is_some_and(|sni| names.iter().any(|n| host_matches(sni, n))),
            Condition::Source(nets) => nets.iter().any(|n| n.contains(&self.client)),
            Condition::Not(inner) => !self.holds_all(inner),
            Condition::Any(groups) => groups.iter().any(|g| self.holds_all(g)),
            // HTTP conditions are refused on tcp services by the configuration.
            _ => false,
        }
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `pattern` is lower case; `*.example.com` matches any name ending in `.example.com`.
fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("mail.example.com:443"), "mail.example.com");
        assert_eq!(strip_port("mail.example.com"), "mail.example.com");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn comparisons_ignore_case() {
        assert!(starts_with_ignore_case("/EWS/Exchange.asmx", "/ews/"));
        assert!(!starts_with_ignore_case("/ew", "/ews/"));
        assert!(ends_with_ignore_case(
            "/owa/HealthCheck.htm",
            "/healthcheck.htm"
        ));
        assert!(host_matches("Mail.Example.com", "mail.example.com"));
        assert!(host_matches("a.example.com", "*.example.com"));
        assert!(!host_matches("example.com", "*.example.com"));
    }
}
