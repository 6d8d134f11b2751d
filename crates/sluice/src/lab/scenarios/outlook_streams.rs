//! `outlook-streams`: Outlook's long-lived traffic through sluice. An Outlook Anywhere
//! channel pair (`RPC_OUT_DATA` streaming down, `RPC_IN_DATA` streaming up, each declaring
//! 1 GiB) and a MAPI `NotificationWait` long poll with `PENDING` keep-alive chunks must stay
//! up for the whole run, bytes flowing both ways, nothing buffered or cut.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_emulator::{mapi, rpc, Array, ArrayOptions, Timings, Version};
use sluice_lab::bodies::ChannelBody;
use sluice_lab::client::{empty, full};
use sluice_lab::Client;

use super::{fail, shipped, Story};
use crate::lab::setup::Lab;

/// How long the streams must stay up.
const RUN: Duration = Duration::from_secs(3);
/// The client pings its IN channel this often (Outlook: every few minutes).
const IN_PING: Duration = Duration::from_millis(50);
const RPC_PATH: &str = "/rpc/rpcproxy.dll?5b0bd6bd-0d2c-4b2c-9c5a-1d1d1d1d1d1d@contoso.lab:6001";
const MAPI_PATH: &str = "/mapi/emsmdb/?MailboxId=5b0bd6bd-0d2c-4b2c-9c5a-1d1d1d1d1d1d@contoso.lab";

pub async fn run(story: &mut Story) -> Result<(), String> {
    let mut options = ArrayOptions::new(&[Version::V2019, Version::V2016]);
    options.timings = Timings {
        mapi_wait: RUN,
        ..Timings::quick()
    };
    let lab = shipped(Array::start(&options).map_err(fail)?).await?;
    let timings = options.timings;
    story.say(format!(
        "Outlook opens an RPC OUT and IN channel and a MAPI long poll, kept for {RUN:?}:"
    ));

    let mut out = authenticated(&lab, RPC_PATH).await?;
    let open = out
        .request("RPC_OUT_DATA", RPC_PATH)
        .body(full(rpc::conn_a1([9; 16])))
        .map_err(fail)?;
    let out_channel = out.send_streaming(open).await.map_err(fail)?;
    story.check(
        out_channel.status() == 200
            && out_channel
                .headers()
                .get("content-length")
                .map(|v| v.as_bytes())
                == Some(rpc::CHANNEL_LENGTH.to_string().as_bytes()),
        format!(
            "RPC_OUT_DATA: {} declaring {:?} bytes",
            out_channel.status(),
            out_channel.headers().get("content-length")
        ),
    );
    let down = tokio::spawn(watch(out_channel.into_body()));

    let mut poll = authenticated(&lab, MAPI_PATH).await?;
    let wait = poll
        .request("POST", MAPI_PATH)
        .header("content-type", "application/mapi-http")
        .header("x-requesttype", "NotificationWait")
        .body(full("wait"))
        .map_err(fail)?;
    let asked = Instant::now();
    let long_poll = poll.send_streaming(wait).await.map_err(fail)?;
    let notifications = tokio::spawn(progress(long_poll.into_body(), asked));

    let received_before: u64 = lab
        .array
        .servers
        .iter()
        .map(|s| s.counts().body_bytes)
        .sum();
    let mut inbound = authenticated(&lab, RPC_PATH).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let upload = ChannelBody(rx).map_err(|e| match e {}).boxed_unsync();
    let open = inbound
        .request("RPC_IN_DATA", RPC_PATH)
        .header("content-length", rpc::CHANNEL_LENGTH.to_string())
        .body(upload)
        .map_err(fail)?;
    let in_channel = tokio::spawn(async move { inbound.send(open).await.map(|r| r.status) });
    // `tx` lives to the end: dropping it would end the upload before its declared length.
    let sent = send_up(&tx).await;

    let (down_bytes, longest_gap, down_open) = down.await.map_err(fail)?;
    let pings = RUN.as_millis() / timings.rpc_ping.as_millis();
    story.check(
        down_open && down_bytes >= 72 + 20 * pings as u64 / 2,
        format!(
            "OUT channel: {down_bytes} bytes down, still open after {RUN:?}, longest silence {longest_gap:?}"
        ),
    );
    story.check(
        longest_gap < RUN / 3,
        "OUT channel pings arrive as they are sent, not in bursts",
    );
    let arrived = lab
        .wait_for(Duration::from_secs(2), |lab| {
            let now: u64 = lab
                .array
                .servers
                .iter()
                .map(|s| s.counts().body_bytes)
                .sum();
            now - received_before >= sent
        })
        .await;
    story.check(
        arrived && !in_channel.is_finished(),
        format!("IN channel: all {sent} bytes sent up reached the server, channel still open"),
    );
    in_channel.abort();
    drop(tx);

    let (words, done_after) = notifications.await.map_err(fail)?;
    let pending = words.iter().filter(|w| **w == "PENDING").count();
    let expected = (RUN.as_millis() / timings.mapi_pending.as_millis()) as usize;
    story.check(
        words.first() == Some(&"PROCESSING") && words.last() == Some(&"DONE"),
        format!("MAPI NotificationWait: PROCESSING, {pending} PENDING, DONE"),
    );
    story.check(
        pending >= expected / 2 && done_after.is_some_and(|d| d >= RUN),
        format!(
            "the long poll lasted {:?} with a keep-alive every {:?}",
            done_after.unwrap_or_default(),
            timings.mapi_pending
        ),
    );
    Ok(())
}

