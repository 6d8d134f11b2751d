//! `component-offline`: Managed Availability (or an administrator) takes OWA out on one
//! server. Only that server's OWA leaves sluice's OWA pool; its ActiveSync and EWS keep
//! being served.

use http::Request;
use sluice_emulator::Version;
use sluice_lab::client::{empty, full, Body};
use sluice_lab::Client;

use super::{array, fail, shipped, Story, NOTICE};
use crate::lab::setup::Lab;

const REQUESTS: usize = 30;

pub async fn run(story: &mut Story) -> Result<(), String> {
    let lab = shipped(array(&[Version::V2016, Version::V2016, Version::V2013])?).await?;
    let ex1 = &lab.array.servers[0];
    story.say(format!(
        "Three servers behind the shipped configuration. On {} OWA is set inactive through its admin endpoint:",
        ex1.name()
    ));
    let mut admin = Client::connect(ex1.admin_addr).await.map_err(fail)?;
    let req = admin
        .request("POST", "/components/owa/inactive")
        .body(empty())
        .map_err(fail)?;
    let switched = admin.send(req).await.map_err(fail)?;
    story.check(switched.status == 200, "the emulator took OWA out");
    let out = lab
        .wait_for(NOTICE, |lab| {
            lab.status("owa", "EX1").is_some_and(|s| !s.up)
        })
        .await;
    story.check(out, "sluice's owa pool marks EX1 down");
    let others_up = ["activesync", "ews", "ecp"]
        .iter()
        .all(|pool| lab.status(pool, "EX1").is_some_and(|s| s.up));
    story.check(
        others_up,
        "EX1 stays up in the activesync, ews and ecp pools",
    );

    let before = ex1.counts();
    let failed_owa = drive(&lab, owa).await?;
    let failed_eas = drive(&lab, activesync).await?;
    let failed_ews = drive(&lab, ews).await?;
    let after = ex1.counts();
    story.check(
        failed_owa == 0,
        format!("{REQUESTS} OWA requests: {failed_owa} failed"),
    );
    story.check(
        after.of("owa") == before.of("owa"),
        format!("EX1 got {} of them", after.of("owa") - before.of("owa")),
    );
    for (name, failed, workload) in [
        ("ActiveSync", failed_eas, "activesync"),
        ("EWS", failed_ews, "ews"),
    ] {
        let served = after.of(workload) - before.of(workload);
        story.check(
            failed == 0 && served > 0,
            format!("{REQUESTS} {name} requests: {failed} failed, EX1 served {served}"),
        );
    }

    story.say("OWA is made active again on EX1:");
    ex1.set_active("owa", true);
    let back = lab
        .wait_for(NOTICE, |lab| lab.status("owa", "EX1").is_some_and(|s| s.up))
        .await;
    story.check(back, "sluice puts EX1 back in the owa pool");
    Ok(())
}

/// Sends `REQUESTS` requests made by `request`, each on a new connection (so an
/// authenticated connection is not reused), and counts the ones not answered 200.
async fn drive(lab: &Lab, request: fn(&Client) -> Request<Body>) -> Result<usize, String> {
    let mut failed = 0;
    for _ in 0..REQUESTS {
        let mut client = lab.client().await.map_err(fail)?;
        let req = request(&client);
        let answer = client.send(req).await.map_err(fail)?;
        if answer.status != 200 {
            failed += 1;
        }
    }
    Ok(failed)
}

fn owa(c: &Client) -> Request<Body> {
    c.request("GET", "/owa/auth/logon.aspx")
        .body(empty())
        .expect("a valid request")
}

fn activesync(c: &Client) -> Request<Body> {
    c.request(
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=Phone",
    )
    .header("authorization", "Basic amRvZTpzZWNyZXQ=")
    .body(full("sync"))
    .expect("a valid request")
}

/// An EWS `GetFolder` with a (stand-in) Negotiate token.
pub(super) fn ews(c: &Client) -> Request<Body> {
    c.request("POST", "/EWS/Exchange.asmx")
        .header("authorization", "Negotiate jdoe")
        .body(full(sluice_emulator::ews::get_folder_request()))
        .expect("a valid request")
}
