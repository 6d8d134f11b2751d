//! Health checks take a dead server out within interval x fall and bring it back after
//! rise; refused connections are retried on another server unseen by the client.

use std::time::Duration;

use sluice_lab::{Backend, Client};

use crate::harness::{pool, service, start, wait_for};

#[tokio::test]
async fn a_dead_server_is_out_within_interval_times_fall_and_back_after_rise() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let check = "[pool.health]\nkind = \"http\"\npath = \"/owa/healthcheck.htm\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 3\n";
    let config = service("p", "") + &pool("p", &[("a", a.addr), ("b", b.addr)], check);
    let lb = start(&config).await;
    assert!(lb.is_up("p", "a") && lb.is_up("p", "b"));
    a.stop().await;
    // Three failed probes 100 ms apart: out after about 300 ms; allow for a slow machine.
    let took = wait_for(Duration::from_secs(3), || !lb.is_up("p", "a")).await;
    let took = took.expect("a is marked down");
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
    assert!(lb.is_up("p", "b"));
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..20 {
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.header("x-server"), Some("b"));
    }
    a.restart().await;
    let took = wait_for(Duration::from_secs(3), || lb.is_up("p", "a")).await;
    assert!(took.expect("a is back") <= Duration::from_millis(1500));
    let before = a.hits();
    for _ in 0..20 {
        client.get("/").await.unwrap();
    }
    assert!(a.hits() - before >= 8, "a takes traffic again");
}

#[tokio::test]
async fn a_failing_health_page_takes_a_server_out_though_it_still_accepts_connections() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // Wants a body the backend never sends.
    let check = "[pool.health]\npath = \"/owa/healthcheck.htm\"\nexpect_body = \"200 OK\"\ninterval = \"50ms\"\nfall = 2\n";
    let config = service("p", "") + &pool("p", &[("a", a.addr), ("b", b.addr)], check);
    let lb = start(&config).await;
    let down = wait_for(Duration::from_secs(3), || {
        !lb.is_up("p", "a") && !lb.is_up("p", "b")
    })
    .await;
    assert!(down.is_some());
    let status = lb.proxy.server_status();
    let reason = status[0].last_failure.clone().unwrap();
    assert!(reason.contains("without \"200 OK\""), "{reason}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_server_unseen_by_the_client() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.stop().await;
    let config = service("p", "") + &pool("p", &[("a", a.addr), ("b", b.addr)], "");
    let lb = start(&config).await;
    for _ in 0..20 {
        // A new connection each time, so no idle connection hides the refusal.
        let mut client = Client::connect(lb.addr).await.unwrap();
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-server"), Some("b"));
    }
    assert_eq!(b.hits(), 20);
}

#[tokio::test]
async fn when_every_server_is_down_the_backup_then_the_sorry_page_answers() {
    let a = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let check = "[pool.health]\npath = \"/\"\ninterval = \"50ms\"\nfall = 1\nrise = 1\n";
    let config = service("p", "[service.sorry]\nstatus = 503\nbody = \"back soon\"\n")
        + &format!(
            "[[pool]]\nname = \"p\"\nservers = [{{ name = \"a\", address = \"{}\" }}, {{ name = \"spare\", address = \"{}\", backup = true }}]\n{check}",
            a.addr, spare.addr
        );
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().header("x-server"), Some("a"));
    a.stop().await;
    wait_for(Duration::from_secs(3), || !lb.is_up("p", "a"))
        .await
        .expect("a down");
    assert_eq!(
        client.get("/").await.unwrap().header("x-server"),
        Some("spare")
    );
    spare.stop().await;
    wait_for(Duration::from_secs(3), || !lb.is_up("p", "spare"))
        .await
        .expect("spare down");
    let mut client = Client::connect(lb.addr).await.unwrap();
    let reply = client.get("/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "back soon");
}

#[tokio::test]
async fn when_every_server_is_found_dead_the_sorry_page_answers_not_a_502() {
    let a = Backend::start("a").await;
    a.stop().await;
    // Whether the first probe or the request's own refused connection takes `a` out
    // first, the client must see the sorry page.
    let check = "[pool.health]\npath = \"/\"\ninterval = \"60s\"\nfall = 1\n";
    let lb = start(&(service("p", "") + &pool("p", &[("a", a.addr)], check))).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let reply = client.get("/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("Service unavailable"),
        "{}",
        reply.text()
    );
    assert!(!lb.is_up("p", "a"));
}
