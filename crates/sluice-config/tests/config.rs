//! The configuration file: a complete valid file, and every class of error reported with
//! its line, column and key, all at once.

use std::path::Path;
use std::time::Duration;

use sluice_config::{parse, Algorithm, Condition, Probe, Verify};

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
