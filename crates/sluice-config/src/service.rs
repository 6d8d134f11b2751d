//! `[[service]]` tables: listeners, TLS termination, timeouts and routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::document::{report_duplicates, Named};
use crate::model::*;
use crate::pool::{existing_file, named, socket_addr};
use crate::reader::{Field, Report, Table};
use crate::rules::{parse_conditions, parse_rules, refuse, size, Scope};

/// The pools by name, with their position.
pub(crate) type PoolIndex<'n> = HashMap<&'n str, (usize, &'n Pool)>;

/// Service keys that only an HTTP service reads.
const HTTP_ONLY: [&str; 9] = [
    "tls",
    "x_forwarded",
    "sorry",
    "rule",
    "max_body",
    "expect",
    "max_header_size",
    "max_headers",
    "max_uri",
];

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
        .and_then(|f| f.choice(r, &[("http", Mode::Http), ("tcp", Mode::Tcp)]))
        .unwrap_or(Mode::Http);
    let default_pool = t
        .get("default_pool")
        .and_then(|f| pool_ref(&f, r, pools, mode));
    let timeouts = t
        .section(r, "timeouts", |h, r| parse_timeouts(h, r, mode))
        .unwrap_or_default();
    let routes = parse_routes(&mut t, r, pools, mode);
    let max_connections = t
        .get("max_connections")
        .and_then(|f| f.int_in(r, 1, 10_000_000))
        .map(|n| n as u32);
    let mut service = Service {
        name: name.as_ref().map_or("", |n| n.name.as_str()).into(),
        listen,
        mode,
        default_pool,
        tls: None,
        timeouts: timeouts.clone(),
        routes,
        x_forwarded: true,
        sorry: Sorry::default(),
        expect: ExpectMode::Forward,
        rules: Vec::new(),
        limits: Limits {
            client_idle: Some(timeouts.client_idle),
            server: None,
            max_body: None,
        },
        head_limits: HeadLimits::default(),
        max_connections,
        splice: true,
    };
    match mode {
        Mode::Http => {
            refuse(&mut t, r, &["splice"], "applies to mode = \"tcp\" services");
            http_settings(&mut t, r, base, &mut service);
        }
        Mode::Tcp => {
            refuse(&mut t, r, &HTTP_ONLY, "applies to mode = \"http\" services; a tcp service relays bytes untouched (TLS included)");
            service.splice = t.get("splice").and_then(|f| f.bool(r)).unwrap_or(true);
        }
    }
    t.finish(r);
    (service, name, listen_names)
}

/// The keys of an HTTP service: TLS termination, headers, sorry page, rules, limits.
fn http_settings(t: &mut Table, r: &mut Report, base: &Path, service: &mut Service) {
    service.tls = t.section(r, "tls", |h, r| parse_tls(h, r, base));
    service.x_forwarded = t.get("x_forwarded").and_then(|f| f.bool(r)).unwrap_or(true);
    if let Some(sorry) = t.section(r, "sorry", |h, r| parse_sorry(h, r, base)) {
        service.sorry = sorry;
    }
    service.rules = t.get("rule").map(|f| parse_rules(f, r)).unwrap_or_default();
    service.limits.max_body = t.get("max_body").and_then(|f| size(&f, r));
    service.head_limits = head_limits(t, r);
    if let Some(expect) = t.get("expect").and_then(|f| {
        f.choice(
            r,
            &[
                ("forward", ExpectMode::Forward),
                ("answer", ExpectMode::Answer),
            ],
        )
    }) {
        service.expect = expect;
    }
}