/// A connection authenticated with one Negotiate request (`Persistent-Auth: true`).
async fn authenticated(lab: &Lab, path: &str) -> Result<Client, String> {
    let mut client = lab.client().await.map_err(fail)?;
    let req = client
        .request("GET", path)
        .header("authorization", "Negotiate outlook")
        .body(empty())
        .map_err(fail)?;
    let answer = client.send(req).await.map_err(fail)?;
    if answer.status != 200 {
        return Err(format!(
            "authentication on {path} answered {}",
            answer.status
        ));
    }
    Ok(client)
}

/// Reads a channel for the run: bytes, the longest wait for a frame, and whether it was
/// still open at the end.
async fn watch(mut body: Incoming) -> (u64, Duration, bool) {
    let deadline = Instant::now() + RUN;
    let (mut bytes, mut longest, mut last) = (0, Duration::ZERO, Instant::now());
    loop {
        match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return (bytes, longest.max(last.elapsed()), true),
            Ok(Some(Ok(frame))) => {
                bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            Ok(_) => return (bytes, longest, false),
        }
    }
}

/// CONN/B1, then a ping every `IN_PING` for the run; returns the bytes sent.
async fn send_up(tx: &tokio::sync::mpsc::Sender<Bytes>) -> u64 {
    let deadline = Instant::now() + RUN;
    let mut sent = 0;
    let mut pdu = rpc::conn_b1([9; 16]);
    while Instant::now() < deadline {
        sent += pdu.len() as u64;
        if tx.send(Bytes::from(pdu)).await.is_err() {
            return sent;
        }
        tokio::time::sleep(IN_PING).await;
        pdu = rpc::ping();
    }
    sent
}

/// The progress words of a MAPI response, and how long after `asked` `DONE` came.
async fn progress(mut body: Incoming, asked: Instant) -> (Vec<&'static str>, Option<Duration>) {
    let (mut words, mut done) = (Vec::new(), None);
    let limit = RUN * 3;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(limit, body.frame()).await {
        if let Some(data) = frame.data_ref() {
            let found = mapi::progress(data);
            if found.contains(&"DONE") {
                done = Some(asked.elapsed());
            }
            words.extend(found);
        }
    }
    (words, done)
}
