//! `[[pool]]` tables: servers, health checks, TLS towards the servers, timeouts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::document::{report_duplicates, resolve, Named};
use crate::model::*;
use crate::reader::{Field, Report, Table};

pub(crate) fn parse_all(tables: Vec<Table>, r: &mut Report, base: &Path) -> Vec<Pool> {
    let mut names = Vec::new();
    let pools = tables
        .into_iter()
        .map(|t| {
            let (pool, name) = parse_pool(t, r, base);
            names.extend(name);
            pool
        })
        .collect();
    report_duplicates(&names, "pool name", r);
    pools
}

fn parse_pool(mut t: Table, r: &mut Report, base: &Path) -> (Pool, Option<Named>) {
    let name = named(&mut t, r);
    let algorithm = parse_algorithm(&mut t, r);
    let servers = parse_servers(&mut t, r);
    let tls = t.section(r, "tls", |h, r| parse_tls(h, r, base));
    let health = t.section(r, "health", |h, r| parse_health(h, r, tls.is_some()));
    let timeouts = t.section(r, "timeouts", parse_timeouts).unwrap_or_default();
    let retries = t
        .get("retries")
        .and_then(|f| f.int_in(r, 0, 10))
        .unwrap_or(2) as u32;
    let max_idle_per_server = t
        .get("max_idle_per_server")
        .and_then(|f| f.int_in(r, 0, 100_000))
        .unwrap_or(64) as usize;
    let idle_timeout = t.duration_or(r, "idle_timeout", Duration::from_secs(60));
    let pin_auth = t.get("pin_auth").and_then(|f| f.bool(r)).unwrap_or(true);
    let persistence = t.section(r, "persistence", crate::persistence::parse);
    let slow_start = t.get("slow_start").and_then(|f| f.positive_duration(r));
    let drain_timeout = t.get("drain_timeout").and_then(|f| f.positive_duration(r));
    let send_proxy = t
        .get("send_proxy")
        .and_then(|f| f.choice(r, &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)]));
    t.finish(r);
    let pool = Pool {
        name: name.as_ref().map_or("", |n| n.name.as_str()).into(),
        algorithm,
        servers,
        health,
        tls,
        timeouts,
        retries,
        max_idle_per_server,
        idle_timeout,
        pin_auth,
        persistence,
        slow_start,
        drain_timeout,
        send_proxy,
    };
    (pool, name)
}

fn parse_algorithm(t: &mut Table, r: &mut Report) -> Algorithm {
    #[derive(Clone, Copy)]
    enum Kind {
        RoundRobin,
        LeastConn,
        Hash,
    }
    let kind = t.get("algorithm").and_then(|f| {
        f.choice(
            r,
            &[
                ("round-robin", Kind::RoundRobin),
                ("least-conn", Kind::LeastConn),
                ("hash", Kind::Hash),
            ],
        )
    });
    let hash_on = t.get("hash_on");
    match kind {
        Some(Kind::Hash) => Algorithm::Hash(match hash_on {
            None => HashOn::Source,
            Some(f) => crate::persistence::hash_on(&f, r),
        }),
        other => {
            if let Some(f) = hash_on {
                f.fail(r, "applies only with algorithm = \"hash\"");
            }
            match other {
                Some(Kind::LeastConn) => Algorithm::LeastConn,
                _ => Algorithm::RoundRobin,
            }
        }
    }
}

/// The table's required `name`, kept with its location.
pub(crate) fn named(t: &mut Table, r: &mut Report) -> Option<Named> {
    let f = t.require(r, "name")?;
    let name = f.non_empty_str(r)?;
    Some(Named {
        name: name.to_string(),
        path: f.path.clone(),
        span: f.span(),
    })
}

fn parse_servers(t: &mut Table, r: &mut Report) -> Vec<Server> {
    let Some(field) = t.require(r, "servers") else {
        return Vec::new();
    };
    let tables = field.tables(r);
    if tables.is_empty() && field.value.get_ref().is_array() {
        field.fail(r, "a pool needs at least one server");
    }
    let mut names = Vec::new();
    let servers = tables
        .into_iter()
        .map(|st| {
            let (server, name) = parse_server(st, r);
            names.extend(name);
            server
        })
        .collect();
    report_duplicates(&names, "server name", r);
    servers
}

fn parse_server(mut t: Table, r: &mut Report) -> (Server, Option<Named>) {
    let name = named(&mut t, r);
    let address = t.require(r, "address").and_then(|f| socket_addr(&f, r));
    let server = Server {
        name: name.as_ref().map_or("", |n| n.name.as_str()).into(),
        address: address.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        weight: t
            .get("weight")
            .and_then(|f| f.int_in(r, 0, 256))
            .unwrap_or(1) as u32,
        max_connections: t
            .get("max_connections")
            .and_then(|f| f.int_in(r, 1, 10_000_000))
            .map(|n| n as u32),
        backup: t.get("backup").and_then(|f| f.bool(r)).unwrap_or(false),
    };
    t.finish(r);
    (server, name)
}

