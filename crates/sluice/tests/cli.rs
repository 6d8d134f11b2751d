//! The `sluice` binary itself: `check`, `run`, graceful stop on SIGTERM, and memory that
//! stays flat while 256 MiB stream through it each way.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http_body_util::BodyExt;
use sluice_lab::{client::empty, Backend, Client};

mod support;

use support::{Sluice, BIN};

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config_for(backend: SocketAddr) -> String {
    format!(
        "[global]\nshutdown_timeout = \"10s\"\naccess_log = false\n\
         [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"p\"\n\
         [[pool]]\nname = \"p\"\nservers = [{{ name = \"cas1\", address = \"{backend}\" }}]\n"
    )
}

#[test]
fn check_accepts_a_valid_file_and_reports_every_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), &config_for("127.0.0.1:1".parse().unwrap()));
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[service]]\nname = \"web\"\nlisten = \"nowhere\"\ndefault_pool = \"missing\"\ntimeout = 3\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for want in [
        format!("{file}:3:10: service[0].listen: \"nowhere\" is not an address"),
        format!("{file}:4:16: service[0].default_pool: no pool named \"missing\""),
        format!("{file}:5:1: service[0].timeout: unknown key"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn version_and_help_answer() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sluice "));
    for sub in ["run", "check"] {
        let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
}

#[test]
fn run_refuses_an_invalid_file_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), "[[service]]\nname = 1\n");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service[0].name: expected a string"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_zero() {
    let backend = Backend::start("cas1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut sluice = Sluice::run(&write_config(dir.path(), &config_for(backend.addr)));
    let addr = sluice.listening();
    let mut client = Client::connect(addr).await.unwrap();
    let req = client
        .request("GET", "/chunks?n=3&ms=400")
        .body(empty())
        .unwrap();
    let response = client.send_streaming(req).await.unwrap();
    sluice.signal(libc::SIGTERM);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the request in flight completes")
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"chunk 0\nchunk 1\nchunk 2\n");
    let status = sluice
        .wait_exit(Duration::from_secs(10))
        .expect("sluice exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        Client::connect(addr).await.is_err(),
        "still accepting after exit"
    );
}

const BIG: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_and_download_stream_with_flat_memory() {
    let backend = Backend::start("cas1").await;
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::run(&write_config(dir.path(), &config_for(backend.addr)));
    let mut client = Client::connect(sluice.listening()).await.unwrap();
    client.get("/").await.unwrap();
    let (rss_before, _) = sluice.memory_kib();

    let req = client
        .request("GET", &format!("/download?bytes={BIG}"))
        .body(empty())
        .unwrap();
    let mut body = client.send_streaming(req).await.unwrap().into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, BIG);

    let req = client
        .request("POST", "/upload")
        .body(sluice_lab::client::generated(BIG))
        .unwrap();
    let reply = client.send(req).await.unwrap();
    assert_eq!(reply.text(), format!("received={BIG}"));

    let (_, peak) = sluice.memory_kib();
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    println!("sluice RSS before {rss_before} KiB, peak {peak} KiB, growth {growth_mib:.1} MiB");
    assert!(
        growth_mib < 32.0,
        "RSS grew {growth_mib:.1} MiB while streaming 2 x 256 MiB"
    );
}

#[test]
fn init_exchange_writes_a_configuration_that_passes_check_for_every_version() {
    for version in ["2010", "2013", "2016", "2019"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("exchange.toml");
        let init = Command::new(BIN)
            .args(["init", "exchange", "--namespace", "mail.example.com"])
            .args([
                "--server",
                "cas1=10.0.0.11",
                "--server",
                "cas2=10.0.0.12:8443",
            ])
            .args(["--version", version, "--output"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let check = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&out)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let pools = if version == "2010" { 8 } else { 9 };
        assert!(
            said.contains(&format!("valid (2 services, {pools} pools)")),
            "{said}"
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("address = \"10.0.0.12:8443\""));
        assert!(
            dir.path().join("mail.example.com.pem").exists(),
            "placeholder certificate"
        );
    }
}

#[test]
fn init_exchange_layer4_writes_sni_routes_and_mail_services_that_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l4.toml");
    let init = Command::new(BIN)
        .args(["init", "exchange", "--namespace", "mail.example.com"])
        .args(["--server", "cas1=10.0.0.11", "--scenario", "l4"])
        .args(["--workload-namespace", "owa=mail.example.com"])
        .args([
            "--workload-namespace",
            "ActiveSync=eas.example.com",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(
        !dir.path().join("mail.example.com.pem").exists(),
        "passthrough needs no certificate"
    );
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    // http, exchange and six mail services; two namespace pools and six mail pools.
    assert!(
        said.contains("valid (8 services, 8 pools)"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("match = { sni = \"eas.example.com\" }"),
        "{text}"
    );
    let refused = Command::new(BIN)
        .args(["init", "exchange", "--namespace", "mail.example.com"])
        .args(["--server", "cas1=10.0.0.11"])
        .args(["--workload-namespace", "ews=ews.example.com"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("--workload-namespace needs --scenario l4"));
}

#[test]
fn init_exchange_refuses_a_malformed_server() {
    let out = Command::new(BIN)
        .args(["init", "exchange", "--namespace", "mail.example.com"])
        .args(["--server", "cas1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected NAME=ADDRESS"), "{err}");
}

/// Which server each of `keys` reaches through `addr` (hashing on `X-AnchorMailbox`).
async fn hashed(addr: SocketAddr, keys: &[String]) -> Vec<String> {
    let mut client = Client::connect(addr).await.unwrap();
    let mut servers = Vec::new();
    for key in keys {
        let req = client
            .request("GET", "/")
            .header("x-anchormailbox", key)
            .body(empty())
            .unwrap();
        let reply = client.send(req).await.unwrap();
        servers.push(reply.header("x-server").unwrap().to_string());
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sluice_processes_hash_every_key_to_the_same_server() {
    let mut backends = Vec::new();
    for i in 1..=4 {
        backends.push(Backend::start(&format!("cas{i}")).await);
    }
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ name = \"{}\", address = \"{}\" }}", b.name, b.addr))
        .collect();
    let config = format!(
        "[global]\naccess_log = false\n\
         [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"p\"\n\
         [[pool]]\nname = \"p\"\nalgorithm = \"hash\"\nhash_on = {{ header = \"X-AnchorMailbox\" }}\n\
         servers = [{}]\n",
        list.join(", ")
    );
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Sluice::run(&write_config(one.path(), &config));
    let second = Sluice::run(&write_config(two.path(), &config));
    let keys: Vec<String> = (0..200).map(|i| format!("user{i}@contoso.lab")).collect();
    let by_first = hashed(first.listening(), &keys).await;
    assert_eq!(by_first, hashed(second.listening(), &keys).await);
    let used: std::collections::BTreeSet<&String> = by_first.iter().collect();
    assert_eq!(used.len(), 4, "the keys spread over every server");
}
