//! Connection-bound authentication as Exchange's IIS does it, reduced to what a load
//! balancer can get wrong: the identity belongs to the TCP connection, not the request.
//!
//! NTLM-like, three messages on one connection:
//! 1. a request without credentials gets `401` offering `Negotiate` and `NTLM`;
//! 2. `Authorization: NTLM negotiate` gets `401` with `WWW-Authenticate: NTLM
//!    challenge.<nonce>`, the nonce remembered by this connection only;
//! 3. `Authorization: NTLM authenticate.<user>.<nonce>` authenticates the connection as
//!    `<user>` if the nonce is the one this connection issued.
//!
//! Negotiate (Kerberos-like): `Authorization: Negotiate <user>` authenticates at once and
//! the answer carries `Persistent-Auth: true`, with no 401 at all.
//!
//! From then on every request on the connection, with or without credentials, is served
//! as that user. A proxy that lets another client reuse the connection hands it the user.

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::client::{empty, BoxError, Client, Reply};

/// One connection's authentication state.
#[derive(Debug, Default)]
pub struct ConnAuth {
    state: State,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum State {
    #[default]
    Anonymous,
    Challenged(u64),
    Authenticated(String),
}

/// What the server answers one request with.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the request as this user; `persistent` adds `Persistent-Auth: true`.
    User { name: String, persistent: bool },
    /// Answer 401 with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
}

static NONCES: AtomicU64 = AtomicU64::new(1);

impl ConnAuth {
    /// Reads the request's `Authorization` value (if any) and moves the state on.
    pub fn step(&mut self, authorization: Option<&str>) -> Verdict {
        let Some(credentials) = authorization else {
            return match &self.state {
                State::Authenticated(name) => Verdict::User {
                    name: name.clone(),
                    persistent: false,
                },
                _ => offer(),
            };
        };
        let (scheme, token) = credentials.split_once(' ').unwrap_or((credentials, ""));
        if scheme.eq_ignore_ascii_case("negotiate") && !token.is_empty() {
            self.state = State::Authenticated(token.to_string());
            return Verdict::User {
                name: token.to_string(),
                persistent: true,
            };
        }
        if !scheme.eq_ignore_ascii_case("ntlm") {
            return offer();
        }
        self.ntlm(token)
    }

    fn ntlm(&mut self, token: &str) -> Verdict {
        if token == "negotiate" {
            let nonce = NONCES.fetch_add(1, Ordering::Relaxed);
            self.state = State::Challenged(nonce);
            return Verdict::Challenge(vec![format!("NTLM challenge.{nonce}")]);
        }
        let answer = token.strip_prefix("authenticate.").and_then(|rest| {
            let (user, nonce) = rest.rsplit_once('.')?;
            Some((user.to_string(), nonce.parse::<u64>().ok()?))
        });
        match (answer, &self.state) {
            (Some((user, nonce)), State::Challenged(issued)) if nonce == *issued => {
                self.state = State::Authenticated(user.clone());
                Verdict::User {
                    name: user,
                    persistent: false,
                }
            }
            _ => {
                self.state = State::Anonymous;
                offer()
            }
        }
    }
}

fn offer() -> Verdict {
    Verdict::Challenge(vec!["Negotiate".into(), "NTLM".into()])
}

/// Runs the three NTLM-like messages for `user` over `client`'s connection and returns
/// the final answer (200 with the user's name when the connection is now theirs).
pub async fn ntlm_login(client: &mut Client, path: &str, user: &str) -> Result<Reply, BoxError> {
    let negotiate = client
        .request("GET", path)
        .header("authorization", "NTLM negotiate")
        .body(empty())?;
    let challenge = client.send(negotiate).await?;
    let nonce = challenge
        .header("www-authenticate")
        .and_then(|v| v.strip_prefix("NTLM challenge."))
        .map(str::to_string);
    let Some(nonce) = nonce.filter(|_| challenge.status == StatusCode::UNAUTHORIZED) else {
        return Err(format!(
            "no NTLM challenge: {} {:?}",
            challenge.status, challenge.headers
        )
        .into());
    };
    let authenticate = client
        .request("GET", path)
        .header("authorization", format!("NTLM authenticate.{user}.{nonce}"))
        .body(empty())?;
    client.send(authenticate).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, persistent: bool) -> Verdict {
        Verdict::User {
            name: name.into(),
            persistent,
        }
    }

    #[test]
    fn three_messages_bind_the_connection() {
        let mut c = ConnAuth::default();
        assert_eq!(c.step(None), offer());
        let Verdict::Challenge(ch) = c.step(Some("NTLM negotiate")) else {
            panic!("expected a challenge");
        };
        let nonce = ch[0].strip_prefix("NTLM challenge.").unwrap();
        let token = format!("NTLM authenticate.alice.{nonce}");
        assert_eq!(c.step(Some(&token)), user("alice", false));
        assert_eq!(c.step(None), user("alice", false));
    }

    #[test]
    fn a_nonce_from_another_connection_is_refused() {
        let mut first = ConnAuth::default();
        let mut second = ConnAuth::default();
        let Verdict::Challenge(ch) = first.step(Some("NTLM negotiate")) else {
            panic!("expected a challenge");
        };
        let nonce = ch[0].strip_prefix("NTLM challenge.").unwrap();
        let token = format!("NTLM authenticate.bob.{nonce}");
        assert_eq!(second.step(Some(&token)), offer());
        assert_eq!(second.step(None), offer());
    }

    #[test]
    fn negotiate_binds_at_once_and_says_so() {
        let mut c = ConnAuth::default();
        assert_eq!(c.step(Some("Negotiate carol")), user("carol", true));
        assert_eq!(c.step(None), user("carol", false));
        assert_eq!(c.step(Some("Basic eDp5")), offer());
    }
}
