//! What operators do to a running proxy: drain and maintenance (with persisted clients,
//! a drain timeout and the return to service), runtime weights, reloads (what changes,
//! what is kept, what a bad file leaves alone, and no request lost under load) and the
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use sluice_lab::client::empty;
use sluice_lab::{Backend, Client};
use sluice_proxy::Mode;

use crate::harness::{pool, service, start, wait_for, Lb};

const FAST_HEALTH: &str =
    "[pool.health]\nkind = \"tcp\"\ninterval = \"50ms\"\nfall = 1\nrise = 3\n";
const COOKIE: &str = "[pool.persistence]\nkind = \"cookie\"\ncookie = \"S\"\n";

fn parse(text: &str) -> sluice_config::Config {
    sluice_config::parse(text, "test.toml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One request on a new connection; the server that answered and the cookie it set.
async fn get(lb: &Lb, cookie: Option<&str>) -> (String, Option<String>) {
    let mut c = Client::connect(lb.addr).await.unwrap();
    let mut req = c.request("GET", "/");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let reply = c.send(req.body(empty()).unwrap()).await.unwrap();
    let set = reply
        .header("set-cookie")
        .map(|s| s.split(';').next().unwrap().to_string());
    (reply.header("x-server").unwrap_or("-").to_string(), set)
}

fn state_of(lb: &Lb, server: &str) -> sluice_proxy::ServerStatus {
    lb.proxy
        .server_status()
        .into_iter()
        .find(|s| s.server == server)
        .unwrap()
}

#[tokio::test]
async fn a_drained_server_keeps_its_persisted_clients_and_maintenance_moves_them() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let servers = [("a", a.addr), ("b", b.addr)];
    let lb = start(&(service("p", "") + &pool("p", &servers, COOKIE))).await;
    let (first, cookie) = get(&lb, None).await;
    let cookie = cookie.expect("a persistence cookie");
    let other = if first == "a" { "b" } else { "a" };
    let control = lb.proxy.control();
    let changed = control.set_mode(None, &first, Mode::Drain, None).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state, "drain");
    assert!(!changed[0].serving);
    for _ in 0..5 {
        assert_eq!(get(&lb, Some(&cookie)).await.0, first, "the session stays");
    }
    for _ in 0..10 {
        let (server, set) = get(&lb, None).await;
        assert_eq!(server, other, "new clients avoid the drained server");
        assert!(set.is_some());
    }
    control.set_mode(None, &first, Mode::Maint, None).unwrap();
    let (server, set) = get(&lb, Some(&cookie)).await;
    assert_eq!(server, other, "maintenance redispatches the session");
    assert!(set.is_some(), "and moves its cookie");
}

#[tokio::test]
async fn ready_after_maintenance_waits_for_fresh_passing_checks() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let servers = [("a", a.addr), ("b", b.addr)];
    let lb = start(&(service("p", "") + &pool("p", &servers, FAST_HEALTH))).await;
    let control = lb.proxy.control();
    control.set_mode(Some("p"), "a", Mode::Maint, None).unwrap();
    let back = control.set_mode(Some("p"), "a", Mode::Ready, None).unwrap();
    assert!(
        !back[0].up && !back[0].serving,
        "not before its checks pass"
    );
    assert_eq!(
        back[0].last_failure.as_deref(),
        Some("returning from maintenance")
    );
    let took = wait_for(Duration::from_secs(3), || state_of(&lb, "a").serving).await;
    assert!(took.is_some(), "back after rise (3) passing checks");
    // Draining and returning does not wait: the server never stopped being checked.
    control.set_mode(Some("p"), "a", Mode::Drain, None).unwrap();
    let back = control.set_mode(Some("p"), "a", Mode::Ready, None).unwrap();
    assert!(back[0].serving);
}

