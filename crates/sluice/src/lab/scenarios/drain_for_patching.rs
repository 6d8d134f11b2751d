//! `drain-for-patching`: the monthly update. The administrator drains one server in every
//! workload at once through the admin API; users already on it finish their sessions
//! there, new users and new Outlook requests go elsewhere. The server goes out for the
//! update (its components inactive), is set ready again before it is back, and returns
//! to rotation only once its health checks pass.

use std::collections::BTreeSet;

use serde_json::Value;
use sluice_emulator::Version;
use sluice_exchange::WORKLOADS;
use sluice_lab::client::full;
use sluice_lab::Client;

use super::owa_browser::Browser;
use super::{array, component_offline, fail, shipped, Story, NOTICE};
use crate::lab::setup::Lab;

const NEW_USERS: usize = 12;

pub async fn run(story: &mut Story) -> Result<(), String> {
    let lab = shipped(array(&[Version::V2016, Version::V2016, Version::V2016])?).await?;
    story
        .say("Three Exchange 2016 servers behind the shipped configuration. Alice logs in to OWA:");
    let mut alice = Browser::new(lab.client().await.map_err(fail)?);
    alice.login().await?;
    let first = alice.get("/owa/").await?;
    let patched = first.header("x-feserver").unwrap_or("?").to_string();
    story.check(
        first.status == 200,
        format!("she reads her mail on {patched}"),
    );

    story.say(format!(
        "The administrator drains {patched} for its update: POST /api/v1/servers/{patched}/state {{\"state\": \"drain\"}}"
    ));
    let drained = set_state(&lab, &patched, "drain").await?;
    let pools = drained.as_array().map_or(0, Vec::len);
    let workloads = WORKLOADS
        .iter()
        .filter(|w| w.since <= Version::V2016)
        .count();
    story.check(
        pools == workloads,
        format!("{patched} is draining in {pools} pools, one per workload"),
    );

    let mut hers = BTreeSet::new();
    let mut timeouts = 0;
    for _ in 0..10 {
        let page = alice.get("/owa/").await?;
        timeouts += usize::from(page.status.as_u16() == 440);
        hers.insert(page.header("x-feserver").unwrap_or("?").to_string());
    }
    story.check(
        timeouts == 0 && hers.len() == 1 && hers.contains(&patched),
        format!("Alice's next 10 pages: all on {patched}, {timeouts} login timeouts"),
    );
    let newcomers = new_users(&lab).await?;
    story.check(
        !newcomers.contains(&patched) && !newcomers.is_empty(),
        format!(
            "{NEW_USERS} users logging in now land on {}",
            join(&newcomers)
        ),
    );
    let outlook = ews_servers(&lab).await?;
    story.check(
        !outlook.contains(&patched) && !outlook.is_empty(),
        format!("{NEW_USERS} new EWS requests go to {}", join(&outlook)),
    );

    story.say(format!(
        "{patched} is updated: its components go inactive. The administrator says ready too early:"
    ));
    let server = lab.array.server(&patched).ok_or("no such server")?;
    for w in WORKLOADS {
        server.set_active(w.name, false);
    }
    let out = lab
        .wait_for(NOTICE, |lab| pools_of(lab, &patched).all(|s| !s.up))
        .await;
    story.check(out, format!("sluice sees {patched} down in every pool"));
    set_state(&lab, &patched, "ready").await?;
    story.check(
        pools_of(&lab, &patched).all(|s| s.state == "ready" && !s.serving),
        format!("{patched} is ready but serves nothing while its checks fail"),
    );

    story.say("The update finishes; the components are active again:");
    for w in WORKLOADS {
        server.set_active(w.name, true);
    }
    let back = lab
        .wait_for(NOTICE, |lab| pools_of(lab, &patched).all(|s| s.serving))
        .await;
    story.check(
        back,
        format!("{patched} is back in every pool once its checks pass"),
    );
    let newcomers = new_users(&lab).await?;
    story.check(
        newcomers.contains(&patched),
        format!("new users reach it again: {}", join(&newcomers)),
    );
    Ok(())
}

/// Every pool's status of `server`.
fn pools_of<'a>(
    lab: &'a Lab,
    server: &'a str,
) -> impl Iterator<Item = sluice_proxy::ServerStatus> + 'a {
    lab.proxy
        .server_status()
        .into_iter()
        .filter(move |s| s.server == server)
}

/// Asks the admin API, as an administrator would, with the lab's token.
async fn set_state(lab: &Lab, server: &str, state: &str) -> Result<Value, String> {
    let (admin, token) = lab.admin().ok_or("the lab has no admin API")?;
    let mut client = Client::connect(admin).await.map_err(fail)?;
    let req = client
        .request("POST", &format!("/api/v1/servers/{server}/state"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(format!("{{\"state\": \"{state}\"}}")))
        .map_err(fail)?;
    let reply = client.send(req).await.map_err(fail)?;
    if reply.status != 200 {
        return Err(format!(
            "the admin API answered {}: {}",
            reply.status,
            reply.text()
        ));
    }
    serde_json::from_slice(&reply.body).map_err(fail)
}

/// Where `NEW_USERS` users logging in for the first time are served.
async fn new_users(lab: &Lab) -> Result<BTreeSet<String>, String> {
    let mut servers = BTreeSet::new();
    for _ in 0..NEW_USERS {
        let mut user = Browser::new(lab.client().await.map_err(fail)?);
        user.login().await?;
        let page = user.get("/owa/").await?;
        servers.insert(page.header("x-feserver").unwrap_or("?").to_string());
    }
    Ok(servers)
}

/// Where new EWS requests (each on its own connection) are served.
async fn ews_servers(lab: &Lab) -> Result<BTreeSet<String>, String> {
    let mut servers = BTreeSet::new();
    for _ in 0..NEW_USERS {
        let mut client = lab.client().await.map_err(fail)?;
        let req = component_offline::ews(&client);
        let reply = client.send(req).await.map_err(fail)?;
        servers.insert(reply.header("x-feserver").unwrap_or("?").to_string());
    }
    Ok(servers)
}

fn join(servers: &BTreeSet<String>) -> String {
    servers.iter().cloned().collect::<Vec<_>>().join(", ")
}
