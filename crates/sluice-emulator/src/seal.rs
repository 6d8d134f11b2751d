//! Forms-login session cookies, sealed (AES-256-GCM) with a key standing for the server's
//! TLS certificate, as Exchange encrypts `cadata` under the certificate's key.
//!
//! The cookie format is bound in as associated data: Exchange 2013 (15.0) and 2016/2019
//! (15.1+) cannot read each other's cookies even with the same certificate, which is why
//! OWA across mixed versions loops to the login page without persistence.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sluice_exchange::Version;

/// A sealing key; clone it to servers that share a certificate.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    pub fn generate() -> SealKey {
        let mut key = [0; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source works");
        SealKey(key)
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

pub(crate) struct Seal {
    key: LessSafeKey,
    format: &'static [u8],
}

/// How long a session lasts (Exchange's private-computer default is 8 hours).
const SESSION: Duration = Duration::from_secs(8 * 3600);

impl Seal {
    pub fn new(key: &SealKey, version: Version) -> Seal {
        let format: &[u8] = match version {
            Version::V2010 => b"14",
            Version::V2013 => b"15.0",
            Version::V2016 | Version::V2019 => b"15.1",
        };
        Seal {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.0).expect("32-byte key")),
            format,
        }
    }

    /// A cookie value holding `user` until the session expires.
    pub fn seal(&self, user: &str) -> String {
        let expires = now() + SESSION.as_secs();
        let mut data = format!("{expires}\n{user}").into_bytes();
        let mut nonce = [0; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source works");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.format),
                &mut data,
            )
            .expect("sealing a short cookie");
        let mut out = hex(&nonce);
        out.push_str(&hex(&data));
        out
    }

    /// The user a cookie value holds, if this server can open it and it has not expired.
    pub fn open(&self, value: &str) -> Option<String> {
        let mut bytes = unhex(value)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.format), &mut data)
            .ok()?;
        let (expires, user) = std::str::from_utf8(plain).ok()?.split_once('\n')?;
        (expires.parse::<u64>().ok()? > now()).then(|| user.to_string())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_opens_its_own_cookie() {
        let seal = Seal::new(&SealKey::generate(), Version::V2016);
        let cookie = seal.seal("CONTOSO\\alice");
        assert_eq!(seal.open(&cookie).as_deref(), Some("CONTOSO\\alice"));
    }

    #[test]
    fn a_shared_key_opens_across_servers_of_one_format_only() {
        let key = SealKey::generate();
        let cookie = Seal::new(&key, Version::V2016).seal("bob");
        assert_eq!(
            Seal::new(&key, Version::V2019).open(&cookie).as_deref(),
            Some("bob")
        );
        assert_eq!(Seal::new(&key, Version::V2013).open(&cookie), None);
        assert_eq!(
            Seal::new(&SealKey::generate(), Version::V2016).open(&cookie),
            None
        );
    }

    #[test]
    fn tampered_and_malformed_values_open_to_nothing() {
        let seal = Seal::new(&SealKey::generate(), Version::V2016);
        let mut cookie = seal.seal("carol");
        let last = cookie.pop().unwrap();
        cookie.push(if last == '0' { '1' } else { '0' });
        assert_eq!(seal.open(&cookie), None);
        for junk in ["", "zz", "abc", "00", "é"] {
            assert_eq!(seal.open(junk), None, "{junk:?}");
        }
    }
}
