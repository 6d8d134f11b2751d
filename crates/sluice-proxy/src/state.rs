//! The runtime picture built from one configuration: pools with their servers, each
//! server's health, active request count and idle connections. The data plane reads it
//! without locks except the short idle-stack one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use sluice_balance::{least_connections, SmoothWeighted};
use sluice_config::{Algorithm, Config, Pool, Server};
use sluice_health::ServerHealth;

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

    fn can_take(&self) -> bool {
        self.cfg.weight > 0
            && self.health.is_up()
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
    round_robin: SmoothWeighted,
    tie_break: AtomicUsize,
}

impl PoolRt {
    fn new(cfg: &Pool) -> Result<Self, TlsFileError> {
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
            round_robin: SmoothWeighted::new(&weights),
            tie_break: AtomicUsize::new(0),
        })
    }

    /// A primary server that can take a request, else a backup; never one in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let usable = |i: usize| !tried.contains(&i) && self.servers[i].can_take();
        self.choose(|i| !self.servers[i].cfg.backup && usable(i))
            .or_else(|| self.choose(|i| self.servers[i].cfg.backup && usable(i)))
    }

    fn choose(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match self.cfg.algorithm {
            Algorithm::RoundRobin => self.round_robin.pick(eligible),
            Algorithm::LeastConn => least_connections(
                self.servers.len(),
                self.tie_break.fetch_add(1, Ordering::Relaxed),
                eligible,
                |i| self.servers[i].active(),
                |i| self.servers[i].cfg.weight,
            ),
        }
    }
}

/// Everything the data plane needs for one configuration generation.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Vec<Arc<PoolRt>>,
}

impl Snapshot {
    pub fn build(config: Arc<Config>) -> Result<Self, TlsFileError> {
        let pools = config
            .pools
            .iter()
            .map(|p| PoolRt::new(p).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Snapshot { config, pools })
    }
}
