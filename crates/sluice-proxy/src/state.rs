//! The runtime picture built from one configuration: pools with their servers, each
//! server's health, active request count and idle connections. The data plane reads it
//! without locks except the short idle-stack one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use ring::hmac;
use sluice_balance::slow_start::{self, Throttle};
use sluice_balance::{least_connections, rendezvous, SmoothWeighted};
use sluice_config::{Algorithm, Config, HashOn, Pool, Server};
use sluice_health::ServerHealth;

use crate::persistence::PoolPersistence;
use crate::tls::{client_config, TlsFileError};
use crate::upstream::{Connector, IdlePool};

pub struct ServerRt {
    pub cfg: Server,
    pub health: Arc<ServerHealth>,
    active: AtomicU64,
    /// Server connections owned by one client connection (connection-bound auth).
    pub pinned: AtomicU64,
    pub idle: IdlePool,
}

impl ServerRt {
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Can take a new client: up, weighted, not full.
    fn can_take(&self) -> bool {
        self.cfg.weight > 0 && self.can_continue()
    }

    /// Can take a request of a client persisted to it: weight 0 only stops new clients.
    pub fn can_continue(&self) -> bool {
        self.health.is_up()
            && self
                .cfg
                .max_connections
                .is_none_or(|max| self.active() < u64::from(max))
    }

    /// Counts a request on this server until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

pub struct ActiveGuard(Arc<ServerRt>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct PoolRt {
    pub cfg: Pool,
    pub servers: Vec<Arc<ServerRt>>,
    pub connector: Connector,
    pub persistence: Option<PoolPersistence>,
    round_robin: SmoothWeighted,
    tie_break: AtomicUsize,
    /// Stable identities for hashing: a hash of each server's name.
    hash_ids: Vec<u64>,
    /// Slow start's admission, per server.
    throttles: Vec<Throttle>,
}

/// What the request brings to the choice of a server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Choice {
    /// The server persistence holds it to.
    pub prefer: Option<usize>,
    /// Its key for `algorithm = "hash"`.
    pub hash: Option<u64>,
}

impl PoolRt {
    fn new(cfg: &Pool, cookie_key: &hmac::Key) -> Result<Self, TlsFileError> {
        let tls = cfg.tls.as_ref().map(client_config).transpose()?;
        let sni = cfg.tls.as_ref().and_then(|t| t.sni.as_deref());
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let (rise, fall) = cfg.health.as_ref().map_or((1, 1), |h| (h.rise, h.fall));
                Arc::new(ServerRt {
                    cfg: s.clone(),
                    health: Arc::new(ServerHealth::new(rise, fall)),
                    active: AtomicU64::new(0),
                    pinned: AtomicU64::new(0),
                    idle: IdlePool::default(),
                })
            })
            .collect();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        Ok(PoolRt {
            cfg: cfg.clone(),
            servers,
            connector: Connector::new(tls, sni, cfg.timeouts.connect),
            persistence: cfg
                .persistence
                .as_ref()
                .map(|p| PoolPersistence::new(p, &cfg.servers, cookie_key)),
            round_robin: SmoothWeighted::new(&weights),
            tie_break: AtomicUsize::new(0),
            hash_ids: cfg
                .servers
                .iter()
                .map(|s| stable_hash(s.name.as_bytes()))
                .collect(),
            throttles: cfg.servers.iter().map(|_| Throttle::default()).collect(),
        })
    }

    /// The persisted server if it can continue, else a primary server that can take a
    /// request, else a backup; never one in `tried`.
    pub fn pick(&self, tried: &[usize], choice: Choice) -> Option<usize> {
        let untried = |i: &usize| !tried.contains(i);
        if let Some(i) = choice.prefer.filter(untried) {
            if self.servers.get(i).is_some_and(|s| s.can_continue()) {
                return Some(i);
            }
        }
        let usable = |i: usize| untried(&i) && self.servers[i].can_take();
        self.choose(|i| !self.servers[i].cfg.backup && usable(i), choice)
            .or_else(|| self.choose(|i| self.servers[i].cfg.backup && usable(i), choice))
    }

    fn choose(&self, eligible: impl Fn(usize) -> bool, choice: Choice) -> Option<usize> {
        let weight = |i: usize| self.servers[i].cfg.weight;
        match (&self.cfg.algorithm, choice.hash) {
            (Algorithm::Hash(_), Some(key)) => rendezvous(
                self.servers.len(),
                key,
                eligible,
                |i| self.hash_ids[i],
                weight,
            ),
            (Algorithm::LeastConn, _) => least_connections(
                self.servers.len(),
                self.tie_break.fetch_add(1, Ordering::Relaxed),
                eligible,
                |i| self.servers[i].active(),
                // Per mille, so a server in slow start can weigh a fraction.
                |i| ((f64::from(weight(i)) * 1000.0 * self.share(i)) as u32).max(1),
            ),
            _ => self
                .round_robin
                .pick(|i| eligible(i) && self.throttles[i].admit(self.share(i))),
        }
    }

    /// The share of its weight server `i` gets now: less than all while in slow start.
    /// Pools without slow start never read the clock.
    fn share(&self, i: usize) -> f64 {
        let Some(window) = self.cfg.slow_start else {
            return 1.0;
        };
        match self.servers[i].health.up_for(Instant::now()) {
            Some(up_for) => slow_start::share(up_for, window),
            None => 1.0,
        }
    }

    /// The request's key for `algorithm = "hash"`: the same in every sluice instance.
    pub fn hash_key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        match &self.cfg.algorithm {
            Algorithm::Hash(HashOn::Source) => Some(match client {
                IpAddr::V4(a) => stable_hash(&a.octets()),
                IpAddr::V6(a) => stable_hash(&a.octets()),
            }),
            Algorithm::Hash(HashOn::Header(name)) => headers
                .get(name.as_str())
                .map(|v| stable_hash(v.as_bytes())),
            _ => None,
        }
    }
}

/// A hash that every build and every instance computes alike (SHA-256, first 8 bytes).
fn stable_hash(data: &[u8]) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut first = [0; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(first)
}

/// Everything the data plane needs for one configuration generation.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Vec<Arc<PoolRt>>,
}

impl Snapshot {
    /// `cookie_key` keys the persistence cookie's values.
    pub fn build(config: Arc<Config>, cookie_key: &hmac::Key) -> Result<Self, TlsFileError> {
        let pools = config
            .pools
            .iter()
            .map(|p| PoolRt::new(p, cookie_key).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Snapshot { config, pools })
    }
}
