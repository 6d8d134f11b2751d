//! Request conditions (route `match` and rule `when` tables) and the ordered rules that
//! redirect, deny, rewrite and edit headers.

use regex::RegexBuilder;

use crate::model::*;
use crate::reader::{Field, Report, Table};

/// What a condition can look at: an HTTP request, or (layer 4) only the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Http,
    Tcp,
}

/// The condition keys that read an HTTP request.
const HTTP_KEYS: [&str; 7] = [
    "path",
    "path_prefix",
    "path_suffix",
    "path_regex",
    "host",
    "header",
    "method",
];

/// A table of conditions that must all hold; an empty table is reported.
pub(crate) fn parse_conditions(mut t: Table, r: &mut Report, scope: Scope) -> Vec<Condition> {
    let mut conditions = match scope {
        Scope::Http => {
            refuse(
                &mut t,
                r,
                &["sni"],
                "applies to mode = \"tcp\" services; match the Host header with host",
            );
            parse_http_conditions(&mut t, r)
        }
        Scope::Tcp => {
            refuse(&mut t, r, &HTTP_KEYS, "reads HTTP requests; a tcp service sees only the client's address (source) and the TLS server name (sni)");
            t.get("sni")
                .map(|f| vec![Condition::Sni(server_names(&f, r))])
                .unwrap_or_default()
        }
    };
    if let Some(f) = t.get("source") {
        conditions.push(Condition::Source(networks(&f, r)));
    }
    if let Some(inner) = t.get("not").and_then(|f| f.table(r)) {
        conditions.push(Condition::Not(parse_conditions(inner, r, scope)));
    }
    if let Some(f) = t.get("any") {
        let groups = f
            .tables(r)
            .into_iter()
            .map(|g| parse_conditions(g, r, scope));
        conditions.push(Condition::Any(groups.collect()));
    }
    if conditions.is_empty() && r.errors.is_empty() {
        let keys = match scope {
            Scope::Http => format!("{}, source, not, any", HTTP_KEYS.join(", ")),
            Scope::Tcp => "sni, source, not, any".to_string(),
        };
        let path = t.path.clone();
        r.error(&t.span, &path, format!("give at least one of {keys}"));
    }
    t.finish(r);
    conditions
}

fn parse_http_conditions(t: &mut Table, r: &mut Report) -> Vec<Condition> {
    let mut conditions = Vec::new();
    let path = |f: Field, r: &mut Report| {
        let p = f.non_empty_str(r)?;
        if !p.starts_with('/') {
            f.fail(r, "must start with \"/\"");
        }
        Some(p.to_ascii_lowercase())
    };
    if let Some(p) = t.get("path").and_then(|f| path(f, r)) {
        conditions.push(Condition::Path(p));
    }
    if let Some(p) = t.get("path_prefix").and_then(|f| path(f, r)) {
        conditions.push(Condition::PathPrefix(p));
    }
    if let Some(p) = t.get("path_suffix").and_then(|f| f.non_empty_str(r)) {
        conditions.push(Condition::PathSuffix(p.to_ascii_lowercase()));
    }
    if let Some(f) = t.get("path_regex") {
        conditions.extend(regex(&f, r).map(Condition::PathRegex));
    }
    if let Some(h) = t.get("host").and_then(|f| f.non_empty_str(r)) {
        conditions.push(Condition::Host(h.to_ascii_lowercase()));
    }
    if let Some(h) = t.get("header").and_then(|f| f.table(r)) {
        conditions.extend(parse_header_match(h, r));
    }
    if let Some(f) = t.get("method") {
        conditions.push(Condition::Method(methods(&f, r)));
    }
    conditions
}

