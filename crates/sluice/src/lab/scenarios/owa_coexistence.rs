//! `owa-coexistence`: during a migration, Exchange 2013 and 2016 serve side by side and
//! cannot read each other's forms-login cookies. Round robin sends a logged-in user to the
//! other version, which answers `440 Login Timeout`; the browser goes back to the login
//! page, and round and round. Cookie persistence on OWA and ECP (the shipped default)
//! keeps each user on the server that issued the login.

use std::collections::BTreeMap;

use http::StatusCode;
use sluice_emulator::Version;
use sluice_lab::client::{empty, full, Reply};
use sluice_lab::Client;
use sluice_proxy::AccessLog;

use super::{array, fail, shipped, Story, PROBE};
use crate::lab::setup::{Lab, Setting};

const VERSIONS: [Version; 3] = [Version::V2016, Version::V2016, Version::V2013];
const PAGES: usize = 50;

/// One round-robin pool for everything, without persistence.
fn round_robin(s: &Setting) -> Result<String, String> {
    let health = format!(
        "path = \"/owa/healthcheck.htm\"\ninterval = \"{}ms\"",
        PROBE.interval.as_millis()
    );
    Ok(s.one_pool("exchange", &health))
}

pub async fn run(story: &mut Story) -> Result<(), String> {
    story.say("Two 2016 servers and one 2013. A user logs in to OWA and opens 50 pages and calls, first through plain round robin:");
    let lab = Lab::start(
        array(&VERSIONS)?,
        (0, 0),
        round_robin,
        AccessLog::disabled(),
    )
    .await?;
    let plain = browse(&lab).await?;
    story.check(
        plain.timeouts > 0,
        format!(
            "without persistence the user meets {} login timeouts (440) and logs in {} times",
            plain.timeouts, plain.logins
        ),
    );

    story.say("Now the shipped configuration, with cookie persistence on OWA and ECP:");
    let lab = shipped(array(&VERSIONS)?).await?;
    let kept = browse(&lab).await?;
    story.check(
        kept.timeouts == 0 && kept.logins == 1 && kept.read == PAGES,
        format!(
            "{} of {PAGES} pages read, {} login timeouts, {} login",
            kept.read, kept.timeouts, kept.logins
        ),
    );
    story.check(
        kept.servers.len() == 1,
        format!(
            "every OWA and ECP request went to {}",
            kept.servers.join(", ")
        ),
    );
    Ok(())
}

#[derive(Default)]
struct Visit {
    read: usize,
    timeouts: usize,
    logins: usize,
    servers: Vec<String>,
}

/// Logs in, then reads `PAGES` pages (OWA pages, OWA service calls, ECP pages in turn),
/// logging in again after every 440, as the browser does.
async fn browse(lab: &Lab) -> Result<Visit, String> {
    let mut browser = Browser::new(lab.client().await.map_err(fail)?);
    let mut visit = Visit::default();
    browser.login().await?;
    visit.logins += 1;
    for i in 0..PAGES {
        let reply = match i % 3 {
            0 => browser.get("/owa/").await?,
            1 => {
                browser
                    .post("/owa/service.svc?action=GetItem", "{}")
                    .await?
            }
            _ => browser.get("/ecp/").await?,
        };
        if reply.status.as_u16() == 440 {
            visit.timeouts += 1;
            browser.login().await?;
            visit.logins += 1;
            continue;
        }
        if reply.status == StatusCode::OK {
            visit.read += 1;
        }
        let server = reply.header("x-feserver").unwrap_or("?").to_string();
        if !visit.servers.contains(&server) {
            visit.servers.push(server);
        }
    }
    Ok(visit)
}

/// A browser: one connection and a cookie jar.
struct Browser {
    client: Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new(client: Client) -> Browser {
        Browser {
            client,
            jar: BTreeMap::new(),
        }
    }

    async fn login(&mut self) -> Result<(), String> {
        let form = "destination=%2Fowa%2F&flags=4&username=CONTOSO%5Cjdoe&password=secret";
        let reply = self.post("/owa/auth.owa", form).await?;
        if reply.status != StatusCode::FOUND {
            return Err(format!("login answered {}", reply.status));
        }
        Ok(())
    }

    async fn get(&mut self, path: &str) -> Result<Reply, String> {
        let req = self.with_cookies(self.client.request("GET", path));
        self.send(req.body(empty()).map_err(fail)?).await
    }

    async fn post(&mut self, path: &str, body: &'static str) -> Result<Reply, String> {
        let req = self.with_cookies(self.client.request("POST", path));
        self.send(req.body(full(body)).map_err(fail)?).await
    }

    fn with_cookies(&self, req: http::request::Builder) -> http::request::Builder {
        if self.jar.is_empty() {
            return req;
        }
        let pairs: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        req.header("cookie", pairs.join("; "))
    }

    async fn send(
        &mut self,
        req: http::Request<sluice_lab::client::Body>,
    ) -> Result<Reply, String> {
        let reply = self.client.send(req).await.map_err(fail)?;
        for set in reply.headers.get_all("set-cookie") {
            let Some((name, value)) = set
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            if value.is_empty() {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_string(), value.to_string());
            }
        }
        Ok(reply)
    }
}
