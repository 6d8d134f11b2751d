//! The runtime picture built from one configuration: services with their TLS acceptors,
//! pools with their servers. The data plane reads it without locks except the short
//! idle-stack one. A new generation built from a reload keeps the live state (health,
//! counts, idle connections, stick tables, the operator's modes) of what did not change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use ring::hmac;
use sluice_balance::slow_start::{self, Throttle};
use sluice_balance::{least_connections, rendezvous, SmoothWeighted};
use sluice_config::{Algorithm, Config, Global, HashOn, Pool};
use tokio_rustls::TlsAcceptor;

use crate::persistence::PoolPersistence;
pub use crate::server::{ActiveGuard, ServerLive, ServerRt};
use crate::tls::{client_config, server_config, TlsFileError};
use crate::upstream::Connector;

pub struct PoolRt {
    pub cfg: Pool,
    pub servers: Vec<Arc<ServerRt>>,
    pub connector: Connector,
    pub persistence: Option<Arc<PoolPersistence>>,
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
    /// `old` is the same-named pool of the generation this one replaces.
    fn new(
        cfg: &Pool,
        global: &Global,
        cookie_key: &hmac::Key,
        old: Option<&PoolRt>,
    ) -> Result<Self, TlsFileError> {
        let tls = cfg.tls.as_ref().map(client_config).transpose()?;
        let sni = cfg.tls.as_ref().and_then(|t| t.sni.as_deref());
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                Arc::new(ServerRt {
                    cfg: s.clone(),
                    live: live_state(cfg, s, old),
                })
            })
            .collect();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        Ok(PoolRt {
            cfg: cfg.clone(),
            servers,
            connector: Connector::new(tls, sni, cfg.timeouts.connect)
                .preserving_header_case(global.preserve_header_case),
            persistence: stick_tables(cfg, cookie_key, old),
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
                |i| self.servers[i].live.active(),
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
        match self.servers[i].live.health.up_for(Instant::now()) {
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

/// The live state a server keeps from the generation before: all of it while its address
/// and how it is reached and checked are unchanged, else only the operator's mode.
fn live_state(
    pool: &Pool,
    server: &sluice_config::Server,
    old: Option<&PoolRt>,
) -> Arc<ServerLive> {
    let (rise, fall) = pool.health.as_ref().map_or((1, 1), |h| (h.rise, h.fall));
    let Some((old_pool, old_server)) = old.and_then(|p| {
        let s = p.servers.iter().find(|s| s.cfg.name == server.name)?;
        Some((p, s))
    }) else {
        return Arc::new(ServerLive::new(rise, fall));
    };
    let same = old_server.cfg.address == server.address
        && old_pool.cfg.tls == pool.tls
        && old_pool.cfg.health == pool.health
        && old_pool.cfg.timeouts.connect == pool.timeouts.connect;
    if same {
        old_server.live.clone()
    } else {
        Arc::new(ServerLive::succeeding(&old_server.live, rise, fall))
    }
}

/// Stick tables hold server positions: they survive only a reload that keeps the pool's
/// persistence settings and its servers in the same order at the same addresses. Cookie
/// persistence keeps nothing here and survives any reload that keeps the servers.
fn stick_tables(
    pool: &Pool,
    cookie_key: &hmac::Key,
    old: Option<&PoolRt>,
) -> Option<Arc<PoolPersistence>> {
    let cfg = pool.persistence.as_ref()?;
    let same_servers = |old: &PoolRt| {
        old.cfg.servers.len() == pool.servers.len()
            && old
                .cfg
                .servers
                .iter()
                .zip(&pool.servers)
                .all(|(a, b)| a.name == b.name && a.address == b.address)
    };
    match old {
        Some(old) if old.cfg.persistence.as_ref() == Some(cfg) && same_servers(old) => {
            old.persistence.clone()
        }
        _ => Some(Arc::new(PoolPersistence::new(
            cfg,
            &pool.servers,
            cookie_key,
        ))),
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
    /// Per service, in configuration order: its TLS acceptor if it terminates TLS.
    pub acceptors: Vec<Option<TlsAcceptor>>,
    pub pools: Vec<Arc<PoolRt>>,
    /// Open client connections of the whole process at most.
    pub max_connections: usize,
}

impl Snapshot {
    /// `cookie_key` keys the persistence cookie's values; `old` is the generation this one
    /// replaces, whose live state carries over. Certificate files are read again.
    pub fn build(
        config: Arc<Config>,
        cookie_key: &hmac::Key,
        old: Option<&Snapshot>,
    ) -> Result<Self, TlsFileError> {
        let old_pools: HashMap<&str, &PoolRt> = old
            .map(|o| o.pools.iter().map(|p| (&*p.cfg.name, &**p)).collect())
            .unwrap_or_default();
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let old = old_pools.get(&*p.name).copied();
                PoolRt::new(p, &config.global, cookie_key, old).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        let acceptors = config
            .services
            .iter()
            .map(|s| {
                s.tls
                    .as_ref()
                    .map(|t| server_config(t).map(TlsAcceptor::from))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let max_connections = config
            .global
            .max_connections
            .map_or_else(crate::fd_limit::connections_allowed, |n| n as usize);
        Ok(Snapshot {
            config,
            acceptors,
            pools,
            max_connections,
        })
    }

    /// A service's position by name.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.config.services.iter().position(|s| *s.name == *name)
    }
}