/// Reports each of `keys` present in the table as not applying here, with `why`.
pub(crate) fn refuse(t: &mut Table, r: &mut Report, keys: &[&'static str], why: &str) {
    for key in keys {
        if let Some(f) = t.get(key) {
            f.fail(r, why);
        }
    }
}

/// `"mail.example.com"`, `"*.example.com"` or a list of them, lower-cased.
fn server_names(f: &Field, r: &mut Report) -> Vec<String> {
    f.one_or_many(r, "server name")
        .into_iter()
        .filter_map(|field| {
            let name = field.non_empty_str(r)?.to_ascii_lowercase();
            let labels = name.strip_prefix("*.").unwrap_or(&name);
            let valid = labels.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if valid {
                Some(name)
            } else {
                field.fail(r, format!("\"{name}\" is not a server name; write \"mail.example.com\" or \"*.example.com\""));
                None
            }
        })
        .collect()
}

fn parse_header_match(mut t: Table, r: &mut Report) -> Option<Condition> {
    let name = t.require(r, "name").and_then(|f| header_name(&f, r));
    let value = t.get("value").and_then(|f| f.str(r)).map(str::to_string);
    t.finish(r);
    Some(Condition::Header { name: name?, value })
}

/// `"GET"` or `["GET", "HEAD"]`, upper-cased.
fn methods(f: &Field, r: &mut Report) -> Vec<String> {
    f.one_or_many(r, "method")
        .into_iter()
        .filter_map(|field| {
            let m = field.str(r)?;
            if http_token(m) {
                Some(m.to_ascii_uppercase())
            } else {
                field.fail(r, format!("\"{m}\" is not a valid method"));
                None
            }
        })
        .collect()
}

/// `"10.0.0.0/8"` or a list; a bare address means that one address.
fn networks(f: &Field, r: &mut Report) -> Vec<ipnet::IpNet> {
    f.one_or_many(r, "network")
        .into_iter()
        .filter_map(|field| {
            let s = field.str(r)?;
            let parsed = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    field.fail(r, format!("\"{s}\" is not an address or network (CIDR)"));
                    None
                }
            }
        })
        .collect()
}

pub(crate) fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn header_name(f: &Field, r: &mut Report) -> Option<String> {
    let n = f.non_empty_str(r)?;
    if http_token(n) {
        Some(n.to_ascii_lowercase())
    } else {
        f.fail(r, format!("\"{n}\" is not a valid header name"));
        None
    }
}

/// A header value: visible characters, spaces and tabs only (no line breaks).
fn header_value(f: &Field, r: &mut Report) -> Option<String> {
    let v = f.str(r)?;
    if v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Some(v.to_string())
    } else {
        f.fail(
            r,
            "header values may hold visible ASCII characters, spaces and tabs only",
        );
        None
    }
}

pub(crate) fn regex(f: &Field, r: &mut Report) -> Option<regex::Regex> {
    let pattern = f.non_empty_str(r)?;
    match RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            f.fail(r, format!("invalid regular expression: {e}"));
            None
        }
    }
}

/// The action keys of a rule; exactly one per rule.
const ACTIONS: [&str; 10] = [
    "redirect",
    "deny",
    "set_header",
    "add_header",
    "remove_header",
    "set_response_header",
    "add_response_header",
    "remove_response_header",
    "rewrite_path",
    "set_host",
];

/// `rule = [...]`: ordered rules, each `when` (optional) and one action.
pub(crate) fn parse_rules(f: Field, r: &mut Report) -> Vec<Rule> {
    f.tables(r)
        .into_iter()
        .filter_map(|t| parse_rule(t, r))
        .collect()
}

fn parse_rule(mut t: Table, r: &mut Report) -> Option<Rule> {
    let conditions = t
        .get("when")
        .and_then(|f| f.table(r))
        .map(|w| parse_conditions(w, r, Scope::Http))
        .unwrap_or_default();
    let mut actions = Vec::new();
    for key in ACTIONS {
        if let Some(f) = t.get(key) {
            actions.push((key, f));
        }
    }
    let span = t.span.clone();
    let path = t.path.clone();
    t.finish(r);
    let (key, field) = match actions.len() {
        1 => actions.pop()?,
        0 => {
            r.error(
                &span,
                &path,
                format!("give one action: {}", ACTIONS.join(", ")),
            );
            return None;
        }
        _ => {
            let names: Vec<&str> = actions.iter().map(|(k, _)| *k).collect();
            r.error(
                &span,
                &path,
                format!("give one action per rule, not {}", names.join(" and ")),
            );
            return None;
        }
    };
    let action = parse_action(key, &field, r)?;
    Some(Rule { conditions, action })
}

