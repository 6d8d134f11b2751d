//! The configuration file: a complete valid file, and every class of error reported with
//! its line, column and key, all at once.

use std::path::Path;
use std::time::Duration;

use sluice_config::{parse, Algorithm, CheckTls, Condition, Mode, Probe, ProxyProtocol, Verify};

fn errors(text: &str) -> Vec<String> {
    match parse(text, "t.toml", Path::new(".")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const VALID: &str = r#"
[global]
shutdown_timeout = "5s"

[[service]]
name = "mail"
listen = ["127.0.0.1:8443", "[::1]:8443"]
default_pool = "owa"
x_forwarded = false
[service.timeouts]
client_idle = "300s"
request_header = "10s"
[service.sorry]
status = 503
body = "down"

[[service.route]]
name = "ews"
match = { path_prefix = "/EWS/" }
pool = "ews"

[[service.route]]
name = "both"
match = { host = "Mail.Example.com", header = { name = "X-Test", value = "a" } }
pool = "owa"

[[pool]]
name = "ews"
algorithm = "least-conn"
servers = [
  { name = "cas1", address = "10.0.0.11:443", weight = 10 },
  { name = "cas2", address = "10.0.0.12:443", max_connections = 1000 },
  { name = "sorry", address = "10.0.0.99:443", backup = true },
]
[pool.health]
kind = "http"
path = "/ews/healthcheck.htm"
host = "mail.example.com"
expect_body = "200 OK"
interval = "3s"
timeout = "2s"
rise = 2
fall = 3
[pool.tls]
verify = "fingerprint"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
sni = "mail.example.com"
[pool.timeouts]
connect = "5s"
server = "1900s"

[[pool]]
name = "owa"
servers = [{ name = "cas1", address = "10.0.0.11:443" }]
"#;

#[test]
fn a_complete_file_parses_into_the_typed_model() {
    let c = parse(VALID, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(c.global.shutdown_timeout, Duration::from_secs(5));
    let s = &c.services[0];
    assert_eq!(s.listen.len(), 2);
    assert_eq!(s.default_pool, Some(1));
    assert!(!s.x_forwarded);
    assert_eq!(s.sorry.body, "down");
    assert_eq!(s.routes[0].pool, 0);
    assert!(matches!(&s.routes[0].conditions[0], Condition::PathPrefix(p) if p == "/ews/"));
    assert!(matches!(&s.routes[1].conditions[0], Condition::Host(h) if h == "mail.example.com"));
    assert_eq!(s.routes[1].conditions.len(), 2);
    let p = &c.pools[0];
    assert_eq!(p.algorithm, Algorithm::LeastConn);
    assert_eq!(p.servers[0].weight, 10);
    assert_eq!(p.servers[1].weight, 1);
    assert_eq!(p.servers[1].max_connections, Some(1000));
    assert!(p.servers[2].backup);
    let h = p.health.as_ref().unwrap();
    assert_eq!((h.rise, h.fall, h.interval), (2, 3, Duration::from_secs(3)));
    assert!(
        matches!(&h.probe, Probe::Http(hp) if hp.expect_status == 200 && hp.expect_body.as_deref() == Some("200 OK"))
    );
    let tls = p.tls.as_ref().unwrap();
    assert_eq!(tls.verify, Verify::Fingerprint(vec![[0; 32]]));
    assert_eq!(p.timeouts.server, Duration::from_secs(1900));
    assert!(c.pools[1].health.is_none());
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let e = errors("[[service]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"\n");
    assert!(e[0].starts_with("t.toml:3:"), "{e:?}");
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let e = errors(
        "[[service]]\nname = \"a\"\nlistn = \"127.0.0.1:1\"\n[[pool]]\nname = \"p\"\nservers = [{ name = \"s\", address = \"127.0.0.1:2\", wieght = 3 }]\n",
    );
    assert!(
        e.contains(&"t.toml:1:1: service[0].listen: is required".to_string()),
        "{e:?}"
    );
    assert!(
        e.contains(
            &"t.toml:3:1: service[0].listn: unknown key; did you mean \"listen\"?".to_string()
        ),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l.starts_with(
            "t.toml:6:51: pool[0].servers[0].wieght: unknown key; did you mean \"weight\"?"
        )),
        "{e:?}"
    );
}

#[test]
fn dangling_pool_names_are_errors() {
    let e = errors(
        "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\ndefault_pool = \"nope\"\n[[service.route]]\nname = \"r\"\nmatch = { path = \"/x\" }\npool = \"gone\"\n",
    );
    assert_eq!(
        e,
        vec![
            "t.toml:4:16: service[0].default_pool: no pool named \"nope\"",
            "t.toml:8:8: service[0].route[0].pool: no pool named \"gone\"",
        ]
    );
}

#[test]
fn duplicate_names_are_errors() {
    let e = errors(
        r#"[[service]]
name = "a"
listen = "127.0.0.1:1"
[[service]]
name = "a"
listen = "127.0.0.1:1"
[[pool]]
name = "p"
servers = [{ name = "s", address = "127.0.0.1:2" }, { name = "s", address = "127.0.0.1:3" }]
[[pool]]
name = "p"
servers = [{ name = "s", address = "127.0.0.1:2" }]
"#,
    );
    assert!(e.contains(&"t.toml:5:8: service[1].name: duplicate service name \"a\" (first used at service[0].name)".into()), "{e:?}");
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.toml:6:10: service[1].listen: duplicate listen address")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.toml:9:62: pool[0].servers[1].name: duplicate server name")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.toml:11:8: pool[1].name: duplicate pool name")),
        "{e:?}"
    );
}

#[test]
fn bad_addresses_and_values_are_errors() {
    let e = errors(
        r#"[[service]]
name = "a"
listen = ["127.0.0.1", "host:80"]
mode = "udp"
[service.timeouts]
client_idle = "soon"
request_header = "0s"
tls_handshake = "400days"
[[pool]]
name = "p"
algorithm = "random"
servers = [{ name = "s", address = "10.0.0.1:99999", weight = 300 }]
[pool.health]
path = "healthcheck.htm"
rise = "two"
[pool.tls]
verify = "fingerprint"
fingerprints = ["sha256:12"]
"#,
    );
    let expect = [
        "t.toml:3:11: service[0].listen[0]: \"127.0.0.1\" is not an address",
        "t.toml:3:24: service[0].listen[1]: \"host:80\" is not an address",
        "t.toml:4:8: service[0].mode: unknown value \"udp\"; expected one of \"http\"",
        "t.toml:6:15: service[0].timeouts.client_idle: not a duration",
        "t.toml:7:18: service[0].timeouts.request_header: must be longer than zero",
        "t.toml:8:17: service[0].timeouts.tls_handshake: must be at most 365 days",
        "t.toml:11:13: pool[0].algorithm: unknown value \"random\"",
        "t.toml:12:36: pool[0].servers[0].address: \"10.0.0.1:99999\" is not an address",
        "t.toml:12:63: pool[0].servers[0].weight: must be between 0 and 256",
        "t.toml:14:8: pool[0].health.path: must start with \"/\"",
        "t.toml:15:8: pool[0].health.rise: expected an integer, found string",
        "t.toml:18:17: pool[0].tls.fingerprints[0]: not a SHA-256 fingerprint",
    ];
    for x in expect {
        assert!(
            e.iter().any(|l| l.starts_with(x)),
            "missing {x:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn missing_files_and_bad_regexes_are_errors() {
    let e = errors(
        r#"[[service]]
name = "a"
listen = "127.0.0.1:1"
[service.tls]
certificates = [{ cert = "nope.pem", key = "nope.key" }]
[[service.route]]
name = "r"
match = { path_regex = "(unclosed" }
pool = "p"
[[pool]]
name = "p"
servers = [{ name = "s", address = "127.0.0.1:2" }]
"#,
    );
    assert!(
        e.iter().any(
            |l| l.starts_with("t.toml:5:26: service[0].tls.certificates[0].cert: no such file")
        ),
        "{e:#?}"
    );
    assert!(e.iter().any(|l| l.starts_with("t.toml:5:44: service[0].tls.certificates[0].key: no such file")), "{e:#?}");
    assert!(
        e.iter().any(|l| l.starts_with(
            "t.toml:8:24: service[0].route[0].match.path_regex: invalid regular expression"
        )),
        "{e:#?}"
    );
}

#[test]
fn a_file_without_services_is_an_error() {
    assert_eq!(
        errors("")[0],
        "t.toml:1:1: service: at least one [[service]] is required"
    );
}

const RULES: &str = r#"
[[service]]
name = "mail"
listen = "127.0.0.1:8443"
default_pool = "p"
max_body = "10MiB"
expect = "answer"
[[service.rule]]
when = { path = "/" }
redirect = { location = "/owa/" }
[[service.rule]]
when = { path_suffix = "/healthcheck.htm", not = { source = ["10.0.0.0/8", "192.0.2.7"] } }
deny = { status = 403 }
[[service.rule]]
when = { any = [{ method = "TRACE" }, { method = ["DELETE", "put"], path_prefix = "/ecp/" }] }
deny = { status = 405, body = "no\n" }
[[service.rule]]
rewrite_path = { regex = "^/test(.*)$", to = "/owa$1" }
[[service.route]]
name = "rpc"
match = { path_prefix = "/rpc/" }
pool = "p"
max_body = 2147483648
timeouts = { client_idle = "20m", server = "20m" }
[[service.route.rule]]
set_response_header = { name = "X-Workload", value = "rpc" }

[[pool]]
name = "p"
pin_auth = false
servers = [{ name = "a", address = "10.0.0.1:80" }]
"#;

#[test]
fn rules_conditions_and_route_limits_parse() {
    let config = parse(RULES, "t.toml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let service = &config.services[0];
    assert_eq!(service.rules.len(), 4);
    assert_eq!(service.limits.max_body, Some(10 << 20));
    assert_eq!(service.expect, sluice_config::ExpectMode::Answer);
    let Condition::Not(inner) = &service.rules[1].conditions[1] else {
        panic!("not: {:?}", service.rules[1].conditions);
    };
    let Condition::Source(nets) = &inner[0] else {
        panic!("source");
    };
    assert_eq!(nets.len(), 2);
    let Condition::Any(groups) = &service.rules[2].conditions[0] else {
        panic!("any");
    };
    assert!(groups[1]
        .iter()
        .any(|c| matches!(c, Condition::Method(m) if m == &["DELETE", "PUT"])));
    let rpc = &service.routes[0];
    assert_eq!(rpc.limits.max_body, Some(2 << 30));
    assert_eq!(rpc.limits.server, Some(Duration::from_secs(1200)));
    assert_eq!(rpc.rules.len(), 1);
    assert!(!config.pools[0].pin_auth);
}

#[test]
fn rule_errors_are_located() {
    let text = r#"
[[service]]
name = "mail"
listen = "127.0.0.1:8443"
[[service.rule]]
when = { source = "10.0.0.0/33" }
deny = {}
[[service.rule]]
deny = {}
set_host = "x"
[[service.rule]]
when = { path = "/" }
[[service.rule]]
redirect = { status = 200, location = "/x" }
[[service.rule]]
set_header = { name = "Bad Name", value = "a\nb" }
[[service.route]]
name = "r"
match = { method = "GET" }
pool = "p"
max_body = "10 parsecs"
[[pool]]
name = "p"
servers = [{ name = "a", address = "10.0.0.1:80" }]
"#;
    let errs = errors(text);
    let expect = [
        "t.toml:6:19: service[0].rule[0].when.source: \"10.0.0.0/33\" is not an address or network (CIDR)",
        "t.toml:8:1: service[0].rule[1]: give one action per rule, not deny and set_host",
        "t.toml:11:1: service[0].rule[2]: give one action:",
        "t.toml:14:23: service[0].rule[3].redirect.status: a redirect status is 301, 302, 303, 307 or 308",
        "service[0].rule[4].set_header.name: \"Bad Name\" is not a valid header name",
        "service[0].rule[4].set_header.value: header values may hold visible ASCII characters",
        "t.toml:21:12: service[0].route[0].max_body: \"10 parsecs\" is not a size",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
}

const POOL_HEAD: &str =
    "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:80\"\ndefault_pool = \"p\"\n\
[[pool]]\nname = \"p\"\nservers = [{ name = \"s\", address = \"10.0.0.1:443\" }]\n";

#[test]
fn persistence_and_hashing_parse_into_the_model() {
    use sluice_config::{HashOn, OnServerDown, PersistenceKind, SameSite};
    let text = format!(
        "{POOL_HEAD}algorithm = \"hash\"\nhash_on = {{ header = \"X-AnchorMailbox\" }}\nslow_start = \"60s\"\n\
         [pool.persistence]\nkind = \"cookie\"\ncookie = \"SLUICE_OWA\"\ncookie_max_age = \"8h\"\n\
         secure = true\nsame_site = \"lax\"\non_server_down = \"fail\"\n\
         [global]\npersistence_secret = \"sixteen chars at least\"\n"
    );
    let c = parse(&text, "t.toml", Path::new(".")).unwrap();
    let p = &c.pools[0];
    assert_eq!(
        p.algorithm,
        Algorithm::Hash(HashOn::Header("x-anchormailbox".into()))
    );
    assert_eq!(p.slow_start, Some(Duration::from_secs(60)));
    let persistence = p.persistence.as_ref().unwrap();
    assert_eq!(persistence.on_server_down, OnServerDown::Fail);
    let PersistenceKind::Cookie(cookie) = &persistence.kind else {
        panic!("a cookie");
    };
    assert_eq!(cookie.name, "SLUICE_OWA");
    assert_eq!(cookie.path, "/");
    assert_eq!(cookie.max_age, Some(Duration::from_secs(8 * 3600)));
    assert!(cookie.secure && cookie.http_only);
    assert_eq!(cookie.same_site, Some(SameSite::Lax));
    assert!(c.global.persistence_secret.is_some());

    let source = format!(
        "{POOL_HEAD}[pool.persistence]\nkind = \"source\"\nsource_prefix_v4 = 24\nidle_timeout = \"45m\"\n"
    );
    let c = parse(&source, "t.toml", Path::new(".")).unwrap();
    let persistence = c.pools[0].persistence.as_ref().unwrap();
    assert_eq!(
        persistence.kind,
        PersistenceKind::Source {
            prefix_v4: 24,
            prefix_v6: 64
        }
    );
    assert_eq!(persistence.idle_timeout, Duration::from_secs(45 * 60));
    assert_eq!(persistence.max_entries, 100_000);
}

#[test]
fn persistence_errors_are_located() {
    let e = errors(&format!(
        "{POOL_HEAD}hash_on = \"source\"\n[pool.persistence]\nkind = \"source\"\nheader = \"X-A\"\n\
         source_prefix_v4 = 33\nmax_entries = 0\non_server_down = \"retry\"\n\
         [global]\npersistence_secret = \"short\"\n"
    ));
    let expect = [
        "t.toml:8:11: pool[0].hash_on: applies only with algorithm = \"hash\"",
        "t.toml:11:10: pool[0].persistence.header: does not apply to this kind of persistence",
        "t.toml:12:20: pool[0].persistence.source_prefix_v4: must be between 0 and 32",
        "t.toml:13:15: pool[0].persistence.max_entries: must be between 1 and 100000000",
        "t.toml:14:18: pool[0].persistence.on_server_down: unknown value \"retry\"",
        "t.toml:16:22: global.persistence_secret: use at least 16 characters",
    ];
    for x in expect {
        assert!(
            e.iter().any(|l| l.starts_with(x)),
            "missing {x:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    let e = errors(&format!(
        "{POOL_HEAD}[pool.persistence]\nkind = \"header\"\n[[pool]]\nname = \"q\"\n\
         servers = [{{ name = \"s\", address = \"10.0.0.1:443\" }}]\n[pool.persistence]\nkind = \"cookie\"\ncookie = \"a b\"\n"
    ));
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.toml:8:1: pool[0].persistence.header: is required")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|l| l.starts_with(
            "t.toml:15:10: pool[1].persistence.cookie: \"a b\" is not a valid cookie name"
        )),
        "{e:#?}"
    );
}

const LAYER4: &str = r#"
[[service]]
name = "mail"
mode = "tcp"
listen = "127.0.0.1:993"
default_pool = "imap"
max_connections = 5000
splice = false
[service.timeouts]
idle = "30m"
client_hello = "2s"
[[service.route]]
name = "owa"
match = { sni = ["mail.example.com", "*.Example.org"], source = "10.0.0.0/8" }
pool = "imap"

[[pool]]
name = "imap"
send_proxy = "v2"
servers = [{ name = "mbx1", address = "10.0.0.21:993" }]
[pool.health]
kind = "imap"
tls = true
sni = "imap.example.com"
[pool.persistence]
kind = "source"

[[pool]]
name = "smtp"
servers = [{ name = "mbx1", address = "10.0.0.21:25" }]
[pool.health]
kind = "smtp"
ehlo = "lb.example.com"
"#;

#[test]
fn layer4_services_and_mail_checks_parse_into_the_model() {
    let c = parse(LAYER4, "t.toml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.services[0];
    assert_eq!(s.mode, Mode::Tcp);
    assert_eq!((s.max_connections, s.splice), (Some(5000), false));
    assert_eq!(s.timeouts.idle, Duration::from_secs(1800));
    assert_eq!(s.timeouts.client_hello, Duration::from_secs(2));
    match &s.routes[0].conditions[0] {
        Condition::Sni(names) => assert_eq!(names, &["mail.example.com", "*.example.org"]),
        other => panic!("{other:?}"),
    }
    let imap = &c.pools[0];
    assert_eq!(imap.send_proxy, Some(ProxyProtocol::V2));
    let check = imap.health.as_ref().unwrap();
    assert_eq!(
        check.tls,
        CheckTls::Handshake {
            sni: Some("imap.example.com".into())
        }
    );
    let Probe::Dialogue(steps) = &check.probe else {
        panic!("{:?}", check.probe)
    };
    assert_eq!(steps[0].expect.as_deref(), Some("* OK"));
    let Probe::Dialogue(smtp) = &c.pools[1].health.as_ref().unwrap().probe else {
        panic!()
    };
    assert_eq!(smtp[1].send.as_deref(), Some("EHLO lb.example.com\r\n"));
    assert_eq!(smtp[1].expect.as_deref(), Some("250"));
}

#[test]
fn layer4_mistakes_are_located_and_explained() {
    let text = r#"
[[service]]
name = "l4"
mode = "tcp"
listen = "127.0.0.1:443"
default_pool = "reencrypt"
expect = "answer"
[service.tls]
certificates = []
[service.timeouts]
client_idle = "5s"
[[service.route]]
name = "r"
match = { path_prefix = "/owa", sni = "bad name" }
pool = "cookie"

[[service]]
name = "web"
listen = "127.0.0.1:80"
default_pool = "proxied"
[[service.route]]
name = "r"
match = { sni = "mail.example.com" }
pool = "proxied"

[[pool]]
name = "reencrypt"
servers = [{ name = "a", address = "10.0.0.1:443" }]
[pool.tls]
verify = "none"
[pool.health]
kind = "http"
path = "/"
sni = "x.example.com"

[[pool]]
name = "cookie"
servers = [{ name = "a", address = "10.0.0.1:443" }]
[pool.persistence]
kind = "cookie"

[[pool]]
name = "proxied"
send_proxy = "v1"
servers = [{ name = "a", address = "10.0.0.1:443" }]
[pool.health]
kind = "http"
path = "/"
ehlo = "x"
dialogue = [{ }]
"#;
    let e = errors(text);
    let expect = [
        "t.toml:6:16: service[0].default_pool: pool \"reencrypt\" re-encrypts ([pool.tls])",
        "t.toml:7:10: service[0].expect: applies to mode = \"http\" services",
        "t.toml:8:1: service[0].tls: applies to mode = \"http\" services",
        "t.toml:11:15: service[0].timeouts.client_idle: applies to mode = \"http\" services; a tcp service has idle and client_hello",
        "t.toml:14:25: service[0].route[0].match.path_prefix: reads HTTP requests",
        "t.toml:14:39: service[0].route[0].match.sni: \"bad name\" is not a server name",
        "t.toml:15:8: service[0].route[0].pool: pool \"cookie\" persists or hashes by a cookie or header",
        "t.toml:20:16: service[1].default_pool: pool \"proxied\" sends the PROXY protocol",
        "t.toml:24:8: service[1].route[0].pool: pool \"proxied\" sends the PROXY protocol",
        "t.toml:23:17: service[1].route[0].match.sni: applies to mode = \"tcp\" services",
        "t.toml:34:7: pool[0].health.sni: the pool re-encrypts",
        "t.toml:49:8: pool[2].health.ehlo: applies to kind = \"smtp\"",
        "t.toml:50:12: pool[2].health.dialogue: applies to kind = \"tcp\"",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in\n{}",
            e.join("\n")
        );
    }
}

#[test]
fn busy_polling_defaults_on_and_is_bounded() {
    let c = parse(VALID, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(c.global.busy_poll, Duration::from_micros(2));
    let off = VALID.replace("[global]\n", "[global]\nbusy_poll = \"0us\"\n");
    let c = parse(&off, "t.toml", Path::new(".")).expect("valid");
    assert_eq!(c.global.busy_poll, Duration::ZERO);
    let long = VALID.replace("[global]\n", "[global]\nbusy_poll = \"2ms\"\n");
    assert_eq!(
        errors(&long),
        ["t.toml:3:13: global.busy_poll: must be at most 1ms"]
    );
}
