//! The generated Exchange configuration for every version: it validates, and a live
//! sluice running it routes each workload's path to that workload's pool, re-encrypting
//! to servers pinned by fingerprint.

use std::net::SocketAddr;
use std::path::Path;

use sluice_exchange::{render, ProbeTiming, Scenario, Template, Version, WORKLOADS};
use sluice_lab::{Backend, Client, TestCert};
use sluice_proxy::{AccessLog, Proxy};

const NAMESPACE: &str = "mail.example.com";

fn template(dir: &Path, version: Version, servers: &[&Backend], fingerprint: &str) -> Template {
    let front = TestCert::new(&[NAMESPACE]);
    let (cert, key) = front.write(dir, "front");
    Template {
        namespace: NAMESPACE.into(),
        servers: servers.iter().map(|b| (b.name.clone(), b.addr)).collect(),
        version,
        cert,
        key,
        fingerprints: vec![fingerprint.into()],
        https_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        monitoring: vec!["10.0.0.0/8".into()],
        probe: ProbeTiming::default(),
        admin_listen: sluice_exchange::ADMIN_LISTEN,
        admin_token_file: None,
        scenario: sluice_exchange::Scenario::Layer7,
        mail: Vec::new(),
    }
}

#[tokio::test]
async fn every_version_validates_and_routes_each_workload_to_its_pool() {
    let server_cert = TestCert::new(&[NAMESPACE]);
    let cas1 = Backend::start_tls("cas1", server_cert.server_config()).await;
    let cas2 = Backend::start_tls("cas2", server_cert.server_config()).await;
    let pin = sluice_proxy::tls::hex(&sluice_proxy::tls::fingerprint(&server_cert.der));
    for version in Version::ALL {
        let dir = tempfile::tempdir().unwrap();
        let t = template(dir.path(), version, &[&cas1, &cas2], &pin);
        let text = render(&t).unwrap();
        let config = sluice_config::parse(&text, "exchange.toml", dir.path())
            .unwrap_or_else(|e| panic!("{version}: {e}\n{text}"));
        let expected: Vec<&str> = WORKLOADS
            .iter()
            .filter(|w| w.since <= version)
            .map(|w| w.name)
            .collect();
        let pools: Vec<&str> = config.pools.iter().map(|p| &*p.name).collect();
        assert_eq!(pools, expected, "{version}");
        assert_eq!(version == Version::V2010, !pools.contains(&"mapi"));
        let (log, lines) = AccessLog::channel(1000);
        let proxy = Proxy::start(config, log).await.unwrap();
        let https = proxy.local_addrs("exchange")[0];
        let front = std::fs::read(&t.cert).unwrap();
        let trusted = rustls_pem(&front);
        let mut client = Client::connect_tls(https, NAMESPACE, trusted)
            .await
            .unwrap();
        for w in WORKLOADS.iter().filter(|w| w.since <= version) {
            // Exchange spells its directories in mixed case; routing ignores case.
            let path = format!("{}/Some/Page", mixed_case(w.prefix));
            let reply = client.get(&path).await.unwrap();
            assert_eq!(reply.status, 200, "{version} {path}");
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            assert!(
                line.contains(&format!(" pool={} ", w.name)),
                "{version} {path}: {line}"
            );
        }
        let root = client.get("/").await.unwrap();
        assert_eq!(
            (root.status.as_u16(), root.header("location")),
            (302, Some("/owa/"))
        );
        let probe = client.get("/owa/healthcheck.htm").await.unwrap();
        assert_eq!(
            probe.status, 403,
            "loopback is outside the monitoring network"
        );
        let http = proxy.local_addrs("http")[0];
        let mut plain = Client::connect(http).await.unwrap().host(NAMESPACE);
        let redirect = plain.get("/ews/exchange.asmx").await.unwrap();
        assert_eq!(redirect.status, 301);
        assert_eq!(
            redirect.header("location"),
            Some("https://mail.example.com/ews/exchange.asmx")
        );
        proxy.shutdown(std::time::Duration::from_secs(1)).await;
    }
    assert!(cas1.hits() > 0 && cas2.hits() > 0, "both servers served");
}

