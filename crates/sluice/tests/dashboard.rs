//! The dashboard in a real headless Chromium against a running `sluice run`: the health
//! matrix shows which workload is out on which server, and the drain button, with the
//! token typed into the page, drains a server in every pool.

mod support;

use std::time::Duration;

use serde_json::Value;
use sluice_lab::{Backend, Client};
use support::webdriver::{browser_available, Browser};
use support::{two_workloads, Sluice};

const TOKEN: &str = "dashboard-token-0123456789";

fn cell(server: &str, pool: &str) -> String {
    format!("td[data-server='{server}'][data-pool='{pool}']")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_workload_out_and_drains_a_server() {
    if !browser_available() {
        return;
    }
    let mut b = Vec::new();
    for name in ["owa1", "owa2", "ews1", "ews2"] {
        b.push(Backend::start(name).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = dir.path().join("sluice.toml");
    let text = two_workloads([b[0].addr, b[1].addr], [b[2].addr, b[3].addr], &token_file);
    std::fs::write(&config, text).unwrap();
    let sluice = Sluice::run(&config);
    let admin = sluice.logged_addr("dashboard on http://");
    // OWA goes out on cas2 only; its EWS stays up.
    b[1].stop().await;

    let browser = Browser::start().await;
    browser.open(&format!("http://{admin}/")).await;
    let owa_down = format!(
        "return document.querySelector(\"{}\")?.dataset.state === 'down'",
        cell("cas2", "owa")
    );
    assert!(
        browser.wait_until(&owa_down, Duration::from_secs(10)).await,
        "the matrix shows cas2's OWA down"
    );
    let ews_state = format!(
        "return document.querySelector(\"{}\").dataset.state",
        cell("cas2", "ews")
    );
    assert_eq!(browser.eval(&ews_state).await, "up");
    let reason = format!(
        "return document.querySelector(\"{}\").textContent",
        cell("cas2", "owa")
    );
    let shown = browser.eval(&reason).await;
    assert!(
        shown.as_str().unwrap().contains("refused"),
        "the reason: {shown}"
    );

    browser.type_into("#token", TOKEN).await;
    browser
        .click("button[data-action='drain'][data-server='cas1']")
        .await;
    let drained = format!(
        "return document.querySelector(\"{}\")?.dataset.state === 'drain'",
        cell("cas1", "ews")
    );
    assert!(browser.wait_until(&drained, Duration::from_secs(10)).await);
    let message = browser
        .eval("return document.getElementById('message').textContent")
        .await;
    assert_eq!(message, "cas1: drain in 2 pool(s)");
    drop(browser);

    let status = Client::connect(admin)
        .await
        .unwrap()
        .get("/api/v1/status")
        .await
        .unwrap()
        .text();
    let status: Value = serde_json::from_str(&status).unwrap();
    let cas1_states: Vec<&str> = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["servers"].as_array().unwrap())
        .filter(|s| s["server"] == "cas1")
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        cas1_states,
        ["drain", "drain"],
        "drained in both pools by the page"
    );
}
