//! Persistence and hashing through a live proxy: the inserted cookie (kept, moved when its
//! server dies, shared by two pools, never seen by the servers), source-address groups,
//! a header, `on_server_down = "fail"`, bounded tables, and slow start.

use std::net::IpAddr;
use std::time::Duration;

use sluice_lab::client::{empty, Reply};
use sluice_lab::{Backend, Client};

use crate::harness::{pool, service, start, wait_for, Lb};

const COOKIE: &str = "SLUICE_OWA";

async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::new();
    for i in 1..=n {
        all.push(Backend::start(&format!("cas{i}")).await);
    }
    all
}

fn servers(b: &[Backend]) -> Vec<(&str, std::net::SocketAddr)> {
    b.iter().map(|b| (b.name.as_str(), b.addr)).collect()
}

const FAST_HEALTH: &str =
    "[pool.health]\nkind = \"tcp\"\ninterval = \"50ms\"\nfall = 1\nrise = 1\n";

fn cookie_persistence(extra: &str) -> String {
    format!("[pool.persistence]\nkind = \"cookie\"\ncookie = \"{COOKIE}\"\nsecure = true\n{extra}")
}

/// A browser: keeps the persistence cookie it is given and sends it back.
struct Browser {
    jar: Option<String>,
}

impl Browser {
    async fn get(&mut self, lb: &Lb, path: &str) -> Reply {
        let mut c = Client::connect(lb.addr).await.unwrap();
        let mut req = c.request("GET", path);
        if let Some(cookie) = &self.jar {
            req = req.header("cookie", format!("theme=dark; {cookie}"));
        }
        let reply = c.send(req.body(empty()).unwrap()).await.unwrap();
        if let Some(set) = reply.header("set-cookie") {
            self.jar = Some(set.split(';').next().unwrap().to_string());
        }
        reply
    }
}

fn served_by(reply: &Reply) -> String {
    reply.header("x-server").unwrap_or("?").to_string()
}

#[tokio::test]
async fn the_cookie_holds_a_browser_on_one_server_and_moves_it_when_that_server_dies() {
    let b = backends(3).await;
    let config =
        service("p", "") + &pool("p", &servers(&b), &(cookie_persistence("") + FAST_HEALTH));
    let lb = start(&config).await;
    let mut browser = Browser { jar: None };
    let first = browser.get(&lb, "/headers").await;
    let home = served_by(&first);
    let set = first.header("set-cookie").expect("a persistence cookie");
    assert!(
        set.starts_with(&format!("{COOKIE}=")) && set.contains("Secure; HttpOnly"),
        "{set}"
    );
    assert!(
        !set.contains("cas") && !set.contains("127.0.0.1"),
        "the value reveals nothing: {set}"
    );
    assert_eq!(first.header("cache-control"), Some("private"));
    for _ in 0..199 {
        let reply = browser.get(&lb, "/headers").await;
        assert_eq!(served_by(&reply), home);
        assert!(reply.header("set-cookie").is_none(), "set again on a hit");
        let seen = reply.text();
        assert!(
            seen.contains("theme=dark") && !seen.contains(COOKIE),
            "the server saw: {seen}"
        );
    }
    let log = lb.log_lines();
    assert_eq!(
        log.iter().filter(|l| l.contains("persist=hit")).count(),
        199
    );
    assert_eq!(log.iter().filter(|l| l.contains("persist=new")).count(), 1);

    let dying = b.iter().find(|s| s.name == home).unwrap();
    dying.stop().await;
    wait_for(Duration::from_secs(5), || !lb.is_up("p", &home))
        .await
        .expect("marked down");
    let moved = browser.get(&lb, "/").await;
    let new_home = served_by(&moved);
    assert_ne!(new_home, home);
    assert!(
        moved.header("set-cookie").is_some(),
        "the cookie is replaced"
    );
    for _ in 0..20 {
        assert_eq!(served_by(&browser.get(&lb, "/").await), new_home);
    }
    assert!(lb
        .log_lines()
        .iter()
        .any(|l| l.contains("persist=redispatched")));
}

#[tokio::test]
async fn pools_naming_the_same_cookie_share_sessions() {
    let b = backends(3).await;
    let routes =
        "[[service.route]]\nname = \"ecp\"\nmatch = { path_prefix = \"/ecp/\" }\npool = \"ecp\"\n";
    let config = service("owa", routes)
        + &pool("owa", &servers(&b), &cookie_persistence(""))
        + &pool("ecp", &servers(&b), &cookie_persistence(""));
    let lb = start(&config).await;
    for _ in 0..10 {
        let mut browser = Browser { jar: None };
        let owa = served_by(&browser.get(&lb, "/owa/").await);
        for _ in 0..5 {
            let ecp = browser.get(&lb, "/ecp/").await;
            assert_eq!(served_by(&ecp), owa, "ECP follows OWA's server");
            assert!(ecp.header("set-cookie").is_none());
        }
    }
}

