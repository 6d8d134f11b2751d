//! Operating a running `sluice run` from outside: `sluice ctl` against the admin API
//! (reads open on loopback, changes only with the token, each refusal logged), draining
//! a server across every pool holding it, and reloads by SIGHUP and by the API that
//! apply a good file and reject a bad one with its location, losing nothing.

mod support;

use std::time::Duration;

use sluice_lab::{Backend, Client};
use support::{ctl, two_workloads, Sluice};

const TOKEN: &str = "test-admin-token-0123456789";

async fn served_by(addr: std::net::SocketAddr, path: &str) -> String {
    let reply = Client::connect(addr)
        .await
        .unwrap()
        .get(path)
        .await
        .unwrap();
    reply.header("x-server").unwrap_or("-").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drains_a_server_in_every_pool_and_reloads_apply_or_name_their_errors() {
    let mut backends = Vec::new();
    for name in ["owa1", "owa2", "ews1", "ews2", "owa3"] {
        backends.push(Backend::start(name).await);
    }
    let addr = |i: usize| backends[i].addr;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("sluice.toml");
    let text = two_workloads([addr(0), addr(1)], [addr(2), addr(3)], &token_file);
    std::fs::write(&config, &text).unwrap();
    let sluice = Sluice::run(&config);
    let web = sluice.logged_addr("listening on ");
    let admin = sluice.logged_addr("dashboard on http://").to_string();
    let token = token_file.to_str().unwrap();

    let (code, out, _) = ctl(&["--admin", &admin, "status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("owa/cas1") && out.contains("ews/cas2"),
        "{out}"
    );

    let (code, _, err) = ctl(&["--admin", &admin, "drain", "cas1"]);
    assert_eq!(code, 1, "refused without the token");
    assert!(err.starts_with("401"), "{err}");
    let refused = "admin: refused POST /api/v1/servers/cas1/state";
    assert!(sluice.wait_line(refused, Duration::from_secs(5)).is_some());

    let (code, out, err) = ctl(&["--admin", &admin, "--token-file", token, "drain", "cas1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("owa/cas1") && out.contains("ews/cas1"),
        "{out}"
    );
    assert_eq!(out.matches(" drain ").count(), 2, "{out}");
    for _ in 0..4 {
        assert_eq!(served_by(web, "/owa/").await, "owa2");
        assert_eq!(served_by(web, "/ews/x").await, "ews2");
    }
    let cfg = config.to_str().unwrap();
    let (code, _, err) = ctl(&["--config", cfg, "--admin", &admin, "ready", "cas1"]);
    assert_eq!(code, 0, "the token comes from the configuration: {err}");

    // A broken file: rejected with its location, the old configuration keeps serving.
    std::fs::write(&config, text.replace("[global]", "[global]\nbogus = 1")).unwrap();
    sluice.signal(libc::SIGHUP);
    let rejected = sluice
        .wait_line("reload rejected", Duration::from_secs(5))
        .expect("the reload is rejected");
    assert!(
        rejected.contains("sluice.toml:2:1: global.bogus: unknown key"),
        "{rejected}"
    );
    assert_eq!(served_by(web, "/ews/x").await.len(), 4, "still serving");

    // A good one adds a server; the API reload reports the change too.
    let three = text.replace(
        &format!("{{ name = \"cas2\", address = \"{}\" }}]", addr(1)),
        &format!(
            "{{ name = \"cas2\", address = \"{}\" }}, {{ name = \"cas3\", address = \"{}\" }}]",
            addr(1),
            addr(4)
        ),
    );
    std::fs::write(&config, three).unwrap();
    sluice.signal(libc::SIGHUP);
    assert!(sluice
        .wait_line(
            "reload: pool owa: server cas3 added",
            Duration::from_secs(5)
        )
        .is_some());
    let (code, out, err) = ctl(&["--admin", &admin, "--token-file", token, "reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no change"), "{out}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(served_by(web, "/owa/").await);
    }
    assert!(seen.contains("owa3"), "{seen:?}");

    let (code, out, _) = ctl(&[
        "--admin",
        &admin,
        "--token-file",
        token,
        "weight",
        "owa",
        "cas3",
        "300",
    ]);
    assert_eq!(code, 1, "{out}");
    let metrics = Client::connect(admin.parse().unwrap())
        .await
        .unwrap()
        .get("/metrics")
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("sluice_reloads_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_reloads_total{outcome=\"applied\"} 2"));
}
