//! `[[service]]` tables: listeners, TLS termination, timeouts and routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::document::{report_duplicates, Named};
use crate::model::*;
use crate::pool::{existing_file, named, socket_addr};
use crate::reader::{Field, Report, Table};
use crate::rules::{parse_conditions, parse_rules, size};

type PoolIndex<'n> = HashMap<&'n str, usize>;

pub(crate) fn parse_all(
    tables: Vec<Table>,
    r: &mut Report,
    base: &Path,
    pools: &PoolIndex,
) -> Vec<Service> {
    let mut names = Vec::new();
    let mut listens: Vec<Named> = Vec::new();
    let services = tables
        .into_iter()
        .map(|t| {
            let (service, name, addrs) = parse_service(t, r, base, pools);
            names.extend(name);
            listens.extend(addrs);
            service
        })
        .collect();
    report_duplicates(&names, "service name", r);
    report_duplicates(&listens, "listen address", r);
    services
}

fn parse_service(
    mut t: Table,
    r: &mut Report,
    base: &Path,
    pools: &PoolIndex,
) -> (Service, Option<Named>, Vec<Named>) {
    let name = named(&mut t, r);
    let (listen, listen_names) = parse_listen(&mut t, r);
    let mode = t
        .get("mode")
        .and_then(|f| f.choice(r, &[("http", Mode::Http)]))
        .unwrap_or(Mode::Http);
    let default_pool = t.get("default_pool").and_then(|f| pool_ref(&f, r, pools));
    let tls = t.section(r, "tls", |h, r| parse_tls(h, r, base));
    let timeouts = t.section(r, "timeouts", parse_timeouts).unwrap_or_default();
    let routes = parse_routes(&mut t, r, pools);
    let x_forwarded = t.get("x_forwarded").and_then(|f| f.bool(r)).unwrap_or(true);
    let sorry = t
        .section(r, "sorry", |h, r| parse_sorry(h, r, base))
        .unwrap_or_default();
    let rules = t.get("rule").map(|f| parse_rules(f, r)).unwrap_or_default();
    let max_body = t.get("max_body").and_then(|f| size(&f, r));
    let expect = t
        .get("expect")
        .and_then(|f| {
            f.choice(
                r,
                &[
                    ("forward", ExpectMode::Forward),
                    ("answer", ExpectMode::Answer),
                ],
            )
        })
        .unwrap_or(ExpectMode::Forward);
    t.finish(r);
    let service = Service {
        name: name.as_ref().map(|n| n.name.clone()).unwrap_or_default(),
        listen,
        mode,
        default_pool,
        tls,
        timeouts: timeouts.clone(),
        routes,
        x_forwarded,
        sorry,
        expect,
        rules,
        limits: Limits {
            client_idle: Some(timeouts.client_idle),
            server: None,
            max_body,
        },
    };
    (service, name, listen_names)
}

/// `listen` as one address or a list of them.
fn parse_listen(t: &mut Table, r: &mut Report) -> (Vec<SocketAddr>, Vec<Named>) {
    let Some(f) = t.require(r, "listen") else {
        return (Vec::new(), Vec::new());
    };
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    for field in f.one_or_many(r, "address") {
        if let Some(a) = socket_addr(&field, r) {
            addrs.push(a);
            if a.port() == 0 {
                // Each port-0 listener gets its own ephemeral port: no clash possible.
                continue;
            }
            names.push(Named {
                name: a.to_string(),
                path: field.path.clone(),
                span: field.span(),
            });
        }
    }
    (addrs, names)
}

fn pool_ref(f: &Field, r: &mut Report, pools: &PoolIndex) -> Option<usize> {
    let name = f.non_empty_str(r)?;
    let idx = pools.get(name).copied();
    if idx.is_none() {
        f.fail(r, format!("no pool named \"{name}\""));
    }
    idx
}