fn head_limits(t: &mut Table, r: &mut Report) -> HeadLimits {
    let d = HeadLimits::default();
    // hyper reads a request head into a buffer of at least 8 KiB: no smaller limit holds.
    let bytes = |t: &mut Table, r: &mut Report, key, min: u64, default| {
        t.get(key)
            .and_then(|f| {
                let n = size(&f, r)?;
                if !(min..=1 << 20).contains(&n) {
                    f.fail(r, format!("must be between {min} bytes and 1MiB"));
                    return None;
                }
                Some(n as usize)
            })
            .unwrap_or(default)
    };
    HeadLimits {
        max_header_size: bytes(t, r, "max_header_size", 8192, d.max_header_size),
        max_uri: bytes(t, r, "max_uri", 256, d.max_uri),
        max_headers: t
            .get("max_headers")
            .and_then(|f| f.int_in(r, 16, 10_000))
            .map_or(d.max_headers, |n| n as usize),
    }
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

fn pool_ref(f: &Field, r: &mut Report, pools: &PoolIndex, mode: Mode) -> Option<usize> {
    let name = f.non_empty_str(r)?;
    let Some(&(index, pool)) = pools.get(name) else {
        f.fail(r, format!("no pool named \"{name}\""));
        return None;
    };
    if let Some(why) = unfit(pool, mode) {
        f.fail(r, format!("pool \"{name}\" {why}"));
    }
    Some(index)
}

/// Why `pool` cannot serve a service of this mode, if it cannot.
fn unfit(pool: &Pool, mode: Mode) -> Option<&'static str> {
    match mode {
        Mode::Http if pool.send_proxy.is_some() => Some("sends the PROXY protocol (send_proxy), which only tcp services do"),
        Mode::Http => None,
        Mode::Tcp if pool.tls.is_some() => Some("re-encrypts ([pool.tls]); a tcp service relays bytes untouched, so it cannot (a TLS health check is [pool.health] tls = true)"),
        Mode::Tcp => {
            let reads_http = matches!(
                pool.persistence.as_ref().map(|p| &p.kind),
                Some(PersistenceKind::Cookie(_) | PersistenceKind::Header(_))
            ) || matches!(pool.algorithm, Algorithm::Hash(HashOn::Header(_)));
            reads_http.then_some("persists or hashes by a cookie or header, which a tcp service cannot read; use source persistence or hash_on = \"source\"")
        }
    }
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
    let http2_max_streams = t
        .get("http2_max_streams")
        .and_then(|f| f.int_in(r, 1, 10_000))
        .map_or(100, |n| n as u32);
    t.finish(r);
    ServiceTls {
        certificates,
        http2,
        http2_max_streams,
    }
}

/// The timeouts of each mode; the other mode's keys are reported.
fn parse_timeouts(mut t: Table, r: &mut Report, mode: Mode) -> ServiceTimeouts {
    const HTTP: [&str; 4] = [
        "client_idle",
        "request_header",
        "tls_handshake",
        "expect_continue",
    ];
    const TCP: [&str; 2] = ["idle", "client_hello"];
    let d = ServiceTimeouts::default();
    let timeouts = match mode {
        Mode::Http => {
            refuse(&mut t, r, &TCP, "applies to mode = \"tcp\" services");
            ServiceTimeouts {
                client_idle: t.duration_or(r, "client_idle", d.client_idle),
                request_header: t.duration_or(r, "request_header", d.request_header),
                tls_handshake: t.duration_or(r, "tls_handshake", d.tls_handshake),
                expect_continue: t.duration_or(r, "expect_continue", d.expect_continue),
                ..d
            }
        }
        Mode::Tcp => {
            refuse(
                &mut t,
                r,
                &HTTP,
                "applies to mode = \"http\" services; a tcp service has idle and client_hello",
            );
            ServiceTimeouts {
                idle: t.duration_or(r, "idle", d.idle),
                client_hello: t.duration_or(r, "client_hello", d.client_hello),
                ..d
            }
        }
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

fn parse_routes(t: &mut Table, r: &mut Report, pools: &PoolIndex, mode: Mode) -> Vec<Route> {
    let Some(f) = t.get("route") else {
        return Vec::new();
    };
    let scope = match mode {
        Mode::Http => Scope::Http,
        Mode::Tcp => Scope::Tcp,
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
                .map(|m| parse_conditions(m, r, scope))
                .unwrap_or_default();
            let pool = rt
                .require(r, "pool")
                .and_then(|f| pool_ref(&f, r, pools, mode));
            let mut route = Route {
                name: name.as_ref().map_or("", |n| n.name.as_str()).into(),
                conditions,
                pool: pool.unwrap_or(0),
                rules: Vec::new(),
                limits: Limits::default(),
            };
            match mode {
                Mode::Http => {
                    route.rules = rt
                        .get("rule")
                        .map(|f| parse_rules(f, r))
                        .unwrap_or_default();
                    route.limits = rt
                        .section(r, "timeouts", parse_route_timeouts)
                        .unwrap_or_default();
                    route.limits.max_body = rt.get("max_body").and_then(|f| size(&f, r));
                }
                Mode::Tcp => refuse(
                    &mut rt,
                    r,
                    &["rule", "timeouts", "max_body"],
                    "applies to mode = \"http\" services",
                ),
            }
            rt.finish(r);
            names.extend(name);
            route
        })
        .collect();
    report_duplicates(&names, "route name", r);
    routes
}
