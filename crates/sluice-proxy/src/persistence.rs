//! Persistence per pool: reading which server a request belongs to (a cookie sluice
//! inserted, the client's address, a header) and remembering where it went.
//!
//! The cookie is HAProxy's `insert indirect nocache`: sluice sets it, removes it from
//! requests before the server sees them, and marks responses that set it private. Its
//! value is a keyed hash of the server's name and address: it reveals neither, cannot be
//! forged into a server outside the pool, and is the same in every pool holding that
//! server, so pools naming the same cookie share sessions.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Instant;

use http::header::{CACHE_CONTROL, COOKIE};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use ring::hmac;
use sluice_balance::StickTable;
use sluice_config::{PersistCookie, Persistence, PersistenceKind, Server};

/// What persistence makes of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    /// The server the request belongs to, if any.
    pub prefer: Option<usize>,
    /// The stick table key (source and header kinds).
    key: Option<u128>,
}

/// How persistence decided, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No session yet: balanced, and remembered.
    New,
    /// Sent to its server.
    Hit,
    /// Its server could not take it: balanced elsewhere, and the session moved.
    Redispatched,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::New => "new",
            Decision::Hit => "hit",
            Decision::Redispatched => "redispatched",
        }
    }

    pub fn of(sticky: Sticky, chosen: usize) -> Decision {
        match sticky.prefer {
            None => Decision::New,
            Some(p) if p == chosen => Decision::Hit,
            Some(_) => Decision::Redispatched,
        }
    }
}

pub struct PoolPersistence {
    pub cfg: Persistence,
    table: Option<StickTable<u128>>,
    /// The cookie value naming each server of the pool.
    cookie_ids: Vec<String>,
    /// Keys header values (never stored as they are: they may be credentials).
    hasher: RandomState,
}

