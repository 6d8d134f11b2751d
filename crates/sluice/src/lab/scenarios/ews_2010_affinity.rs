//! `ews-2010-affinity`: on Exchange 2010 an EWS notification subscription lives in the
//! Client Access server that created it. A client polling through round robin reaches
//! the other server half the time and gets `ErrorSubscriptionNotFound` (hybrid mailbox
//! moves failed this way). The shipped 2010 configuration keeps each client on one server
//! by source address for 45 idle minutes.

use sluice_emulator::{ews, Version};
use sluice_lab::client::full;

use super::{array, fail, one_pool, shipped, Story};
use crate::lab::setup::Lab;

const VERSIONS: [Version; 2] = [Version::V2010, Version::V2010];
const POLLS: usize = 10;
const EWS: &str = "/EWS/Exchange.asmx";

pub async fn run(story: &mut Story) -> Result<(), String> {
    story.say(format!(
        "Two Exchange 2010 servers. A client subscribes to new-mail events, then polls {POLLS} times, each on a new connection, first through plain round robin:"
    ));
    // One round-robin EWS pool, without persistence.
    let lab = one_pool(array(&VERSIONS)?, "ews", "kind = \"tcp\"").await?;
    let (lost, _) = subscribe_and_poll(&lab).await?;
    story.check(
        lost > 0,
        format!("without affinity {lost} of {POLLS} polls find no subscription"),
    );

    story.say("Now the shipped Exchange 2010 configuration (source persistence, 45 minutes idle):");
    let lab = shipped(array(&VERSIONS)?).await?;
    let (lost, servers) = subscribe_and_poll(&lab).await?;
    story.check(
        lost == 0 && servers.len() == 1,
        format!(
            "{} of {POLLS} polls succeed, all on {}",
            POLLS - lost,
            servers.join(", ")
        ),
    );
    let entries = lab.proxy.persistence_entries();
    story.check(
        entries == [("ews".to_string(), 1)],
        format!("sluice's EWS stick table holds the client: {entries:?}"),
    );
    Ok(())
}

/// Subscribes, then polls; returns the polls that failed and the servers that answered.
async fn subscribe_and_poll(lab: &Lab) -> Result<(usize, Vec<String>), String> {
    let made = call(lab, &ews::subscribe_request()).await?;
    let id = ews::subscription_id(&made.text()).ok_or("no subscription id")?;
    let mut servers = vec![made.header("x-feserver").unwrap_or("?").to_string()];
    let mut lost = 0;
    for _ in 0..POLLS {
        let events = call(lab, &ews::get_events_request(&id)).await?;
        if !ews::succeeded(&events.text()) {
            lost += 1;
        }
        let server = events.header("x-feserver").unwrap_or("?").to_string();
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok((lost, servers))
}

/// One EWS call on a new connection, authenticated with Negotiate.
async fn call(lab: &Lab, soap: &str) -> Result<sluice_lab::client::Reply, String> {
    let mut client = lab.client().await.map_err(fail)?;
    let req = client
        .request("POST", EWS)
        .header("authorization", "Negotiate hybrid-move")
        .header("content-type", "text/xml; charset=utf-8")
        .body(full(soap.to_string()))
        .map_err(fail)?;
    client.send(req).await.map_err(fail)
}