fn mixed_case(prefix: &str) -> String {
    prefix
        .char_indices()
        .map(|(i, c)| {
            if i % 2 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The DER of the first certificate in a PEM file.
fn rustls_pem(pem: &[u8]) -> rustls_pki_types::CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem).expect("a PEM certificate")
}

fn plain_template(version: Version) -> Template {
    let addr: SocketAddr = "10.0.0.11:443".parse().unwrap();
    Template {
        namespace: NAMESPACE.into(),
        servers: vec![("cas1".into(), addr)],
        version,
        cert: "c.pem".into(),
        key: "c.key".into(),
        fingerprints: vec![],
        https_listen: "0.0.0.0:443".parse().unwrap(),
        http_listen: "0.0.0.0:80".parse().unwrap(),
        monitoring: vec![],
        probe: ProbeTiming::default(),
        admin_listen: sluice_exchange::ADMIN_LISTEN,
        admin_token_file: None,
        scenario: sluice_exchange::Scenario::Layer7,
        mail: Vec::new(),
    }
}

#[test]
fn the_persistence_each_workload_needs_is_the_default() {
    use sluice_config::{PersistenceKind, Pool};
    let dir = tempfile::tempdir().unwrap();
    for version in Version::ALL {
        let mut t = plain_template(version);
        let front = TestCert::new(&[NAMESPACE]);
        (t.cert, t.key) = front.write(dir.path(), "front");
        let config = sluice_config::parse(&render(&t).unwrap(), "t.toml", dir.path()).unwrap();
        let pool =
            |name: &str| -> &Pool { config.pools.iter().find(|p| *p.name == *name).unwrap() };
        for shared in ["owa", "ecp"] {
            let kind = &pool(shared).persistence.as_ref().unwrap().kind;
            assert!(
                matches!(kind, PersistenceKind::Cookie(c) if c.name == sluice_exchange::LOGIN_COOKIE && c.secure),
                "{version} {shared}: {kind:?}"
            );
        }
        let ews = pool("ews").persistence.as_ref();
        if version == Version::V2010 {
            let ews = ews.expect("2010 EWS needs affinity");
            assert!(matches!(
                ews.kind,
                PersistenceKind::Source { prefix_v4: 32, .. }
            ));
            assert_eq!(ews.idle_timeout, std::time::Duration::from_secs(45 * 60));
        } else {
            assert!(ews.is_none(), "{version}");
        }
        assert!(pool("activesync").persistence.is_none());
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let addr: SocketAddr = "10.0.0.11:443".parse().unwrap();
    let base = plain_template(Version::V2019);
    let text = render(&base).unwrap();
    assert!(
        text.contains("verify = \"full\""),
        "no fingerprints: chain verification"
    );
    let mut t = base.clone();
    t.namespace = "mail example".into();
    assert!(render(&t)
        .unwrap_err()
        .to_string()
        .contains("not a host name"));
    let mut t = base.clone();
    t.servers.push(("cas1".into(), addr));
    assert!(render(&t).unwrap_err().to_string().contains("given twice"));
    let mut t = base;
    t.servers.clear();
    assert!(render(&t).is_err());
}

#[test]
fn the_layer4_variants_pass_tls_through_with_the_checks_each_design_has() {
    use sluice_config::{CheckTls, Condition, Mode, Probe};
    let mut t = plain_template(Version::V2019);
    t.mail = sluice_exchange::mail_on("0.0.0.0".parse().unwrap());
    t.scenario = Scenario::Layer4 { namespaces: vec![] };
    let single = sluice_config::parse(&render(&t).unwrap(), "t.toml", Path::new(".")).unwrap();
    let https = &single.services[1];
    assert_eq!((https.mode, https.tls.is_none()), (Mode::Tcp, true));
    let pools: Vec<&str> = single.pools.iter().map(|p| &*p.name).collect();
    assert_eq!(
        pools,
        [
            "exchange",
            "smtp",
            "submission",
            "imap",
            "imaps",
            "pop",
            "pops"
        ]
    );
    let check = single.pools[0].health.as_ref().unwrap();
    assert!(matches!(&check.probe, Probe::Http(h) if h.path == "/owa/healthcheck.htm"));
    assert!(matches!(&check.tls, CheckTls::Handshake { sni: Some(n) } if n == NAMESPACE));
    let imaps = single.pools.iter().find(|p| &*p.name == "imaps").unwrap();
    assert_eq!(imaps.servers[0].address, "10.0.0.11:993".parse().unwrap());
    assert!(matches!(
        imaps.health.as_ref().unwrap().probe,
        Probe::Dialogue(_)
    ));

    t.scenario = Scenario::Layer4 {
        namespaces: vec![
            ("activesync".into(), "eas.example.com".into()),
            ("ews".into(), "ews.example.com".into()),
        ],
    };
    t.mail.clear();
    let split = sluice_config::parse(&render(&t).unwrap(), "t.toml", Path::new(".")).unwrap();
    let https = &split.services[1];
    let routes: Vec<(&str, &[Condition])> = https
        .routes
        .iter()
        .map(|r| (&*r.name, r.conditions.as_slice()))
        .collect();
    assert!(matches!(routes[0], ("activesync", [Condition::Sni(n)]) if n == &["eas.example.com"]));
    let ews = split.pools.iter().find(|p| &*p.name == "ews").unwrap();
    assert!(
        matches!(&ews.health.as_ref().unwrap().probe, Probe::Http(h) if h.path == "/ews/healthcheck.htm" && h.host.as_deref() == Some("ews.example.com"))
    );

    t.scenario = Scenario::Layer4 {
        namespaces: vec![("mapi".into(), "mapi.example.com".into())],
    };
    t.version = Version::V2010;
    let e = render(&t).unwrap_err().to_string();
    assert!(e.contains("no workload \"mapi\" in Exchange 2010"), "{e}");
}
