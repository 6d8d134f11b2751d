//! `ntlm-isolation`: NTLM authenticates the TCP connection, not the request. A balancer
//! that pools server connections hands one user's authenticated connection to another
//! user. Several users log in with interleaved NTLM handshakes and keep working,
//! interleaved; each must only ever be served as themself.

use http::StatusCode;
use sluice_emulator::{ews, Version};
use sluice_lab::client::{empty, full, Reply};
use sluice_lab::Client;

use super::{array, fail, shipped, Story};

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
const ROUNDS: usize = 10;
const EWS: &str = "/EWS/Exchange.asmx";

pub async fn run(story: &mut Story) -> Result<(), String> {
    let lab = shipped(array(&[Version::V2016, Version::V2016, Version::V2013])?).await?;
    story.say(format!(
        "{} users each open a connection and run the three NTLM messages, interleaved:",
        USERS.len()
    ));
    let mut clients = Vec::new();
    for _ in USERS {
        clients.push(lab.client().await.map_err(fail)?);
    }
    let mut nonces = Vec::new();
    for client in &mut clients {
        let challenge = leg(client, "NTLM negotiate").await?;
        nonces.push(
            challenge
                .header("www-authenticate")
                .and_then(|v| v.strip_prefix("NTLM challenge."))
                .map(str::to_string)
                .unwrap_or_default(),
        );
    }
    let mut logged_in = 0;
    for ((client, user), nonce) in clients.iter_mut().zip(USERS).zip(&nonces) {
        let done = leg(client, &format!("NTLM authenticate.{user}.{nonce}")).await?;
        logged_in += usize::from(done.status == StatusCode::OK);
    }
    story.check(
        logged_in == USERS.len(),
        format!("{logged_in} of {} handshakes completed", USERS.len()),
    );
    let pinned: u64 = lab.proxy.server_status().iter().map(|s| s.pinned).sum();
    story.check(
        pinned == USERS.len() as u64,
        format!("sluice holds {pinned} server connections, each pinned to one user"),
    );

    story.say(format!(
        "Each user sends {ROUNDS} GetFolder requests without credentials (the connection carries them), interleaved:"
    ));
    let (mut right, mut wrong, mut servers) = (0, Vec::new(), std::collections::BTreeSet::new());
    for round in 0..ROUNDS {
        // A different order each round, so every user follows every other one.
        for i in 0..USERS.len() {
            let who = (i + round) % USERS.len();
            let answer = folder(&mut clients[who]).await?;
            servers.insert(answer.header("x-feserver").unwrap_or("?").to_string());
            match ews::mailbox(&answer.text()) {
                Some(m) if m == USERS[who] => right += 1,
                other => wrong.push(format!(
                    "{} got {:?} ({})",
                    USERS[who], other, answer.status
                )),
            }
        }
    }
    story.check(
        wrong.is_empty(),
        format!(
            "{right} answers named their own user, {} another or none{}",
            wrong.len(),
            wrong
                .first()
                .map(|w| format!(" (first: {w})"))
                .unwrap_or_default()
        ),
    );
    story.say(format!(
        "the users were served by {}",
        servers.into_iter().collect::<Vec<_>>().join(", ")
    ));

    let mut stranger = lab.client().await.map_err(fail)?;
    let answer = folder(&mut stranger).await?;
    story.check(
        answer.status == StatusCode::UNAUTHORIZED,
        format!(
            "a new connection without credentials gets {}, not someone's mailbox",
            answer.status
        ),
    );
    Ok(())
}

async fn leg(client: &mut Client, credentials: &str) -> Result<Reply, String> {
    let req = client
        .request("GET", EWS)
        .header("authorization", credentials)
        .body(empty())
        .map_err(fail)?;
    client.send(req).await.map_err(fail)
}

async fn folder(client: &mut Client) -> Result<Reply, String> {
    let req = client
        .request("POST", EWS)
        .header("content-type", "text/xml; charset=utf-8")
        .body(full(ews::get_folder_request()))
        .map_err(fail)?;
    client.send(req).await.map_err(fail)
}