fn parse_tls(mut t: Table, r: &mut Report, base: &Path) -> ServiceTls {
    let mut certificates = Vec::new();
    if let Some(f) = t.require(r, "certificates") {
        for mut ct in f.tables(r) {
            let cert = ct
                .require(r, "cert")
                .and_then(|f| existing_file(&f, r, base));
            let key = ct
                .require(r, "key")
                .and_then(|f| existing_file(&f, r, base));
            ct.finish(r);
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(CertificateFiles { cert, key });
            }
        }
        if certificates.is_empty() && f.value.get_ref().is_array() && r.errors.is_empty() {
            f.fail(r, "list at least one certificate");
        }
    }
    let http2 = t.get("http2").and_then(|f| f.bool(r)).unwrap_or(true);
    t.finish(r);
    ServiceTls {
        certificates,
        http2,
    }
}

fn parse_timeouts(mut t: Table, r: &mut Report) -> ServiceTimeouts {
    let d = ServiceTimeouts::default();
    let timeouts = ServiceTimeouts {
        client_idle: t.duration_or(r, "client_idle", d.client_idle),
        request_header: t.duration_or(r, "request_header", d.request_header),
        tls_handshake: t.duration_or(r, "tls_handshake", d.tls_handshake),
        expect_continue: t.duration_or(r, "expect_continue", d.expect_continue),
    };
    t.finish(r);
    timeouts
}

fn parse_sorry(mut t: Table, r: &mut Report, base: &Path) -> Sorry {
    let d = Sorry::default();
    let status = t
        .get("status")
        .and_then(|f| f.int_in(r, 200, 599))
        .unwrap_or(503) as u16;
    let content_type = t
        .get("content_type")
        .and_then(|f| f.non_empty_str(r))
        .map_or(d.content_type, str::to_string);
    let body = match (t.get("body"), t.get("file")) {
        (Some(b), Some(f)) => {
            f.fail(r, "give either body or file, not both");
            b.str(r).map(str::to_string)
        }
        (Some(b), None) => b.str(r).map(str::to_string),
        (None, Some(f)) => {
            existing_file(&f, r, base).and_then(|p| match std::fs::read_to_string(&p) {
                Ok(s) => Some(s),
                Err(e) => {
                    f.fail(r, format!("cannot read {}: {e}", p.display()));
                    None
                }
            })
        }
        (None, None) => None,
    };
    t.finish(r);
    Sorry {
        status,
        content_type,
        body: body.unwrap_or(d.body),
    }
}

fn parse_route_timeouts(mut t: Table, r: &mut Report) -> Limits {
    let limits = Limits {
        client_idle: t.get("client_idle").and_then(|f| f.positive_duration(r)),
        server: t.get("server").and_then(|f| f.positive_duration(r)),
        max_body: None,
    };
    t.finish(r);
    limits
}

fn parse_routes(t: &mut Table, r: &mut Report, pools: &PoolIndex) -> Vec<Route> {
    let Some(f) = t.get("route") else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let routes = f
        .tables(r)
        .into_iter()
        .map(|mut rt| {
            let name = named(&mut rt, r);
            let conditions = rt
                .require(r, "match")
                .and_then(|f| f.table(r))
                .map(|m| parse_conditions(m, r))
                .unwrap_or_default();
            let pool = rt.require(r, "pool").and_then(|f| pool_ref(&f, r, pools));
            let rules = rt
                .get("rule")
                .map(|f| parse_rules(f, r))
                .unwrap_or_default();
            let mut limits = rt
                .section(r, "timeouts", parse_route_timeouts)
                .unwrap_or_default();
            limits.max_body = rt.get("max_body").and_then(|f| size(&f, r));
            rt.finish(r);
            let route = Route {
                name: name.as_ref().map(|n| n.name.clone()).unwrap_or_default(),
                conditions,
                pool: pool.unwrap_or(0),
                rules,
                limits,
            };
            names.extend(name);
            route
        })
        .collect();
    report_duplicates(&names, "route name", r);
    routes
}
