//! The TLS defaults a client sees, checked with OpenSSL's own client: TLS 1.2 and 1.3
//! only, forward-secret AEAD suites only (Mozilla's "intermediate" profile, less its
//! finite-field DHE suites), and no renegotiation.

use std::process::Stdio;
use std::time::Duration;

use sluice_lab::{Backend, TestCert};

use crate::harness::{pool, service_with_tls, start_in, Lb};

/// Whether this machine has `openssl`; CI (`CI` set) must.
fn have_openssl() -> bool {
    let present = std::process::Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present && std::env::var_os("CI").is_some() {
        panic!("CI must install Debian's openssl (.ci/run does)");
    }
    present
}

/// Runs `openssl s_client` with `args` against the balancer, sending `input`; returns
/// whether a handshake completed, and what the client printed.
async fn s_client(lb: &Lb, args: &[&str], input: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(lb.addr.to_string())
        .args(["-servername", "mail.contoso.com"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes()).await;
    // s_client acts on its input lines one by one; leave it time before the EOF.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("openssl finishes")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let done = text.contains("\nNew, TLSv1.") && !text.contains("Cipher is (NONE)");
    (done, text)
}

async fn tls_service(dir: &std::path::Path) -> (Lb, Backend) {
    let cert = TestCert::new(&["mail.contoso.com"]);
    cert.write(dir, "site");
    let backend = Backend::start("cas1").await;
    let config = service_with_tls("site", "", "") + &pool("p", &[("cas1", backend.addr)], "");
    (start_in(&config, dir).await, backend)
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lb, _backend) = tls_service(dir.path()).await;
    // SECLEVEL=0 lets OpenSSL's client offer what it would refuse itself, so that any
    // refusal seen is sluice's.
    let old = "DEFAULT@SECLEVEL=0";
    let accepted: &[&[&str]] = &[
        &["-tls1_3"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
    ];
    for args in accepted {
        let (done, text) = s_client(&lb, args, "").await;
        assert!(done, "{args:?} refused:\n{text}");
    }
    let refused: &[&[&str]] = &[
        &["-tls1_1", "-cipher", old],
        &["-tls1", "-cipher", old],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"],
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0",
        ],
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256:@SECLEVEL=0"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0"],
    ];
    for args in refused {
        let (done, text) = s_client(&lb, args, "").await;
        assert!(!done, "{args:?} accepted:\n{text}");
    }
}

#[tokio::test]
async fn a_client_asking_to_renegotiate_is_refused() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lb, _backend) = tls_service(dir.path()).await;
    // `R` on its own line asks s_client to renegotiate (TLS 1.2 only).
    let (done, text) = s_client(&lb, &["-tls1_2"], "R\n").await;
    assert!(done, "{text}");
    assert!(text.contains("RENEGOTIATING"), "{text}");
    assert!(
        text.contains("no renegotiation"),
        "renegotiation was not refused:\n{text}"
    );
    // The handshake said so up front (RFC 5746's renegotiation_info).
    assert!(text.contains("Secure Renegotiation IS supported"), "{text}");
}
