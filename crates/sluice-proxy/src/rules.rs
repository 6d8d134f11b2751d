//! Ordered request and response rules: each rule whose conditions hold applies its
//! action, in order, so later rules see what earlier ones changed. A redirect or deny
//! ends the request with sluice's own answer; response-side edits are collected and
//! applied to the server's response head.

use std::net::IpAddr;

use http::header::{HeaderName, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Uri};
use sluice_config::{Action, RedirectTo, Rule, Side};

use crate::error::ProxyError;
use crate::routing::{self, View};

/// sluice's own answer to a request, made by a rule.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Redirect { status: u16, location: String },
    Deny { status: u16, body: String },
}

/// Response header edits gathered from the rules that held.
#[derive(Default)]
pub struct ResponseEdits<'r>(Vec<&'r Action>);

impl ResponseEdits<'_> {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for action in &self.0 {
            edit_headers(action, headers);
        }
    }
}

/// Runs `rules` over the request head. `Ok(Some(answer))` ends the request there.
pub fn apply<'r>(
    rules: &'r [Rule],
    parts: &mut Parts,
    client: IpAddr,
    edits: &mut ResponseEdits<'r>,
) -> Result<Option<Answer>, ProxyError> {
    for rule in rules {
        if !View::of(parts, client).holds_all(&rule.conditions) {
            continue;
        }
        match &rule.action {
            Action::Redirect { status, to } => {
                let location = location(to, parts)?;
                return Ok(Some(Answer::Redirect {
                    status: *status,
                    location,
                }));
            }
            Action::Deny { status, body } => {
                return Ok(Some(Answer::Deny {
                    status: *status,
                    body: body.clone(),
                }))
            }
            Action::RewritePath { regex, to } => rewrite_path(parts, regex, to)?,
            Action::SetHost(host) => {
                let value = HeaderValue::from_str(host)
                    .map_err(|_| ProxyError::BadRequest("invalid host".into()))?;
                parts.headers.insert(HOST, value);
            }
            action if side_of(action) == Some(Side::Response) => edits.0.push(action),
            action => edit_headers(action, &mut parts.headers),
        }
    }
    Ok(None)
}

fn side_of(action: &Action) -> Option<Side> {
    match action {
        Action::SetHeader { side, .. }
        | Action::AddHeader { side, .. }
        | Action::RemoveHeader { side, .. } => Some(*side),
        _ => None,
    }
}

/// Applies a header action (validated at load, so conversions cannot fail there).
fn edit_headers(action: &Action, headers: &mut HeaderMap) {
    let pair = |name: &str, value: &str| {
        Some((
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        ))
    };
    match action {
        Action::SetHeader { name, value, .. } => {
            if let Some((n, v)) = pair(name, value) {
                headers.insert(n, v);
            }
        }
        Action::AddHeader { name, value, .. } => {
            if let Some((n, v)) = pair(name, value) {
                headers.append(n, v);
            }
        }
        Action::RemoveHeader { name, .. } => {
            headers.remove(name.as_str());
        }
        _ => {}
    }
}

/// Replaces the path with the regex's expansion when it matches; the query stays.
fn rewrite_path(parts: &mut Parts, regex: &regex::Regex, to: &str) -> Result<(), ProxyError> {
    let path = parts.uri.path();
    let Some(captures) = regex.captures(path) else {
        return Ok(());
    };
    let mut rewritten = String::new();
    captures.expand(to, &mut rewritten);
    if let Some(q) = parts.uri.query() {
        rewritten.push('?');
        rewritten.push_str(q);
    }
    let pq = PathAndQuery::try_from(rewritten)
        .map_err(|e| ProxyError::BadRequest(format!("rewritten path is invalid: {e}")))?;
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(uri)
        .map_err(|e| ProxyError::BadRequest(format!("rewritten target is invalid: {e}")))?;
    Ok(())
}

fn location(to: &RedirectTo, parts: &Parts) -> Result<String, ProxyError> {
    let (scheme, host, port) = match to {
        RedirectTo::Location(l) => return Ok(l.clone()),
        RedirectTo::Scheme { scheme, host, port } => (scheme, host, port),
    };
    let host = match host {
        Some(h) => h.as_str(),
        None => routing::host_of(&parts.headers, &parts.uri)
            .map(routing::strip_port)
            .ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match port {
        Some(p) if *p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    Ok(format!("{scheme}://{host}{port}{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use sluice_config::Condition;

    fn parts(uri: &str, host: &str) -> Parts {
        Request::get(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn rule(conditions: Vec<Condition>, action: Action) -> Rule {
        Rule { conditions, action }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    #[test]
    fn scheme_redirect_keeps_host_path_and_query() {
        let rules = [rule(
            vec![],
            Action::Redirect {
                status: 301,
                to: RedirectTo::Scheme {
                    scheme: "https".into(),
                    host: None,
                    port: None,
                },
            },
        )];
        let mut p = parts("/owa/?a=1", "mail.example.com:80");
        let answer = apply(&rules, &mut p, CLIENT, &mut ResponseEdits::default());
        assert_eq!(
            answer.unwrap(),
            Some(Answer::Redirect {
                status: 301,
                location: "https://mail.example.com/owa/?a=1".into()
            })
        );
    }

    #[test]
    fn rewrite_keeps_the_query_and_later_rules_see_it() {
        let regex = regex::Regex::new("^/test(.*)$").unwrap();
        let rules = [
            rule(
                vec![],
                Action::RewritePath {
                    regex,
                    to: "/owa$1".into(),
                },
            ),
            rule(
                vec![Condition::PathPrefix("/owa".into())],
                Action::SetHeader {
                    side: Side::Request,
                    name: "x-rewritten".into(),
                    value: "yes".into(),
                },
            ),
        ];
        let mut p = parts("/test/x?q=1", "h");
        let answer = apply(&rules, &mut p, CLIENT, &mut ResponseEdits::default());
        assert_eq!(answer.unwrap(), None);
        assert_eq!(p.uri.path_and_query().unwrap().as_str(), "/owa/x?q=1");
        assert_eq!(p.headers["x-rewritten"], "yes");
    }

    #[test]
    fn response_edits_wait_for_the_response() {
        let rules = [rule(
            vec![],
            Action::RemoveHeader {
                side: Side::Response,
                name: "server".into(),
            },
        )];
        let mut p = parts("/", "h");
        p.headers.insert("server", HeaderValue::from_static("kept"));
        let mut edits = ResponseEdits::default();
        apply(&rules, &mut p, CLIENT, &mut edits).unwrap();
        assert_eq!(p.headers["server"], "kept", "the request is not touched");
        let mut response = HeaderMap::new();
        response.insert("server", HeaderValue::from_static("IIS"));
        edits.apply(&mut response);
        assert!(response.get("server").is_none());
    }
}