#[tokio::test]
async fn a_cookie_naming_no_server_is_balanced_and_replaced() {
    let b = backends(2).await;
    let config = service("p", "") + &pool("p", &servers(&b), &cookie_persistence(""));
    let lb = start(&config).await;
    let mut browser = Browser {
        jar: Some(format!("{COOKIE}=cas1")),
    };
    let reply = browser.get(&lb, "/").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("set-cookie").unwrap().starts_with(COOKIE));
    assert!(lb.log_lines().iter().any(|l| l.contains("persist=new")));
}

async fn from(lb: &Lb, ip: &str) -> String {
    let mut c = Client::connect_from(ip.parse::<IpAddr>().unwrap(), lb.addr)
        .await
        .unwrap();
    served_by(&c.get("/").await.unwrap())
}

#[tokio::test]
async fn source_persistence_groups_a_slash_24() {
    let b = backends(3).await;
    let persistence =
        "[pool.persistence]\nkind = \"source\"\nsource_prefix_v4 = 24\nidle_timeout = \"45m\"\n";
    let lb = start(&(service("p", "") + &pool("p", &servers(&b), persistence))).await;
    let first = from(&lb, "127.0.5.10").await;
    for host in [11, 99, 200, 254, 10] {
        assert_eq!(from(&lb, &format!("127.0.5.{host}")).await, first);
    }
    from(&lb, "127.0.6.10").await;
    assert_eq!(lb.proxy.persistence_entries(), vec![("p".to_string(), 2)]);
}

#[tokio::test]
async fn stick_tables_stay_within_max_entries() {
    let b = backends(2).await;
    let persistence = "[pool.persistence]\nkind = \"source\"\nmax_entries = 5\n";
    let lb = start(&(service("p", "") + &pool("p", &servers(&b), persistence))).await;
    for host in 1..=40 {
        from(&lb, &format!("127.0.7.{host}")).await;
    }
    assert_eq!(lb.proxy.persistence_entries(), vec![("p".to_string(), 5)]);
}

#[tokio::test]
async fn header_persistence_follows_the_authorization_header() {
    let b = backends(3).await;
    let persistence = "[pool.persistence]\nkind = \"header\"\nheader = \"Authorization\"\n";
    let lb = start(&(service("p", "") + &pool("p", &servers(&b), persistence))).await;
    for user in ["amRvZTp4", "YWxpY2U6eA==", "Ym9iOng="] {
        let mut homes = std::collections::BTreeSet::new();
        for _ in 0..15 {
            let mut c = Client::connect(lb.addr).await.unwrap();
            let req = c
                .request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping")
                .header("authorization", format!("Basic {user}"))
                .body(empty())
                .unwrap();
            homes.insert(served_by(&c.send(req).await.unwrap()));
        }
        assert_eq!(homes.len(), 1, "{user} went to {homes:?}");
    }
}

#[tokio::test]
async fn on_server_down_fail_answers_503_instead_of_moving_the_session() {
    let b = backends(2).await;
    let extra = cookie_persistence("on_server_down = \"fail\"\n") + FAST_HEALTH;
    let lb = start(&(service("p", "") + &pool("p", &servers(&b), &extra))).await;
    let mut browser = Browser { jar: None };
    let home = served_by(&browser.get(&lb, "/").await);
    b.iter().find(|s| s.name == home).unwrap().stop().await;
    wait_for(Duration::from_secs(5), || !lb.is_up("p", &home))
        .await
        .expect("marked down");
    let refused = browser.get(&lb, "/").await;
    assert_eq!(refused.status, 503);
    assert!(lb
        .log_lines()
        .iter()
        .any(|l| l.contains("end=session_server_down")));
    // A new client is still served.
    let mut stranger = Browser { jar: None };
    assert_eq!(stranger.get(&lb, "/").await.status, 200);
}

#[tokio::test]
async fn a_server_back_from_down_ramps_up_under_slow_start() {
    let b = backends(2).await;
    let extra = format!("slow_start = \"30s\"\n{FAST_HEALTH}");
    let lb = start(&(service("p", "") + &pool("p", &servers(&b), &extra))).await;
    b[1].stop().await;
    wait_for(Duration::from_secs(5), || !lb.is_up("p", "cas2"))
        .await
        .expect("down");
    b[1].restart().await;
    wait_for(Duration::from_secs(5), || lb.is_up("p", "cas2"))
        .await
        .expect("up");
    let mut c = Client::connect(lb.addr).await.unwrap();
    let mut to_returning = 0;
    for _ in 0..200 {
        if served_by(&c.get("/").await.unwrap()) == "cas2" {
            to_returning += 1;
        }
    }
    // Equal weights would give it 100; seconds into a 30 s ramp it gets about 5 %.
    assert!(
        to_returning > 0 && to_returning < 40,
        "cas2 got {to_returning} of 200"
    );
}