fn parse_action(key: &str, f: &Field, r: &mut Report) -> Option<Action> {
    let side = if key.contains("response") {
        Side::Response
    } else {
        Side::Request
    };
    match key {
        "redirect" => parse_redirect(f.table(r)?, r),
        "deny" => parse_deny(f.table(r)?, r),
        "set_header" | "set_response_header" | "add_header" | "add_response_header" => {
            let (name, value) = parse_header_edit(f.table(r)?, r)?;
            Some(if key.starts_with("set") {
                Action::SetHeader { side, name, value }
            } else {
                Action::AddHeader { side, name, value }
            })
        }
        "remove_header" | "remove_response_header" => Some(Action::RemoveHeader {
            side,
            name: header_name(f, r)?,
        }),
        "rewrite_path" => parse_rewrite(f.table(r)?, r),
        "set_host" => {
            let host = f.non_empty_str(r)?;
            if host.bytes().all(|b| b.is_ascii_graphic()) {
                Some(Action::SetHost(host.to_string()))
            } else {
                f.fail(r, "not a valid host");
                None
            }
        }
        _ => None,
    }
}

fn parse_header_edit(mut t: Table, r: &mut Report) -> Option<(String, String)> {
    let name = t.require(r, "name").and_then(|f| header_name(&f, r));
    let value = t.require(r, "value").and_then(|f| header_value(&f, r));
    t.finish(r);
    Some((name?, value?))
}

fn parse_redirect(mut t: Table, r: &mut Report) -> Option<Action> {
    let status = t
        .get("status")
        .and_then(|f| {
            let s = f.int_in(r, 0, 999)?;
            if [301, 302, 303, 307, 308].contains(&s) {
                Some(s as u16)
            } else {
                f.fail(r, "a redirect status is 301, 302, 303, 307 or 308");
                None
            }
        })
        .unwrap_or(302);
    let location = t.get("location");
    let scheme = t.get("scheme");
    let host = t
        .get("host")
        .and_then(|f| f.non_empty_str(r))
        .map(str::to_string);
    let port = t
        .get("port")
        .and_then(|f| f.int_in(r, 1, 65535))
        .map(|p| p as u16);
    let span = t.span.clone();
    let path = t.path.clone();
    t.finish(r);
    let to = match (location, scheme) {
        (Some(l), None) if host.is_none() && port.is_none() => {
            RedirectTo::Location(header_value(&l, r)?)
        }
        (None, Some(s)) => {
            let scheme = s.choice(r, &[("https", "https"), ("http", "http")])?;
            RedirectTo::Scheme {
                scheme: scheme.to_string(),
                host,
                port,
            }
        }
        _ => {
            r.error(
                &span,
                &path,
                "give either location, or scheme (with optional host and port)",
            );
            return None;
        }
    };
    Some(Action::Redirect { status, to })
}

fn parse_deny(mut t: Table, r: &mut Report) -> Option<Action> {
    let status = t
        .get("status")
        .and_then(|f| f.int_in(r, 400, 599))
        .unwrap_or(403) as u16;
    let body = t.get("body").and_then(|f| f.str(r)).map(str::to_string);
    t.finish(r);
    let body = body.unwrap_or_else(|| format!("{status} Forbidden\n"));
    Some(Action::Deny { status, body })
}

fn parse_rewrite(mut t: Table, r: &mut Report) -> Option<Action> {
    let regex = t.require(r, "regex").and_then(|f| regex(&f, r));
    let to = t.require(r, "to").and_then(|f| {
        let to = f.non_empty_str(r)?;
        if !to.starts_with('/') && !to.starts_with('$') {
            f.fail(r, "must start with \"/\" (or a capture that does)");
        }
        Some(to.to_string())
    });
    t.finish(r);
    Some(Action::RewritePath {
        regex: regex?,
        to: to?,
    })
}

/// A byte size: an integer, or a string such as `"512KiB"`, `"10MiB"`, `"2GiB"`.
pub(crate) fn size(f: &Field, r: &mut Report) -> Option<u64> {
    if f.value.get_ref().is_integer() {
        return f.int_in(r, 0, i64::MAX).map(|n| n as u64);
    }
    let s = f.str(r)?.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let factor = match unit.trim() {
        "" | "B" => Some(1u64),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        "GiB" => Some(1 << 30),
        _ => None,
    };
    match (digits.parse::<u64>().ok(), factor) {
        (Some(n), Some(factor)) => n.checked_mul(factor).or_else(|| {
            f.fail(r, "too large");
            None
        }),
        _ => {
            f.fail(
                r,
                format!("\"{s}\" is not a size (e.g. 1048576, \"512KiB\", \"10MiB\", \"2GiB\")"),
            );
            None
        }
    }
}
