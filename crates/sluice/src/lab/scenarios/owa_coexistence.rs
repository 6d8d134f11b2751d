//! `owa-coexistence`: during a migration, Exchange 2013 and 2016 serve side by side and
//! cannot read each other's forms-login cookies. Round robin sends a logged-in user to the
//! other version, which answers `440 Login Timeout`; the browser goes back to the login
//! page, and round and round. Cookie persistence on OWA and ECP (the shipped default)
//! keeps each user on the server that issued the login.

use http::StatusCode;
use sluice_emulator::Version;

use super::owa_browser::Browser;
use super::{array, fail, one_pool, shipped, Story};
use crate::lab::setup::Lab;

const VERSIONS: [Version; 3] = [Version::V2016, Version::V2016, Version::V2013];
const PAGES: usize = 50;

pub async fn run(story: &mut Story) -> Result<(), String> {
    story.say("Two 2016 servers and one 2013. A user logs in to OWA and opens 50 pages and calls, first through plain round robin:");
    // One round-robin pool for everything, without persistence.
    let health = "path = \"/owa/healthcheck.htm\"";
    let lab = one_pool(array(&VERSIONS)?, "exchange", health).await?;
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