#[tokio::test]
async fn a_drain_timeout_cuts_a_long_response_and_new_requests_go_elsewhere() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let servers = [("a", a.addr), ("b", b.addr)];
    let lb = start(&(service("p", "") + &pool("p", &servers, ""))).await;
    let mut c = Client::connect(lb.addr).await.unwrap();
    let req = c
        .request("GET", "/chunks?n=100&ms=100")
        .body(empty())
        .unwrap();
    let response = c.send_streaming(req).await.unwrap();
    let streaming = response.headers()["x-server"].to_str().unwrap().to_string();
    let started = Instant::now();
    let control = lb.proxy.control();
    let timeout = Some(Duration::from_millis(300));
    control
        .set_mode(None, &streaming, Mode::Drain, timeout)
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
    let took = started.elapsed();
    assert!(
        body.expect("ends long before its 10 s").is_err(),
        "cut, not completed"
    );
    assert!(
        took >= Duration::from_millis(250),
        "not before the timeout: {took:?}"
    );
    let other = if streaming == "a" { "b" } else { "a" };
    for _ in 0..4 {
        assert_eq!(get(&lb, None).await.0, other);
    }
}

#[tokio::test]
async fn runtime_weights_hold_across_reloads_until_the_file_changes_them() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let servers = [("a", a.addr), ("b", b.addr)];
    let text = service("p", "") + &pool("p", &servers, "");
    let lb = start(&text).await;
    let control = lb.proxy.control();
    assert_eq!(control.set_weight("p", "a", 3).unwrap()[0].weight, 3);
    let mut hits = [0, 0];
    for _ in 0..40 {
        hits[usize::from(get(&lb, None).await.0 == "b")] += 1;
    }
    assert_eq!(hits, [30, 10], "3:1");
    control.apply(parse(&text)).unwrap();
    assert_eq!(
        state_of(&lb, "a").weight,
        3,
        "a reload of the same file keeps it"
    );
    let heavier = text.replacen(
        &format!("{{ name = \"a\", address = \"{}\" }}", a.addr),
        &format!("{{ name = \"a\", address = \"{}\", weight = 2 }}", a.addr),
        1,
    );
    control.apply(parse(&heavier)).unwrap();
    assert_eq!(state_of(&lb, "a").weight, 2, "the file changed it");
    assert!(control.set_weight("p", "a", 300).is_err());
    assert!(control.set_weight("p", "nobody", 1).is_err());
}

#[tokio::test]
async fn a_reload_applies_the_difference_and_keeps_what_did_not_change() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    a.stop().await;
    let two = [("a", a.addr), ("b", b.addr)];
    let text = service("p", "") + &pool("p", &two, FAST_HEALTH);
    let lb = start(&text).await;
    let control = lb.proxy.control();
    control.set_mode(Some("p"), "b", Mode::Drain, None).unwrap();
    assert!(wait_for(Duration::from_secs(2), || !lb.is_up("p", "a"))
        .await
        .is_some());
    let three = [("a", a.addr), ("b", b.addr), ("c", c.addr)];
    let second = "[[service]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"p\"\n";
    let next = service("p", "") + second + &pool("p", &three, FAST_HEALTH);
    let changes = control.apply(parse(&next)).unwrap();
    assert!(
        changes.contains(&"pool p: server c added".to_string()),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("service extra: listener")),
        "{changes:?}"
    );
    assert!(
        !lb.is_up("p", "a"),
        "health state kept: still down, no relearning"
    );
    assert_eq!(
        state_of(&lb, "b").state,
        "drain",
        "the operator's mode kept"
    );
    assert_eq!(
        get(&lb, None).await.0,
        "c",
        "the new server serves; b drains"
    );
    let extra = control.local_addrs("extra")[0];
    let reply = Client::connect(extra)
        .await
        .unwrap()
        .get("/")
        .await
        .unwrap();
    assert_eq!(reply.header("x-server"), Some("c"));
    // Back to the first file: the extra listener closes, c goes.
    control.apply(parse(&text)).unwrap();
    assert!(control.local_addrs("extra").is_empty());
    assert!(Client::connect(extra).await.is_err(), "listener closed");
    assert_eq!(lb.proxy.server_status().len(), 2);
    let status = control.status();
    assert_eq!(status.reloads.succeeded, 2);
}

