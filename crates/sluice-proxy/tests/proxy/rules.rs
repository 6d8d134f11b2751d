//! Request and response rules through a live proxy: the redirects, rewrites and denies an
//! Exchange front end needs, header edits both ways, and per-route limits.

use sluice_lab::client::{empty, generated};
use sluice_lab::{Backend, Client};

use crate::harness::{pool, service, start};

async fn lb_with(rules: &str, backend: &Backend) -> crate::harness::Lb {
    let config = service("p", rules) + &pool("p", &[("cas1", backend.addr)], "");
    start(&config).await
}

#[tokio::test]
async fn root_is_redirected_to_owa_and_test_rewritten_to_owa() {
    let backend = Backend::start("cas1").await;
    let rules = r#"
[[service.rule]]
when = { path = "/" }
redirect = { status = 302, location = "/owa/" }
[[service.rule]]
when = { path_prefix = "/test" }
rewrite_path = { regex = "^/test(.*)$", to = "/owa$1" }
"#;
    let lb = lb_with(rules, &backend).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let root = client.get("/").await.unwrap();
    assert_eq!(root.status, 302);
    assert_eq!(root.header("location"), Some("/owa/"));
    assert_eq!(backend.hits(), 0, "the redirect is sluice's own answer");
    let rewritten = client.get("/test/inbox?view=1").await.unwrap();
    assert_eq!(rewritten.status, 200);
    assert_eq!(rewritten.header("x-target"), Some("/owa/inbox?view=1"));
    let untouched = client.get("/ews/x").await.unwrap();
    assert_eq!(untouched.header("x-target"), Some("/ews/x"));
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=302") && l.contains("end=redirect")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn http_is_redirected_to_https_keeping_path_and_query() {
    // A pure redirector: no pool at all.
    let config = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
[[service.rule]]
redirect = { status = 301, scheme = "https" }
"#;
    let lb = start(config).await;
    let mut client = Client::connect(lb.addr)
        .await
        .unwrap()
        .host("mail.example.com:80");
    let reply = client.get("/owa/?path=/mail").await.unwrap();
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://mail.example.com/owa/?path=/mail")
    );
}

#[tokio::test]
async fn outside_clients_are_denied_health_pages_inside_ones_are_not() {
    let backend = Backend::start("cas1").await;
    for (inside, want) in [("10.0.0.0/8", 403), ("127.0.0.0/8", 200)] {
        let rules = format!(
            "[[service.rule]]\nwhen = {{ path_suffix = \"/healthcheck.htm\", not = {{ source = [\"{inside}\", \"192.168.0.0/16\"] }} }}\ndeny = {{ status = 403 }}\n"
        );
        let lb = lb_with(&rules, &backend).await;
        let mut client = Client::connect(lb.addr).await.unwrap();
        let reply = client.get("/OWA/HealthCheck.htm").await.unwrap();
        assert_eq!(reply.status, want, "inside network {inside}");
        assert_eq!(client.get("/owa/").await.unwrap().status, 200);
    }
    assert_eq!(
        backend.hits(),
        3,
        "the denied request never reached the server"
    );
}

#[tokio::test]
async fn host_renamed_and_headers_edited_both_ways() {
    let backend = Backend::start("cas1").await;
    let rules = r#"
[[service.rule]]
set_host = "mail.internal.example"
[[service.rule]]
add_header = { name = "X-Via-Sluice", value = "1" }
[[service.rule]]
remove_header = "X-Secret"
[[service.rule]]
when = { method = ["GET", "HEAD"] }
remove_response_header = "X-Server"
[[service.rule]]
set_response_header = { name = "Strict-Transport-Security", value = "max-age=31536000" }
"#;
    let lb = lb_with(rules, &backend).await;
    let mut client = Client::connect(lb.addr)
        .await
        .unwrap()
        .host("mail.example.com");
    let req = client
        .request("GET", "/headers")
        .header("x-secret", "s3cret")
        .body(empty())
        .unwrap();
    let reply = client.send(req).await.unwrap();
    let seen = reply.text();
    assert!(seen.contains("host: mail.internal.example\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-host: mail.example.com\n"),
        "original host kept: {seen}"
    );
    assert!(seen.contains("x-via-sluice: 1\n"), "{seen}");
    assert!(!seen.contains("s3cret"), "{seen}");
    assert_eq!(reply.header("x-server"), None);
    assert_eq!(
        reply.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let post = client.request("POST", "/").body(empty()).unwrap();
    let reply = client.send(post).await.unwrap();
    assert_eq!(
        reply.header("x-server"),
        Some("cas1"),
        "the method condition held back the edit"
    );
}

#[tokio::test]
async fn any_groups_and_route_rules() {
    let backend = Backend::start("cas1").await;
    let config = service(
        "p",
        r#"
[[service.rule]]
when = { any = [{ method = "TRACE" }, { method = "DELETE", path_prefix = "/ecp/" }] }
deny = { status = 405, body = "not here\n" }
[[service.route]]
name = "ews"
match = { path_prefix = "/ews/" }
pool = "p"
[[service.route.rule]]
add_response_header = { name = "X-Route", value = "ews" }
"#,
    ) + &pool("p", &[("cas1", backend.addr)], "");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    for (method, path, want) in [
        ("TRACE", "/", 405),
        ("DELETE", "/ecp/x", 405),
        ("DELETE", "/owa/x", 200),
        ("GET", "/ecp/x", 200),
    ] {
        let req = client.request(method, path).body(empty()).unwrap();
        let reply = client.send(req).await.unwrap();
        assert_eq!(reply.status, want, "{method} {path}");
        if want == 405 {
            assert_eq!(reply.text(), "not here\n");
        }
    }
    let other = client.get("/owa/").await.unwrap();
    assert_eq!(
        other.header("x-route"),
        None,
        "route rules stay on their route"
    );
    let ews = client.get("/EWS/Exchange.asmx").await.unwrap();
    assert_eq!(ews.header("x-route"), Some("ews"));
}

#[tokio::test]
async fn per_route_body_limit_and_server_timeout() {
    let backend = Backend::start("cas1").await;
    let config = service(
        "p",
        r#"
[[service.route]]
name = "small"
match = { path_prefix = "/upload" }
pool = "p"
max_body = "64KiB"
[[service.route]]
name = "impatient"
match = { path_prefix = "/chunks" }
pool = "p"
timeouts = { server = "200ms" }
"#,
    ) + &pool("p", &[("cas1", backend.addr)], "");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let big = client
        .request("POST", "/upload")
        .body(generated(65_537))
        .unwrap();
    assert_eq!(client.send(big).await.unwrap().status, 413);
    let mut client = Client::connect(lb.addr).await.unwrap();
    let fits = client
        .request("POST", "/upload")
        .body(generated(65_536))
        .unwrap();
    assert_eq!(client.send(fits).await.unwrap().text(), "received=65536");
    // Chunks 1 s apart: past the route's 200 ms server silence, the response is cut.
    let slow = client.get("/chunks?n=2&ms=1000").await;
    assert!(slow.is_err() || slow.unwrap().text() != "chunk 0\nchunk 1\n");
    let mut client = Client::connect(lb.addr).await.unwrap();
    let fast = client.get("/chunks?n=2&ms=50").await.unwrap();
    assert_eq!(fast.text(), "chunk 0\nchunk 1\n");
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=413") && l.contains("end=body_too_large")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("route=impatient") && l.contains("end=server_aborted")),
        "{lines:?}"
    );
}
