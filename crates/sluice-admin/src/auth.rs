//! Who may do what: reads from loopback are open, everything else needs the token.

use std::net::SocketAddr;

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The configuration has no `token_file`: changes are off.
    NoTokenConfigured,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not the configured one.
    Wrong,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::NoTokenConfigured => {
                "changes are disabled: set [admin] token_file in the configuration"
            }
            Refusal::Missing => "this needs Authorization: Bearer <token>",
            Refusal::Wrong => "wrong token",
        }
    }
}

/// Checks a request: `change` for anything that is not a read.
pub fn check(
    headers: &HeaderMap,
    peer: SocketAddr,
    change: bool,
    token: Option<&str>,
) -> Result<(), Refusal> {
    if !change && peer.ip().is_loopback() {
        return Ok(());
    }
    let token = token.ok_or(Refusal::NoTokenConfigured)?;
    let offered = bearer(headers).ok_or(Refusal::Missing)?;
    if same_secret(offered, token) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares digests rather than the secrets, so the time taken says nothing about how
/// much of an offered token was right.
fn same_secret(offered: &str, secret: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(offered).as_ref() == digest(secret).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef-token";

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn loopback_reads_are_open_and_everything_else_needs_the_token() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(check(&none, local, false, Some(TOKEN)), Ok(()));
        assert_eq!(check(&none, local, false, None), Ok(()));
        assert_eq!(
            check(&none, remote, false, Some(TOKEN)),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&none, local, true, Some(TOKEN)),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&none, local, true, None),
            Err(Refusal::NoTokenConfigured)
        );
        let good = with_auth(&format!("Bearer {TOKEN}"));
        assert_eq!(check(&good, local, true, Some(TOKEN)), Ok(()));
        assert_eq!(check(&good, remote, false, Some(TOKEN)), Ok(()));
        let lower = with_auth(&format!("bearer  {TOKEN}"));
        assert_eq!(check(&lower, remote, true, Some(TOKEN)), Ok(()));
        let wrong = with_auth("Bearer 0123456789abcdef-tokem");
        assert_eq!(check(&wrong, local, true, Some(TOKEN)), Err(Refusal::Wrong));
        let basic = with_auth(&format!("Basic {TOKEN}"));
        assert_eq!(
            check(&basic, local, true, Some(TOKEN)),
            Err(Refusal::Missing)
        );
    }
}
