//! `sluice lab`: the interactive lab on its embedded default and on a configuration of
//! one's own, and every incident scenario, each run as a real `sluice` process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sluice_lab::Client;

mod support;

use support::{wait_exit, BIN};

/// A scenario runs in seconds; this bounds a hung one.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

fn scenario(name: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["lab", "--scenario", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let lines = read_lines(&mut child);
    let status = wait_exit(&mut child, SCENARIO_LIMIT)
        .unwrap_or_else(|| panic!("scenario {name} still running after {SCENARIO_LIMIT:?}"));
    let out: Vec<String> = lines.try_iter().collect();
    (status.code(), out.join("\n"))
}

fn read_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn assert_passes(name: &str) {
    let (code, out) = scenario(name);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PASS"), "{out}");
    assert!(!out.contains("[FAIL]"), "{out}");
}

#[test]
fn scenario_root_probe() {
    assert_passes("root-probe");
}

#[test]
fn scenario_owa_coexistence() {
    assert_passes("owa-coexistence");
}

#[test]
fn scenario_ews_2010_affinity() {
    assert_passes("ews-2010-affinity");
}

#[test]
fn scenario_component_offline() {
    assert_passes("component-offline");
}

#[test]
fn scenario_expect_continue() {
    assert_passes("expect-continue");
}

#[test]
fn scenario_ntlm_isolation() {
    assert_passes("ntlm-isolation");
}

#[test]
fn scenario_outlook_streams() {
    assert_passes("outlook-streams");
}

#[test]
fn scenario_drain_for_patching() {
    assert_passes("drain-for-patching");
}

#[test]
fn scenario_layer4_namespaces() {
    assert_passes("layer4-namespaces");
}

#[test]
fn scenarios_are_listed_and_an_unknown_one_is_refused() {
    let (code, out) = scenario("list");
    assert_eq!(code, Some(0));
    for name in [
        "root-probe",
        "owa-coexistence",
        "component-offline",
        "expect-continue",
        "ntlm-isolation",
        "ews-2010-affinity",
        "outlook-streams",
        "drain-for-patching",
        "layer4-namespaces",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    let (code, _) = scenario("no-such-incident");
    assert_eq!(code, Some(1));
}

/// A running `sluice lab` and the banner it printed.
struct Running {
    child: Child,
    lines: Receiver<String>,
    banner: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Result<Running, String> {
        let mut child = Command::new(BIN)
            .arg("lab")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        let lines = read_lines(&mut child);
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("Ctrl-C stops") => break,
                Ok(line) => banner.push(line),
                Err(RecvTimeoutError::Disconnected) => {
                    let err = child.wait_with_output().unwrap().stderr;
                    return Err(String::from_utf8_lossy(&err).into_owned());
                }
                Err(RecvTimeoutError::Timeout) => panic!("no banner in 20s: {banner:?}"),
            }
        }
        Ok(Running {
            child,
            lines,
            banner,
        })
    }

    /// The value printed after `label` on a banner line.
    fn value(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no \"{label}\" in {:?}", self.banner))
            .trim()
            .to_string()
    }

    fn service(&self, name: &str) -> SocketAddr {
        self.value(&format!("service {name} ")).parse().unwrap()
    }

    /// Sends SIGINT; returns the exit code and what was printed after the banner.
    fn interrupt(mut self) -> (Option<i32>, String) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status =
            wait_exit(&mut self.child, Duration::from_secs(20)).expect("an exit after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status.code(), rest.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn lab_runs_the_embedded_default_until_interrupted() {
    let lab = Running::start(&[
        "--servers",
        "2019,2019,2013",
        "--port",
        "0",
        "--http-port",
        "0",
        "--server-port",
        "0",
        "--admin-port",
        "0",
    ])
    .expect("the lab starts");
    let banner = lab.banner.join("\n");
    let dashboard = lab.value("dashboard:");
    let admin: SocketAddr = dashboard
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let status = Client::connect(admin)
        .await
        .unwrap()
        .get("/api/v1/status")
        .await
        .unwrap();
    assert_eq!(status.status, 200, "the admin API answers");
    assert!(status.text().contains("\"state\": \"ready\""));
    assert!(banner.contains("EX3  Exchange 2013"), "{banner}");
    assert!(banner.contains("curl -k"), "{banner}");
    let cert = CertificateDer::from_pem_file(lab.value("certificate:")).expect("a PEM certificate");
    let config = std::fs::read_to_string(lab.value("configuration:")).unwrap();
    assert!(
        config.contains("Written by `sluice init exchange`"),
        "{config}"
    );

    let mut client = Client::connect_tls(lab.service("exchange"), "localhost", cert)
        .await
        .unwrap();
    let health = client.get("/owa/healthcheck.htm").await.unwrap();
    assert_eq!(health.status, 200);
    assert!(
        health.text().starts_with("200 OK<br/>EX"),
        "{}",
        health.text()
    );
    let root = client.get("/").await.unwrap();
    assert_eq!(root.header("location"), Some("/owa/"));
    for _ in 0..3 {
        assert_eq!(
            client.get("/owa/auth/logon.aspx").await.unwrap().status,
            200
        );
    }
    let mut plain = Client::connect(lab.service("http")).await.unwrap();
    let redirect = plain.get("/owa/").await.unwrap();
    assert_eq!(redirect.status, 301);

    let (code, after) = lab.interrupt();
    assert_eq!(code, Some(0), "{after}");
    assert!(after.contains("What each server served"), "{after}");
    let owa_served: u64 = after
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("owa="))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(owa_served, 3, "{after}");
}

/// A port p with p and p + 100 free a moment ago.
fn free_base_port() -> u16 {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        if port < 65_000 && std::net::TcpListener::bind(("127.0.0.1", port + 100)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn lab_runs_your_own_configuration_in_front_of_the_emulated_servers() {
    let dir = tempfile::tempdir().unwrap();
    let mut attempt = 0;
    let (lab, base) = loop {
        attempt += 1;
        let base = free_base_port();
        let config = dir.path().join("mine.toml");
        std::fs::write(
            &config,
            format!(
                "[global]\naccess_log = false\n\
                 [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"cas\"\n\
                 [[pool]]\nname = \"cas\"\nservers = [{{ name = \"cas1\", address = \"127.0.0.1:{base}\" }}]\n\
                 tls = {{ verify = \"none\" }}\n\
                 health = {{ path = \"/owa/healthcheck.htm\", interval = \"200ms\" }}\n"
            ),
        )
        .unwrap();
        let args = [
            "--servers",
            "2019",
            "--server-port",
            &base.to_string(),
            "--config",
        ];
        let config = config.to_str().unwrap();
        match Running::start(&[&args[..], &[config]].concat()) {
            Ok(lab) => break (lab, base),
            // Another process took the port in between: try others, a few times.
            Err(e) if attempt < 4 => eprintln!("retrying: {e}"),
            Err(e) => panic!("the lab did not start: {e}"),
        }
    };
    assert!(lab
        .banner
        .iter()
        .any(|l| l.contains(&format!("127.0.0.1:{base}"))));
    let mut client = Client::connect(lab.service("web")).await.unwrap();
    let page = client.get("/owa/healthcheck.htm").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), "200 OK<br/>EX1.CONTOSO.LAB");
    let (code, _) = lab.interrupt();
    assert_eq!(code, Some(0));
}

#[test]
fn lab_refuses_a_broken_configuration_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "[[service]]\nname = \"web\"\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["lab", "--server-port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:3:"), "{err}");
    assert!(err.contains("listen"), "{err}");
}