impl PoolPersistence {
    pub fn new(cfg: &Persistence, servers: &[Server], secret: &hmac::Key) -> Self {
        let table = match cfg.kind {
            PersistenceKind::Cookie(_) => None,
            _ => Some(StickTable::new(
                NonZeroUsize::new(cfg.max_entries).unwrap_or(NonZeroUsize::MIN),
                cfg.idle_timeout,
            )),
        };
        PoolPersistence {
            cfg: cfg.clone(),
            table,
            cookie_ids: servers.iter().map(|s| cookie_id(secret, s)).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Finds the request's server, if it has one, and (cookie kind) removes sluice's
    /// cookie from the request.
    pub fn read(&self, headers: &mut HeaderMap, client: IpAddr, now: Instant) -> Sticky {
        match &self.cfg.kind {
            PersistenceKind::Cookie(c) => {
                let value = take_cookie(headers, &c.name);
                let prefer = value.and_then(|v| self.cookie_ids.iter().position(|id| *id == v));
                Sticky { prefer, key: None }
            }
            PersistenceKind::Source {
                prefix_v4,
                prefix_v6,
            } => self.lookup(Some(source_key(client, *prefix_v4, *prefix_v6)), now),
            PersistenceKind::Header(name) => {
                let key = headers
                    .get(name.as_str())
                    .map(|v| u128::from(self.hasher.hash_one(v.as_bytes())));
                self.lookup(key, now)
            }
        }
    }

    fn lookup(&self, key: Option<u128>, now: Instant) -> Sticky {
        let prefer = key
            .zip(self.table.as_ref())
            .and_then(|(k, t)| t.get(&k, now))
            .map(|s| s as usize);
        Sticky { prefer, key }
    }

    /// Remembers that the request went to `chosen`; for the cookie kind, returns the
    /// `Set-Cookie` value when the client does not already hold the right one.
    pub fn remember(&self, sticky: Sticky, chosen: usize, now: Instant) -> Option<HeaderValue> {
        match &self.cfg.kind {
            PersistenceKind::Cookie(c) if sticky.prefer != Some(chosen) => {
                set_cookie(c, self.cookie_ids.get(chosen)?)
            }
            PersistenceKind::Cookie(_) => None,
            _ => {
                // A hit was already renewed by the lookup.
                if let (Some(key), Some(table)) = (sticky.key, &self.table) {
                    if sticky.prefer != Some(chosen) {
                        table.set(key, chosen as u32, now);
                    }
                }
                None
            }
        }
    }

    /// Live stick table entries; `None` for the cookie kind, which keeps no table.
    pub fn entries(&self) -> Option<usize> {
        self.table.as_ref().map(StickTable::len)
    }
}

/// The key for the persistence cookie's values: the configured secret, else a random one.
pub fn cookie_key(secret: Option<&str>) -> hmac::Key {
    match secret {
        Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()),
        None => hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system random source works"),
    }
}

fn cookie_id(key: &hmac::Key, server: &Server) -> String {
    let identity = format!("{}\0{}", server.name, server.address);
    let tag = hmac::sign(key, identity.as_bytes());
    tag.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The client's address with only its first `prefix` bits, as one number (IPv4 mapped
/// into IPv6).
fn source_key(client: IpAddr, prefix_v4: u8, prefix_v6: u8) -> u128 {
    let prefix = match client {
        IpAddr::V4(_) => prefix_v4,
        IpAddr::V6(_) => prefix_v6,
    };
    let network = IpNet::new(client, prefix).map_or(client, |n| n.network());
    match network {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Removes cookie `name` from the request's `Cookie` headers and returns its value. Read
/// as bytes: a header with other non-ASCII cookies in it must lose sluice's cookie too.
fn take_cookie(headers: &mut HeaderMap, name: &str) -> Option<String> {
    if !headers.contains_key(COOKIE) {
        return None;
    }
    let mut found = None;
    let mut kept = Vec::new();
    for value in headers.get_all(COOKIE) {
        let mut others: Vec<&[u8]> = Vec::new();
        let pairs = value
            .as_bytes()
            .split(|b| *b == b';')
            .map(<[u8]>::trim_ascii);
        for pair in pairs.filter(|p| !p.is_empty()) {
            let (key, v) = match pair.iter().position(|b| *b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &b""[..]),
            };
            if key.trim_ascii() == name.as_bytes() {
                found = Some(String::from_utf8_lossy(v.trim_ascii()).into_owned());
            } else {
                others.push(pair);
            }
        }
        if !others.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&others.join(&b"; "[..])) {
                kept.push(v);
            }
        }
    }
    if found.is_some() {
        headers.remove(COOKIE);
        for value in kept {
            headers.append(COOKIE, value);
        }
    }
    found
}

fn set_cookie(c: &PersistCookie, id: &str) -> Option<HeaderValue> {
    let mut text = format!("{}={id}; Path={}", c.name, c.path);
    if let Some(domain) = &c.domain {
        text.push_str(&format!("; Domain={domain}"));
    }
    if let Some(age) = c.max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if c.secure {
        text.push_str("; Secure");
    }
    if c.http_only {
        text.push_str("; HttpOnly");
    }
    if let Some(same_site) = c.same_site {
        text.push_str(&format!("; SameSite={}", same_site.as_str()));
    }
    HeaderValue::from_str(&text).ok()
}

/// A response carrying a client's server cookie must not be served to other clients by
/// a shared cache.
pub fn forbid_shared_caching(headers: &mut HeaderMap) {
    let current = headers
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let lower = current.to_ascii_lowercase();
    if lower.contains("private") || lower.contains("no-store") {
        return;
    }
    let value = if current.trim().is_empty() {
        "private".to_string()
    } else {
        format!("{current}, private")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(CACHE_CONTROL, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::OnServerDown;
    use std::time::Duration;

    fn servers() -> Vec<Server> {
        (1..=3)
            .map(|i| Server {
                name: format!("cas{i}").into(),
                address: format!("10.0.0.{i}:443").parse().unwrap(),
                weight: 1,
                max_connections: None,
                backup: false,
            })
            .collect()
    }

    fn persistence(kind: PersistenceKind) -> Persistence {
        Persistence {
            kind,
            idle_timeout: Duration::from_secs(60),
            max_entries: 100,
            on_server_down: OnServerDown::Redispatch,
        }
    }

    fn cookie_kind() -> PersistenceKind {
        PersistenceKind::Cookie(PersistCookie {
            name: "SLUICE".into(),
            path: "/".into(),
            domain: None,
            max_age: None,
            secure: true,
            http_only: true,
            same_site: None,
        })
    }

    #[test]
    fn cookie_values_name_servers_opaquely_and_the_cookie_never_reaches_them() {
        let key = cookie_key(Some("a secret of sixteen+"));
        let p = PoolPersistence::new(&persistence(cookie_kind()), &servers(), &key);
        let set = p.remember(Sticky::default(), 1, Instant::now()).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.ends_with("; Path=/; Secure; HttpOnly"), "{set}");
        assert!(!set.contains("cas2") && !set.contains("10.0.0.2"), "{set}");
        let pair = set.split(';').next().unwrap();

        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, format!("a=1; {pair}; b=2").parse().unwrap());
        let sticky = p.read(&mut headers, "192.0.2.1".parse().unwrap(), Instant::now());
        assert_eq!(sticky.prefer, Some(1));
        assert_eq!(headers[COOKIE], "a=1; b=2");
        assert_eq!(p.remember(sticky, 1, Instant::now()), None);

        // Another pool with the same server and key reads the same cookie.
        let other = PoolPersistence::new(&persistence(cookie_kind()), &servers()[1..], &key);
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, pair.parse().unwrap());
        let sticky = other.read(&mut headers, "192.0.2.1".parse().unwrap(), Instant::now());
        assert_eq!(sticky.prefer, Some(0));
        assert!(!headers.contains_key(COOKIE));
    }

