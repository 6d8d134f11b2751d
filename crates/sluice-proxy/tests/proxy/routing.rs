//! Each matcher routes as documented; text comparisons ignore case.

use sluice_lab::{client::empty, Backend, Client};

use crate::harness::{pool, service, start};

/// Path, Host, an extra header, and the pool that should answer.
type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str);

#[tokio::test]
async fn each_matcher_routes_to_its_pool() {
    let names = [
        "default",
        "path",
        "prefix",
        "suffix",
        "regex",
        "host",
        "header",
        "header_any",
    ];
    let mut backends = Vec::new();
    for n in names {
        backends.push(Backend::start(n).await);
    }
    let mut config = service(
        "default",
        r#"
[[service.route]]
name = "path"
match = { path = "/exact" }
pool = "path"
[[service.route]]
name = "prefix"
match = { path_prefix = "/ews/" }
pool = "prefix"
[[service.route]]
name = "suffix"
match = { path_suffix = "/healthcheck.htm" }
pool = "suffix"
[[service.route]]
name = "regex"
match = { path_regex = "^/mapi/(emsmdb|nspi)/" }
pool = "regex"
[[service.route]]
name = "host"
match = { host = "*.example.org" }
pool = "host"
[[service.route]]
name = "header"
match = { header = { name = "X-Client", value = "Outlook" } }
pool = "header"
[[service.route]]
name = "header_any"
match = { header = { name = "X-Anything" } }
pool = "header_any"
"#,
    );
    for b in &backends {
        config += &pool(&b.name, &[(&b.name, b.addr)], "");
    }
    let lb = start(&config).await;
    let cases: &[Case] = &[
        ("/exact", "mail.example.com", None, "path"),
        ("/EXACT", "mail.example.com", None, "path"),
        ("/exact/more", "mail.example.com", None, "default"),
        ("/EWS/Exchange.asmx", "mail.example.com", None, "prefix"),
        ("/ews", "mail.example.com", None, "default"),
        ("/owa/HealthCheck.htm", "mail.example.com", None, "suffix"),
        (
            "/MAPI/emsmdb/?MailboxId=x",
            "mail.example.com",
            None,
            "regex",
        ),
        ("/mapi/other/", "mail.example.com", None, "default"),
        ("/", "Mail.Example.ORG:8443", None, "host"),
        ("/", "example.org", None, "default"),
        (
            "/",
            "mail.example.com",
            Some(("x-client", "OUTLOOK")),
            "header",
        ),
        (
            "/",
            "mail.example.com",
            Some(("x-client", "other")),
            "default",
        ),
        (
            "/",
            "mail.example.com",
            Some(("x-anything", "1")),
            "header_any",
        ),
    ];
    for (path, host, header, want) in cases {
        let mut client = Client::connect(lb.addr).await.unwrap().host(host);
        let mut req = client.request("GET", path);
        if let Some((k, v)) = header {
            req = req.header(*k, *v);
        }
        let reply = client.send(req.body(empty()).unwrap()).await.unwrap();
        assert_eq!(
            reply.header("x-server"),
            Some(*want),
            "{path} host={host} header={header:?}"
        );
    }
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" route=prefix pool=prefix server=prefix ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" route=- pool=default ")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn no_route_and_no_default_pool_is_404() {
    let b = Backend::start("only").await;
    let config = format!(
        "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[service.route]]\nname = \"r\"\nmatch = {{ path_prefix = \"/owa/\" }}\npool = \"p\"\n{}",
        pool("p", &[("only", b.addr)], "")
    );
    let lb = start(&config).await;
    let mut c = Client::connect(lb.addr).await.unwrap();
    assert_eq!(c.get("/owa/").await.unwrap().status, 200);
    let reply = c.get("/ecp/").await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(b.hits(), 1);
    let lines = lb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=404") && l.ends_with("end=no_route\n")),
        "{lines:?}"
    );
}