/// An `IP:port` address; IPv6 as `[::1]:443`.
pub(crate) fn socket_addr(f: &Field, r: &mut Report) -> Option<SocketAddr> {
    let s = f.str(r)?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            f.fail(r, format!("\"{s}\" is not an address; write IP:port, e.g. \"10.0.0.11:443\" or \"[::1]:443\""));
            None
        }
    }
}

/// What `kind` names: a probe, or a mail protocol's greeting dialogue.
#[derive(Clone, Copy)]
enum CheckKind {
    Tcp,
    Http,
    Smtp,
    Imap,
    Pop,
}

fn parse_health(mut t: Table, r: &mut Report, pool_tls: bool) -> HealthCheck {
    let kind = t
        .get("kind")
        .and_then(|f| {
            f.choice(
                r,
                &[
                    ("http", CheckKind::Http),
                    ("tcp", CheckKind::Tcp),
                    ("smtp", CheckKind::Smtp),
                    ("imap", CheckKind::Imap),
                    ("pop", CheckKind::Pop),
                ],
            )
        })
        .unwrap_or(CheckKind::Http);
    let probe = parse_probe(&mut t, r, kind);
    let check = HealthCheck {
        probe,
        tls: parse_check_tls(&mut t, r, pool_tls),
        interval: t.duration_or(r, "interval", Duration::from_secs(5)),
        timeout: t.duration_or(r, "timeout", Duration::from_secs(2)),
        rise: t.get("rise").and_then(|f| f.int_in(r, 1, 100)).unwrap_or(2) as u32,
        fall: t.get("fall").and_then(|f| f.int_in(r, 1, 100)).unwrap_or(3) as u32,
    };
    t.finish(r);
    check
}

fn parse_probe(t: &mut Table, r: &mut Report, kind: CheckKind) -> Probe {
    let ehlo = t.get("ehlo");
    let dialogue = t.get("dialogue");
    if let (Some(f), false) = (&ehlo, matches!(kind, CheckKind::Smtp)) {
        f.fail(r, "applies to kind = \"smtp\"");
    }
    if let (Some(f), false) = (&dialogue, matches!(kind, CheckKind::Tcp)) {
        f.fail(
            r,
            "applies to kind = \"tcp\" (smtp, imap and pop have their own)",
        );
    }
    let line = |s: &str| Some(format!("{s}\r\n"));
    let step = |send: Option<String>, expect: Option<&str>| Step {
        send,
        expect: expect.map(str::to_string),
    };
    match kind {
        CheckKind::Http => Probe::Http(parse_http_probe(t, r)),
        CheckKind::Tcp => match dialogue {
            Some(f) => Probe::Dialogue(parse_dialogue(&f, r)),
            None => Probe::Tcp,
        },
        CheckKind::Smtp => {
            let name = ehlo.and_then(|f| f.non_empty_str(r)).unwrap_or("sluice");
            Probe::Dialogue(vec![
                step(None, Some("220")),
                step(line(&format!("EHLO {name}")), Some("250")),
                step(line("QUIT"), None),
            ])
        }
        CheckKind::Imap => Probe::Dialogue(vec![
            step(None, Some("* OK")),
            step(line("a1 LOGOUT"), None),
        ]),
        CheckKind::Pop => Probe::Dialogue(vec![step(None, Some("+OK")), step(line("QUIT"), None)]),
    }
}

/// `dialogue = [{ expect = "220" }, { send = "EHLO x\r\n", expect = "250" }]`.
fn parse_dialogue(f: &Field, r: &mut Report) -> Vec<Step> {
    let steps: Vec<Step> = f
        .tables(r)
        .into_iter()
        .filter_map(|mut st| {
            let send = st
                .get("send")
                .and_then(|f| f.non_empty_str(r))
                .map(str::to_string);
            let expect = st
                .get("expect")
                .and_then(|f| f.non_empty_str(r))
                .map(str::to_string);
            let (span, path) = (st.span.clone(), st.path.clone());
            st.finish(r);
            if send.is_none() && expect.is_none() {
                r.error(&span, &path, "give send, expect or both");
                return None;
            }
            Some(Step { send, expect })
        })
        .collect();
    if steps.is_empty() && f.value.get_ref().is_array() {
        f.fail(r, "list at least one step");
    }
    steps
}