    #[test]
    fn the_cookie_is_removed_from_a_header_with_non_ascii_cookies_too() {
        let key = cookie_key(Some("a secret of sixteen+"));
        let p = PoolPersistence::new(&persistence(cookie_kind()), &servers(), &key);
        let mut h = HeaderMap::new();
        let raw = b"X=caf\xc3\xa9; SLUICE=1; Y=2";
        h.insert(COOKIE, HeaderValue::from_bytes(raw).unwrap());
        p.read(&mut h, "192.0.2.1".parse().unwrap(), Instant::now());
        assert_eq!(h[COOKIE].as_bytes(), b"X=caf\xc3\xa9; Y=2");
    }

    #[test]
    fn a_forged_cookie_names_no_server() {
        let p = PoolPersistence::new(&persistence(cookie_kind()), &servers(), &cookie_key(None));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "SLUICE=cas1".parse().unwrap());
        let sticky = p.read(&mut headers, "192.0.2.1".parse().unwrap(), Instant::now());
        assert_eq!(sticky.prefer, None);
    }

    #[test]
    fn source_persistence_groups_a_network() {
        let kind = PersistenceKind::Source {
            prefix_v4: 24,
            prefix_v6: 64,
        };
        let p = PoolPersistence::new(&persistence(kind), &servers(), &cookie_key(None));
        let now = Instant::now();
        let mut h = HeaderMap::new();
        let first = p.read(&mut h, "198.51.100.7".parse().unwrap(), now);
        assert_eq!(first.prefer, None);
        p.remember(first, 2, now);
        let neighbour = p.read(&mut h, "198.51.100.200".parse().unwrap(), now);
        assert_eq!(neighbour.prefer, Some(2));
        let stranger = p.read(&mut h, "198.51.101.7".parse().unwrap(), now);
        assert_eq!(stranger.prefer, None);
        let v6 = p.read(&mut h, "2001:db8::1".parse().unwrap(), now);
        p.remember(v6, 0, now);
        let v6_neighbour = p.read(&mut h, "2001:db8::ffff".parse().unwrap(), now);
        assert_eq!(v6_neighbour.prefer, Some(0));
        assert_eq!(p.entries(), Some(2));
    }

    #[test]
    fn responses_setting_the_cookie_become_private() {
        let mut h = HeaderMap::new();
        forbid_shared_caching(&mut h);
        assert_eq!(h[CACHE_CONTROL], "private");
        h.insert(CACHE_CONTROL, "max-age=60".parse().unwrap());
        forbid_shared_caching(&mut h);
        assert_eq!(h[CACHE_CONTROL], "max-age=60, private");
        h.insert(CACHE_CONTROL, "no-store".parse().unwrap());
        forbid_shared_caching(&mut h);
        assert_eq!(h[CACHE_CONTROL], "no-store");
    }
}
