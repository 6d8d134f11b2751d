//! The emulated servers answered directly (no sluice in between), as EXCHANGE.md says a
//! Client Access server answers.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use sluice_emulator::{
    activesync, ews, mapi, owa, rpc, Array, ArrayOptions, ExchangeServer, Version,
};
use sluice_lab::client::{empty, full, BoxError, Client};
use sluice_lab::conn_auth::ntlm_login;
use sluice_lab::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn array(versions: &[Version]) -> Array {
    Array::start(&ArrayOptions::new(versions)).expect("start the emulated servers")
}

async fn connect(server: &ExchangeServer) -> Client {
    let cert = server.certificate().expect("an HTTPS server").cert_der();
    Client::connect_tls(server.addr, "localhost", cert)
        .await
        .expect("connect to the emulated server")
}

async fn post(
    client: &mut Client,
    path: &str,
    body: String,
) -> Result<sluice_lab::client::Reply, BoxError> {
    let req = client.request("POST", path).body(full(body))?;
    client.send(req).await
}

#[tokio::test]
async fn health_pages_follow_each_component() {
    let lab = array(&[Version::V2016, Version::V2010]);
    let (ex1, ex2) = (&lab.servers[0], &lab.servers[1]);
    let mut c = connect(ex1).await;
    let page = c.get("/owa/healthcheck.htm").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), "200 OK<br/>EX1.CONTOSO.LAB");
    assert_eq!(page.header("x-feserver"), Some("EX1"));
    assert!(ex1.set_active("owa", false));
    assert_eq!(c.get("/owa/healthcheck.htm").await.unwrap().status, 503);
    assert_eq!(c.get("/owa/").await.unwrap().status, 503);
    assert_eq!(c.get("/EWS/healthcheck.htm").await.unwrap().status, 200);

    // The admin endpoint switches components too.
    let mut admin = Client::connect(ex1.admin_addr).await.unwrap();
    let switched = admin
        .send(
            admin
                .request("POST", "/components/ews/inactive")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(switched.status, 200);
    assert!(
        switched.text().contains("ews inactive"),
        "{}",
        switched.text()
    );
    assert!(!ex1.is_active("ews"));
    assert_eq!(c.get("/ews/healthcheck.htm").await.unwrap().status, 503);
    let unknown = admin
        .send(
            admin
                .request("POST", "/components/smtp/inactive")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    assert!(ex1.counts().health_checks >= 4);

    // Exchange 2010 has no Managed Availability pages.
    let mut old = connect(ex2).await;
    assert_eq!(old.get("/owa/healthcheck.htm").await.unwrap().status, 404);
}

#[tokio::test]
async fn root_redirects_to_owa_from_2013() {
    let lab = array(&[Version::V2013, Version::V2010]);
    let root = connect(&lab.servers[0]).await.get("/").await.unwrap();
    assert_eq!(root.status, 301);
    assert_eq!(root.header("location"), Some("/owa/"));
    let old = connect(&lab.servers[1]).await.get("/").await.unwrap();
    assert_eq!(old.status, 200);
}

/// Logs in on `server` and returns the `cadata=...` cookie pair.
async fn login(server: &ExchangeServer, user: &str) -> String {
    let mut c = connect(server).await;
    let form = format!("destination=%2Fowa%2F&username=CONTOSO%5C{user}&password=secret");
    let reply = post(&mut c, "/owa/auth.owa", form).await.unwrap();
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("/owa/"));
    let cookie = reply.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

async fn owa_page(server: &ExchangeServer, cookie: &str) -> sluice_lab::client::Reply {
    let mut c = connect(server).await;
    let req = c
        .request("GET", "/owa/")
        .header("cookie", cookie)
        .body(empty())
        .unwrap();
    c.send(req).await.unwrap()
}

#[tokio::test]
async fn forms_login_cookies_open_only_where_key_and_format_match() {
    let lab = array(&[Version::V2016, Version::V2016, Version::V2013]);
    let cookie = login(&lab.servers[0], "alice").await;
    assert!(cookie.starts_with(&format!("{}=", owa::SESSION_COOKIE)));
    for server in &lab.servers[..2] {
        let page = owa_page(server, &cookie).await;
        assert_eq!(page.status, 200, "{}", server.name());
        assert!(
            page.text().contains("mailbox of CONTOSO\\alice"),
            "{}",
            page.text()
        );
    }
    let refused = owa_page(&lab.servers[2], &cookie).await;
    assert_eq!(refused.status.as_u16(), 440);
    assert_eq!(lab.servers[2].counts().login_timeouts, 1);
    assert_eq!(lab.servers[0].counts().logins, 1);

    // Without a cookie: pages go to the form, script requests get 440.
    let mut c = connect(&lab.servers[0]).await;
    let page = c.get("/owa/?path=/mail").await.unwrap();
    assert_eq!(page.status, 302);
    assert!(page
        .header("location")
        .unwrap()
        .starts_with(owa::LOGON_PAGE));
    let script = post(&mut c, "/owa/service.svc?action=GetFolder", String::new())
        .await
        .unwrap();
    assert_eq!(script.status.as_u16(), 440);
    let failed = post(&mut c, "/owa/auth.owa", "username=bob&password=".into())
        .await
        .unwrap();
    assert!(failed.header("location").unwrap().ends_with("reason=2"));
}

#[tokio::test]
async fn ews_identity_belongs_to_the_connection() {
    let lab = array(&[Version::V2019]);
    let server = &lab.servers[0];
    let mut alice = connect(server).await;
    let anonymous = post(&mut alice, "/EWS/Exchange.asmx", ews::get_folder_request())
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    let offers: Vec<_> = anonymous
        .headers
        .get_all("www-authenticate")
        .iter()
        .collect();
    assert_eq!(offers, ["Negotiate", "NTLM"]);
    let done = ntlm_login(&mut alice, "/EWS/Exchange.asmx", "alice")
        .await
        .unwrap();
    assert_eq!(done.status, 200);
    let folder = post(&mut alice, "/EWS/Exchange.asmx", ews::get_folder_request())
        .await
        .unwrap();
    assert_eq!(ews::mailbox(&folder.text()).as_deref(), Some("alice"));

    let mut other = connect(server).await;
    let refused = post(&mut other, "/EWS/Exchange.asmx", ews::get_folder_request())
        .await
        .unwrap();
    assert_eq!(refused.status, 401);

    let mut carol = connect(server).await;
    let req = carol
        .request("POST", "/EWS/Exchange.asmx")
        .header("authorization", "Negotiate carol")
        .body(full(ews::get_folder_request()))
        .unwrap();
    let kerberos = carol.send(req).await.unwrap();
    assert_eq!(kerberos.header("persistent-auth"), Some("true"));
    assert_eq!(ews::mailbox(&kerberos.text()).as_deref(), Some("carol"));
}

/// A connection authenticated as `user` with one Negotiate (Kerberos-like) request.
async fn negotiated(server: &ExchangeServer, path: &str, user: &str) -> Client {
    let mut c = connect(server).await;
    let req = c
        .request("GET", path)
        .header("authorization", format!("Negotiate {user}"))
        .body(empty())
        .unwrap();
    assert_eq!(c.send(req).await.unwrap().status, 200);
    c
}

#[tokio::test]
async fn mapi_long_poll_sends_pending_chunks_then_done() {
    let lab = array(&[Version::V2016]);
    let mut c = negotiated(&lab.servers[0], "/mapi/emsmdb/", "dave").await;
    let connect_req = c
        .request("POST", "/mapi/emsmdb/?MailboxId=dave@contoso.lab")
        .header("x-requesttype", "Connect")
        .body(full("connect"))
        .unwrap();
    let connected = c.send(connect_req).await.unwrap();
    assert!(connected.header("content-length").is_some());
    assert!(connected
        .header("set-cookie")
        .unwrap()
        .starts_with("MapiContext="));

    let started = Instant::now();
    let wait = c
        .request("POST", "/mapi/emsmdb/?MailboxId=dave@contoso.lab")
        .header("x-requesttype", "NotificationWait")
        .header("x-requestid", "{E2EA6C1C-E61B-49E9-9CFB-38184F907552}:7")
        .body(full("wait"))
        .unwrap();
    let response = c.send_streaming(wait).await.unwrap();
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(
        response.headers()["x-requestid"],
        "{E2EA6C1C-E61B-49E9-9CFB-38184F907552}:7"
    );
    assert_eq!(response.headers()["x-pendingperiod"], "50");
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks.push(mapi::progress(&data));
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(chunks.first(), Some(&vec!["PROCESSING"]));
    assert_eq!(chunks.last(), Some(&vec!["DONE"]));
    let pendings = chunks.iter().filter(|c| *c == &vec!["PENDING"]).count();
    assert!(pendings >= 3, "{chunks:?}");
}

#[tokio::test]
async fn rpc_channels_echo_stream_out_and_read_in() {
    let lab = array(&[Version::V2013]);
    let server = &lab.servers[0];
    let mut out = negotiated(server, "/rpc/rpcproxy.dll", "erin").await;
    let echo = out
        .request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?guid@contoso.lab:6001")
        .header("content-length", "0")
        .body(empty())
        .unwrap();
    let echo = out.send_streaming(echo).await.unwrap();
    let reason = echo
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes().to_vec());
    assert_eq!(reason.as_deref(), Some(&b"Success"[..]));
    let pdu = echo.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(pdu.len(), 20);
    assert!(rpc::is_rts(&pdu));

    let open = out
        .request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?guid@contoso.lab:6001")
        .body(full(rpc::conn_a1([1; 16])))
        .unwrap();
    let channel = out.send_streaming(open).await.unwrap();
    assert_eq!(
        channel.headers()["content-length"],
        rpc::CHANNEL_LENGTH.to_string().as_str()
    );
    let mut body = channel.into_body();
    let mut received = Vec::new();
    while received.len() < 28 + 44 + 3 * 20 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap();
        received.extend_from_slice(frame.unwrap().unwrap().data_ref().unwrap());
    }
    assert!(rpc::is_rts(&received[..28]) && rpc::is_rts(&received[28..]));
    assert_eq!(&received[72..92], rpc::ping().as_slice());

    let mut inbound = negotiated(server, "/rpc/rpcproxy.dll", "erin").await;
    let before = server.counts().body_bytes;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let streamed = sluice_lab::bodies::ChannelBody(rx)
        .map_err(|e| match e {})
        .boxed_unsync();
    let open = inbound
        .request("RPC_IN_DATA", "/rpc/rpcproxy.dll?guid@contoso.lab:6001")
        .header("content-length", rpc::CHANNEL_LENGTH.to_string())
        .body(streamed)
        .unwrap();
    let pending = tokio::spawn(async move { inbound.send(open).await.map(|r| r.status) });
    tx.send(rpc::conn_b1([1; 16]).into()).await.unwrap();
    for _ in 0..3 {
        tx.send(rpc::ping().into()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.counts().body_bytes < before + 104 + 60 {
        assert!(Instant::now() < deadline, "IN channel bytes did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !pending.is_finished(),
        "the IN channel is answered only when it ends"
    );
    pending.abort();
}

#[tokio::test]
async fn activesync_ping_is_held_for_its_heartbeat() {
    let lab = array(&[Version::V2016]);
    let mut c = connect(&lab.servers[0]).await;
    let options = c
        .send(
            c.request("OPTIONS", "/Microsoft-Server-ActiveSync")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(options
        .header("ms-asprotocolversions")
        .unwrap()
        .contains("16.1"));
    let path = "/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe&DeviceId=D1&DeviceType=Phone";
    let anonymous = post(&mut c, path, activesync::ping_request(300))
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic"));

    let ping = |seconds| {
        c.request("POST", path)
            .header("authorization", "Basic amRvZTpzZWNyZXQ=")
            .body(full(activesync::ping_request(seconds)))
            .unwrap()
    };
    let (held, too_short) = (ping(300), ping(10));
    let started = Instant::now();
    let answer = c.send(held).await.unwrap();
    // Quick timings: a heartbeat second lasts 1 ms.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(activesync::status_of(&answer.body), Some(1));
    let refused = c.send(too_short).await.unwrap();
    assert_eq!(activesync::status_of(&refused.body), Some(5));
}

#[tokio::test]
async fn ews_expect_continue_refuses_before_the_body_and_accepts_after_100() {
    let mut options = ArrayOptions::new(&[Version::V2016]);
    options.tls = false;
    let lab = Array::start(&options).unwrap();
    let server = &lab.servers[0];
    let body = ews::get_folder_request();
    let head = |auth: &str| {
        format!(
            "POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail\r\nContent-Type: text/xml\r\n{auth}\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
    };
    let mut anonymous = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    anonymous
        .get_mut()
        .write_all(head("").as_bytes())
        .await
        .unwrap();
    let refused = raw::read_head(&mut anonymous).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert_eq!(server.counts().body_bytes, 0);

    let mut user = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    let auth = "Authorization: Negotiate frank\r\n";
    user.get_mut()
        .write_all(head(auth).as_bytes())
        .await
        .unwrap();
    let go_on = raw::read_head(&mut user).await.unwrap();
    assert!(go_on.starts_with("HTTP/1.1 100"), "{go_on}");
    user.get_mut().write_all(body.as_bytes()).await.unwrap();
    let answer = raw::read_head(&mut user).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut xml = vec![0; raw::content_length(&answer)];
    user.read_exact(&mut xml).await.unwrap();
    assert_eq!(
        ews::mailbox(&String::from_utf8_lossy(&xml)).as_deref(),
        Some("frank")
    );
    assert_eq!(server.counts().body_bytes, body.len() as u64);
}

async fn subscribe_then_poll(lab: &Array) -> (bool, bool) {
    let mut first = negotiated(&lab.servers[0], "/EWS/Exchange.asmx", "grace").await;
    let made = post(&mut first, "/EWS/Exchange.asmx", ews::subscribe_request())
        .await
        .unwrap();
    let id = ews::subscription_id(&made.text()).expect("a subscription id");
    let mut polls = Vec::new();
    for server in &lab.servers {
        let mut c = negotiated(server, "/EWS/Exchange.asmx", "grace").await;
        let events = post(&mut c, "/EWS/Exchange.asmx", ews::get_events_request(&id))
            .await
            .unwrap();
        polls.push(ews::succeeded(&events.text()));
    }
    (polls[0], polls[1])
}

#[tokio::test]
async fn ews_subscriptions_live_on_their_server_only_on_2010() {
    let old = array(&[Version::V2010, Version::V2010]);
    assert_eq!(subscribe_then_poll(&old).await, (true, false));
    assert_eq!(old.servers[1].counts().unknown_subscriptions, 1);
    let new = array(&[Version::V2016, Version::V2019]);
    assert_eq!(subscribe_then_poll(&new).await, (true, true));
}

#[tokio::test]
async fn each_server_counts_what_it_served() {
    let lab = array(&[Version::V2016]);
    let server = &lab.servers[0];
    let mut c = connect(server).await;
    for path in ["/owa/", "/OWA/auth/logon.aspx", "/OAB/x.lzx", "/nowhere"] {
        c.get(path).await.unwrap();
    }
    let counts = server.counts();
    assert_eq!(counts.of("owa"), 2);
    assert_eq!(counts.of("oab"), 1);
    assert_eq!(counts.total(), 3);
    assert_eq!(counts.connections, 1);
}
