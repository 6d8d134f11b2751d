//! Connection-bound authentication: once NTLM or Negotiate is seen, a client connection
//! owns its server connection. Servers here bind the identity to the TCP connection, as
//! IIS does; any sharing of server connections between clients shows as a wrong identity.

use std::time::Duration;

use sluice_lab::client::empty;
use sluice_lab::conn_auth::ntlm_login;
use sluice_lab::{Backend, Client};

use crate::harness::{pool, service, start, wait_for, Lb};

const ROUNDS: usize = 50;

fn pinned_total(lb: &Lb) -> u64 {
    lb.proxy.server_status().iter().map(|s| s.pinned).sum()
}

/// `ROUNDS` requests on `client`'s connection, each answered as `user` (or, for `None`,
/// refused with a challenge); returns the servers that answered.
async fn keep_asking(mut client: Client, user: Option<&str>) -> (Client, Vec<String>) {
    let mut servers = Vec::new();
    for round in 0..ROUNDS {
        let reply = client.get("/whoami").await.unwrap();
        match user {
            Some(user) => {
                assert_eq!(reply.status, 200, "{user}, round {round}");
                assert_eq!(reply.text(), format!("{user}\n"), "round {round}");
                assert_eq!(reply.header("x-identity"), Some(user), "round {round}");
            }
            None => {
                assert_eq!(reply.status, 401, "anonymous got {}", reply.text());
                assert_eq!(reply.header("x-identity"), None);
            }
        }
        servers.push(reply.header("x-server").unwrap_or("?").to_string());
        tokio::task::yield_now().await;
    }
    (client, servers)
}

#[tokio::test]
async fn interleaved_ntlm_sessions_never_see_each_others_identity() {
    let a = Backend::start("cas1").await;
    let b = Backend::start("cas2").await;
    let config = service("ews", "") + &pool("ews", &[("cas1", a.addr), ("cas2", b.addr)], "");
    let lb = start(&config).await;
    let mut sessions = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut client = Client::connect(lb.addr).await.unwrap();
        let reply = ntlm_login(&mut client, "/whoami", user).await.unwrap();
        assert_eq!(reply.text(), format!("{user}\n"), "{user} logs in");
        sessions.push((client, Some(user)));
    }
    sessions.push((Client::connect(lb.addr).await.unwrap(), None));
    let runs = sessions
        .into_iter()
        .map(|(client, user)| tokio::spawn(async move { (user, keep_asking(client, user).await) }));
    // Meanwhile, clients with a new connection per request must never be anyone.
    for _ in 0..ROUNDS {
        let mut fresh = Client::connect(lb.addr).await.unwrap();
        let reply = fresh.get("/whoami").await.unwrap();
        assert_eq!(reply.status, 401, "a new client got {}", reply.text());
    }
    let mut clients = Vec::new();
    for run in runs {
        let (user, (client, servers)) = run.await.unwrap();
        servers
            .windows(2)
            .for_each(|w| assert_eq!(w[0], w[1], "{user:?} stays on one server: {servers:?}"));
        clients.push(client);
    }
    assert_eq!(
        pinned_total(&lb),
        4,
        "three users and the challenged anonymous client"
    );
    let lines = lb.log_lines();
    let pinned = lines.iter().filter(|l| l.contains(" pinned=1 ")).count();
    assert!(
        pinned >= 4 * ROUNDS,
        "{pinned} pinned lines of {}",
        lines.len()
    );
    drop(clients);
    let released = wait_for(Duration::from_secs(2), || pinned_total(&lb) == 0).await;
    assert!(
        released.is_some(),
        "pinned connections close with their clients"
    );
}

#[tokio::test]
async fn negotiate_answered_with_persistent_auth_pins_without_any_401() {
    let server = Backend::start("cas1").await;
    let config = service("ews", "") + &pool("ews", &[("cas1", server.addr)], "");
    let lb = start(&config).await;
    let mut alice = Client::connect(lb.addr).await.unwrap();
    let first = alice
        .request("GET", "/whoami")
        .header("authorization", "Negotiate alice")
        .body(empty())
        .unwrap();
    let reply = alice.send(first).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("persistent-auth"), Some("true"));
    // With one server, a connection returned to the shared pool would be the very next
    // one another client gets.
    let mut other = Client::connect(lb.addr).await.unwrap();
    for round in 0..ROUNDS {
        let theirs = other.get("/whoami").await.unwrap();
        assert_eq!(theirs.status, 401, "round {round}: {}", theirs.text());
        let mine = alice.get("/whoami").await.unwrap();
        assert_eq!(mine.text(), "alice\n", "round {round}");
    }
}

#[tokio::test]
async fn losing_the_pinned_server_connection_closes_the_client_connection() {
    let server = Backend::start("cas1").await;
    let config = service("ews", "") + &pool("ews", &[("cas1", server.addr)], "");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    ntlm_login(&mut client, "/whoami", "alice").await.unwrap();
    server.restart().await;
    let closed = wait_for(Duration::from_secs(2), || client.is_closed()).await;
    assert!(
        closed.is_some(),
        "the client connection follows its pinned server connection"
    );
    // A new connection starts unauthenticated: nothing of alice's session survives.
    let mut again = Client::connect(lb.addr).await.unwrap();
    assert_eq!(again.get("/whoami").await.unwrap().status, 401);
}

#[tokio::test]
async fn without_pinning_authenticated_connections_are_closed_not_shared() {
    let server = Backend::start("cas1").await;
    let config = service("ews", "") + &pool("ews", &[("cas1", server.addr)], "pin_auth = false");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    let reply = ntlm_login(&mut client, "/whoami", "alice").await.unwrap();
    assert_eq!(
        reply.status, 401,
        "the third message reaches a fresh connection"
    );
    let mut other = Client::connect(lb.addr).await.unwrap();
    assert_eq!(other.get("/whoami").await.unwrap().status, 401);
    assert_eq!(
        server.connections(),
        3,
        "each authenticating exchange had its own connection"
    );
    assert_eq!(pinned_total(&lb), 0);
}

#[tokio::test]
async fn a_request_for_a_pool_without_the_pinned_server_closes_the_pin() {
    let cas1 = Backend::start("cas1").await;
    let cas2 = Backend::start("cas2").await;
    let routes =
        "[[service.route]]\nname = \"ews\"\nmatch = { path = \"/whoami\" }\npool = \"ews\"\n";
    let config = service("owa", routes)
        + &pool("ews", &[("cas1", cas1.addr)], "")
        + &pool("owa", &[("cas2", cas2.addr)], "");
    let lb = start(&config).await;
    let mut client = Client::connect(lb.addr).await.unwrap();
    ntlm_login(&mut client, "/whoami", "alice").await.unwrap();
    assert_eq!(pinned_total(&lb), 1);
    let elsewhere = client.get("/owa/").await.unwrap();
    assert_eq!(elsewhere.header("x-server"), Some("cas2"));
    assert_eq!(
        pinned_total(&lb),
        0,
        "the pinned connection was closed, not shared"
    );
    let again = client.get("/whoami").await.unwrap();
    assert_eq!(
        again.status,
        401,
        "alice must authenticate again: {}",
        again.text()
    );
}