/// `tls` and `sni`: by default a check goes the way the pool's traffic goes.
fn parse_check_tls(t: &mut Table, r: &mut Report, pool_tls: bool) -> CheckTls {
    let tls = t.get("tls").and_then(|f| f.bool(r));
    let sni = t.get("sni");
    let name = sni
        .as_ref()
        .and_then(|f| f.non_empty_str(r))
        .map(str::to_string);
    match (tls, pool_tls) {
        (Some(false), _) | (None, false) => {
            if let Some(f) = sni {
                f.fail(r, "applies with tls = true");
            }
            if tls.is_none() {
                CheckTls::AsPool
            } else {
                CheckTls::Off
            }
        }
        (_, true) => {
            if let Some(f) = sni {
                f.fail(
                    r,
                    "the pool re-encrypts: its [pool.tls] sni applies to checks too",
                );
            }
            CheckTls::AsPool
        }
        (Some(true), false) => CheckTls::Handshake { sni: name },
    }
}

fn parse_http_probe(t: &mut Table, r: &mut Report) -> HttpProbe {
    let path = t.require(r, "path").and_then(|f| {
        let p = f.str(r)?;
        if !p.starts_with('/') {
            f.fail(r, "must start with \"/\", e.g. \"/owa/healthcheck.htm\"");
        }
        Some(p.to_string())
    });
    HttpProbe {
        method: t
            .get("method")
            .and_then(|f| f.non_empty_str(r))
            .unwrap_or("GET")
            .to_string(),
        path: path.unwrap_or_default(),
        host: t
            .get("host")
            .and_then(|f| f.non_empty_str(r))
            .map(str::to_string),
        expect_status: t
            .get("expect_status")
            .and_then(|f| f.int_in(r, 100, 599))
            .unwrap_or(200) as u16,
        expect_body: t
            .get("expect_body")
            .and_then(|f| f.str(r))
            .map(str::to_string),
    }
}

fn parse_tls(mut t: Table, r: &mut Report, base: &Path) -> UpstreamTls {
    #[derive(Clone, Copy)]
    enum Kind {
        Full,
        Fingerprint,
        None,
    }
    let kind = t
        .get("verify")
        .and_then(|f| {
            f.choice(
                r,
                &[
                    ("full", Kind::Full),
                    ("fingerprint", Kind::Fingerprint),
                    ("none", Kind::None),
                ],
            )
        })
        .unwrap_or(Kind::Full);
    let ca_file = t.get("ca_file");
    let fingerprints = t.get("fingerprints");
    let verify = match kind {
        Kind::Full => Verify::Full {
            ca_file: ca_file.and_then(|f| existing_file(&f, r, base)),
        },
        Kind::Fingerprint => Verify::Fingerprint(parse_fingerprints(fingerprints, &t, r)),
        Kind::None => Verify::None,
    };
    let sni = t
        .get("sni")
        .and_then(|f| f.non_empty_str(r))
        .map(str::to_string);
    t.finish(r);
    UpstreamTls { verify, sni }
}

fn parse_fingerprints(field: Option<Field>, t: &Table, r: &mut Report) -> Vec<[u8; 32]> {
    let Some(field) = field else {
        let path = format!("{}.fingerprints", t.path);
        r.error(&t.span, &path, "is required with verify = \"fingerprint\"");
        return Vec::new();
    };
    let pins: Vec<[u8; 32]> = field
        .strings(r)
        .into_iter()
        .filter_map(|(path, span, s)| {
            let pin = parse_sha256(s);
            if pin.is_none() {
                r.error(&span, &path, "not a SHA-256 fingerprint; write \"sha256:\" and 64 hex digits (colons allowed)");
            }
            pin
        })
        .collect();
    if field
        .value
        .get_ref()
        .as_array()
        .is_some_and(|a| a.is_empty())
    {
        field.fail(r, "list at least one fingerprint");
    }
    pins
}

/// `sha256:AB:CD:...` or bare hex, 32 bytes.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex: String = s
        .trim()
        .strip_prefix("sha256:")
        .unwrap_or(s.trim())
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn existing_file(f: &Field, r: &mut Report, base: &Path) -> Option<std::path::PathBuf> {
    let path = resolve(base, f.non_empty_str(r)?);
    if !path.is_file() {
        f.fail(r, format!("no such file: {}", path.display()));
        return None;
    }
    Some(path)
}

fn parse_timeouts(mut t: Table, r: &mut Report) -> PoolTimeouts {
    let d = PoolTimeouts::default();
    let timeouts = PoolTimeouts {
        connect: t.duration_or(r, "connect", d.connect),
        server: t.duration_or(r, "server", d.server),
    };
    t.finish(r);
    timeouts
}

#[cfg(test)]
mod tests {
    use super::parse_sha256;

    #[test]
    fn fingerprints_in_both_spellings() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&format!("sha256:{hex}")), Some([0xab; 32]));
        assert_eq!(parse_sha256(&colons), Some([0xab; 32]));
        assert_eq!(parse_sha256("sha256:abcd"), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    }
}
