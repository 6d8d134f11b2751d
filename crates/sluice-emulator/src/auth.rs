//! Connection-bound authentication for the workloads IIS runs with Windows
//! authentication (EWS, MAPI, RPC): the identity belongs to the TCP connection.

use std::sync::Mutex;

use http::{HeaderMap, Response, StatusCode};
use sluice_lab::conn_auth::{ConnAuth, Verdict};

use crate::reply::{self, Body};

/// Who the connection is authenticated as.
pub(crate) struct Identity {
    pub user: String,
    /// Negotiate (Kerberos-like): the answer says `Persistent-Auth: true`.
    pub persistent: bool,
}

impl Identity {
    /// Adds what the final answer of an authenticated request carries.
    pub fn mark(&self, response: &mut Response<Body>) {
        if self.persistent {
            reply::header(response, "persistent-auth", "true");
        }
    }
}

/// The `WWW-Authenticate` offers of a 401.
pub(crate) struct Challenge(Vec<String>);

impl Challenge {
    pub fn response(self) -> Response<Body> {
        let mut response = reply::status(StatusCode::UNAUTHORIZED);
        for offer in self.0 {
            reply::header(&mut response, "www-authenticate", &offer);
        }
        response
    }
}

/// The connection's user, or the 401 to answer: decided from the headers alone, so a
/// request with `Expect: 100-continue` is refused before its body is sent.
pub(crate) fn user(auth: &Mutex<ConnAuth>, headers: &HeaderMap) -> Result<Identity, Challenge> {
    let credentials = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verdict = auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .step(credentials);
    match verdict {
        Verdict::User { name, persistent } => Ok(Identity {
            user: name,
            persistent,
        }),
        Verdict::Challenge(offers) => Err(Challenge(offers)),
    }
}
