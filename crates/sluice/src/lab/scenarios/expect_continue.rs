//! `expect-continue`: .NET EWS clients (Microsoft 365 migrations, hybrid) send every POST
//! with `Expect: 100-continue` and wait for the 100 before the body. Load balancers that
//! answer `501` or `417` break them. sluice forwards the expectation: the server's
//! `100 Continue` comes back, and a `401` before it comes back without the body ever
//! being uploaded.

use sluice_emulator::{ews, Version};
use sluice_lab::raw;
use tokio::io::AsyncWriteExt;

use super::{array, fail, shipped, Story};

/// Large enough that uploading it unasked would show in the servers' counters.
const UPLOAD: usize = 256 * 1024;

fn head(credentials: &str, length: usize) -> String {
    format!(
        "POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\n\
         User-Agent: ExchangeServicesClient/15.00.0913.022\r\n{credentials}Content-Length: {length}\r\n\
         Expect: 100-continue\r\n\r\n"
    )
}

pub async fn run(story: &mut Story) -> Result<(), String> {
    let lab = shipped(array(&[Version::V2019, Version::V2019])?).await?;
    let body_bytes = || -> u64 {
        lab.array
            .servers
            .iter()
            .map(|s| s.counts().body_bytes)
            .sum()
    };

    story.say("A client authenticated with Negotiate posts GetFolder and waits for 100 Continue:");
    let soap = ews::get_folder_request();
    let before = body_bytes();
    let mut conn = lab.raw().await.map_err(fail)?;
    let credentials = "Authorization: Negotiate m365-migration\r\n";
    conn.get_mut()
        .write_all(head(credentials, soap.len()).as_bytes())
        .await
        .map_err(fail)?;
    let interim = raw::read_head(&mut conn).await.map_err(fail)?;
    story.check(
        raw::status(&interim) == Some(100),
        format!("the first answer is {}", first_line(&interim)),
    );
    conn.get_mut()
        .write_all(soap.as_bytes())
        .await
        .map_err(fail)?;
    let (done, xml) = raw::read_response(&mut conn).await.map_err(fail)?;
    let mailbox = ews::mailbox(&String::from_utf8_lossy(&xml));
    story.check(
        raw::status(&done) == Some(200) && mailbox.as_deref() == Some("m365-migration"),
        format!(
            "then {}, for mailbox {}",
            first_line(&done),
            mailbox.as_deref().unwrap_or("?")
        ),
    );
    story.check(
        body_bytes() - before == soap.len() as u64,
        format!("the server read the {}-byte body", soap.len()),
    );

    story.say(format!(
        "A client without credentials announces a {} KiB body and waits:",
        UPLOAD / 1024
    ));
    let before = body_bytes();
    let mut conn = lab.raw().await.map_err(fail)?;
    conn.get_mut()
        .write_all(head("", UPLOAD).as_bytes())
        .await
        .map_err(fail)?;
    let (refused, _) = raw::read_response(&mut conn).await.map_err(fail)?;
    let offers = refused
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .count();
    story.check(
        raw::status(&refused) == Some(401) && offers > 0,
        format!(
            "the answer is {} with {offers} authentication offers",
            first_line(&refused)
        ),
    );
    story.check(
        body_bytes() == before,
        "no byte of the body was uploaded to any server",
    );
    Ok(())
}

fn first_line(head: &str) -> &str {
    head.lines().next().unwrap_or("nothing")
}