#[tokio::test]
async fn a_reload_that_cannot_bind_keeps_everything_running() {
    let a = Backend::start("a").await;
    let text = service("p", "") + &pool("p", &[("a", a.addr)], "");
    let lb = start(&text).await;
    let control = lb.proxy.control();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let extra =
        format!("[[service]]\nname = \"extra\"\nlisten = \"{busy}\"\ndefault_pool = \"p\"\n");
    let err = control.apply(parse(&(text.clone() + &extra))).unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(
        get(&lb, None).await.0,
        "a",
        "the old configuration still serves"
    );
    let status = control.status();
    assert_eq!((status.reloads.succeeded, status.reloads.failed), (0, 1));
    assert!(!status.reloads.last.unwrap().ok);
}

#[tokio::test]
async fn reloads_every_150ms_under_load_lose_no_request() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let first = service("p", "") + &pool("p", &[("a", a.addr), ("b", b.addr)], "");
    let second = service("p", "") + &pool("p", &[("b", b.addr), ("c", c.addr)], "retries = 1\n");
    let lb = start(&first).await;
    let addr = lb.addr;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + Duration::from_secs(3);
    let mut clients = tokio::task::JoinSet::new();
    for keep_alive in [true, true, true, false, false, false] {
        let (ok, failed) = (ok.clone(), failed.clone());
        clients.spawn(async move {
            let mut conn = None;
            while Instant::now() < until {
                if conn.is_none() {
                    conn = Client::connect(addr).await.ok();
                }
                let answered = match conn.as_mut() {
                    Some(c) => c
                        .get("/")
                        .await
                        .map(|r| r.status.as_u16() == 200)
                        .unwrap_or(false),
                    None => false,
                };
                let counter = if answered { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if !keep_alive {
                    conn = None;
                }
            }
        });
    }
    let control = lb.proxy.control();
    let mut reloads = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let text = if reloads % 2 == 0 { &second } else { &first };
        control.apply(parse(text)).unwrap();
        reloads += 1;
    }
    while clients.join_next().await.is_some() {}
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{reloads} reloads, {ok} requests answered, {failed} lost");
    assert!(reloads >= 15, "{reloads} reloads");
    assert!(ok > 300, "the load ran: {ok}");
    assert_eq!(failed, 0, "lost requests");
}

#[tokio::test]
async fn metrics_count_requests_by_class_and_show_stick_tables() {
    let a = Backend::start("a").await;
    let source = "[pool.persistence]\nkind = \"source\"\n";
    let lb = start(&(service("p", "") + &pool("p", &[("a", a.addr)], source))).await;
    let mut c = Client::connect(lb.addr).await.unwrap();
    for path in ["/", "/", "/status/404", "/status/503"] {
        c.get(path).await.unwrap();
    }
    let text = lb.proxy.control().metrics();
    let line = |l: &str| text.lines().any(|x| x == l);
    let labels = "service=\"web\",route=\"-\",pool=\"p\",server=\"a\"";
    assert!(
        line(&format!(
            "sluice_requests_total{{{labels},class=\"2xx\"}} 2"
        )),
        "{text}"
    );
    assert!(line(&format!(
        "sluice_requests_total{{{labels},class=\"4xx\"}} 1"
    )));
    assert!(line(&format!(
        "sluice_requests_total{{{labels},class=\"5xx\"}} 1"
    )));
    assert!(line(&format!(
        "sluice_response_seconds_count{{{labels}}} 4"
    )));
    assert!(line("sluice_persistence_entries{pool=\"p\"} 1"));
    assert!(line("sluice_server_up{pool=\"p\",server=\"a\"} 1"));
    assert!(line(
        "sluice_server_state{pool=\"p\",server=\"a\",state=\"ready\"} 1"
    ));
    assert!(line("sluice_client_connections 1"));
}
