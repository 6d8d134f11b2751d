//! `root-probe`: since Exchange 2013 CU6 a server answers `/` with a redirect to `/owa/`,
//! so a health check on `/` that wants 200 takes every healthy server out (KB 3002351).
//! The shipped configuration reads each workload's `healthcheck.htm` and keeps them up.

use sluice_emulator::Version;
use sluice_lab::Client;

use super::{array, fail, one_pool, shipped, Story, NOTICE, PROBE};

const VERSIONS: [Version; 3] = [Version::V2016, Version::V2016, Version::V2013];

pub async fn run(story: &mut Story) -> Result<(), String> {
    story.say(
        "Three servers (2016, 2016, 2013), all healthy. First a pool that probes `/` for 200:",
    );
    // What an administrator wrote before CU6: one pool, probing `/` for a 200.
    let on_root = format!(
        "path = \"/\"\nexpect_status = 200\ntimeout = \"{}ms\"\nrise = 2\nfall = 3",
        PROBE.timeout.as_millis()
    );
    let lab = one_pool(array(&VERSIONS)?, "exchange", &on_root).await?;
    let all_down = lab
        .wait_for(NOTICE, |lab| {
            lab.proxy.server_status().iter().all(|s| !s.up)
        })
        .await;
    story.check(
        all_down,
        "sluice marks every server down, as the probe asks",
    );
    if let Some(reason) = lab
        .proxy
        .server_status()
        .first()
        .and_then(|s| s.last_failure.clone())
    {
        story.check(
            reason.contains("301") && reason.contains("/owa/"),
            format!("the reason names the redirect: \"{reason}\""),
        );
    }
    let mut client = lab.client().await.map_err(fail)?;
    let answer = client.get("/owa/").await.map_err(fail)?;
    story.check(
        answer.status == 503,
        format!("users get {} although every server works", answer.status),
    );

    story.say("Now the shipped configuration, probing /<workload>/healthcheck.htm:");
    let lab = shipped(array(&VERSIONS)?).await?;
    // Long enough for a wrong verdict to show: fall = 3 failures at the probe interval.
    tokio::time::sleep(PROBE.interval * 10).await;
    let statuses = lab.proxy.server_status();
    let up = statuses.iter().filter(|s| s.up).count();
    story.check(
        up == statuses.len(),
        format!("{up} of {} workload-server pairs are up", statuses.len()),
    );
    let mut client: Client = lab.client().await.map_err(fail)?;
    let root = client.get("/").await.map_err(fail)?;
    story.check(
        root.status == 302 && root.header("location") == Some("/owa/"),
        format!(
            "sluice itself answers / with {} to {}",
            root.status,
            root.header("location").unwrap_or("nowhere")
        ),
    );
    let page = client.get("/owa/auth/logon.aspx").await.map_err(fail)?;
    story.check(
        page.status == 200,
        format!(
            "the OWA login page comes back {} from {}",
            page.status,
            page.header("x-feserver").unwrap_or("?")
        ),
    );
    Ok(())
}
