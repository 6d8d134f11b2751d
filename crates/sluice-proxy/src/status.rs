//! What the balancer currently believes, as plain data: the admin API's `status`, the
//! dashboard's picture and the metrics' gauges are all read from it.

use std::time::{Instant, SystemTime};

use serde::Serialize;
use sluice_config::{Algorithm, PersistenceKind, Pool, Probe};

use crate::state::{PoolRt, Snapshot};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Client connections open now.
    pub connections: usize,
    pub reloads: Reloads,
    pub services: Vec<ServiceStatus>,
    pub pools: Vec<PoolStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    pub last: Option<ReloadOutcome>,
}

/// What one reload did, or why it did nothing.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// RFC 3339.
    pub at: String,
    pub ok: bool,
    /// Every error, each with its location; empty when it succeeded.
    pub errors: Vec<String>,
    /// What changed, one line per change.
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `http` or `tcp`.
    pub mode: &'static str,
    /// The addresses bound (the actual port where the configuration said 0).
    pub listen: Vec<String>,
    pub tls: bool,
    /// Client connections open now.
    pub connections: usize,
    pub max_connections: Option<u32>,
    pub routes: Vec<RouteStatus>,
    pub default_pool: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub pool: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub algorithm: &'static str,
    /// `cookie`, `source` or `header`.
    pub persistence: Option<&'static str>,
    /// Entries in its stick table (source and header persistence).
    pub stick_entries: Option<usize>,
    /// The health check, e.g. `GET /owa/healthcheck.htm expecting 200`.
    pub check: Option<String>,
    pub servers: Vec<ServerStatus>,
}

/// What the balancer currently believes about one server of one pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerStatus {
    pub pool: String,
    pub server: String,
    pub address: String,
    /// The operator's wish: `ready`, `drain` or `maint`.
    pub state: &'static str,
    /// Whether its health checks pass (true without a check).
    pub up: bool,
    /// Whether it takes new clients now.
    pub serving: bool,
    pub weight: u32,
    pub backup: bool,
    /// Requests in progress.
    pub active: u64,
    /// Server connections pinned to one client connection (NTLM/Negotiate).
    pub pinned: u64,
    /// Requests sent to it since it appeared.
    pub requests: u64,
    pub last_failure: Option<String>,
    pub last_check: Option<CheckStatus>,
    /// Seconds since it stopped taking new clients (drain or maint).
    pub leaving_for_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckStatus {
    /// RFC 3339.
    pub at: String,
    pub ok: bool,
    pub reason: Option<String>,
    pub latency_ms: f64,
}

impl Snapshot {
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        let now = Instant::now();
        self.pools.iter().map(|p| pool_status(p, now)).collect()
    }

    /// `bound`: the listening addresses by service; `open`: a service's open connections.
    pub fn service_status(
        &self,
        bound: &[(String, std::net::SocketAddr)],
        open: impl Fn(&str) -> usize,
    ) -> Vec<ServiceStatus> {
        let pool_name = |i: usize| self.config.pools[i].name.to_string();
        self.config
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.to_string(),
                mode: match s.mode {
                    sluice_config::Mode::Http => "http",
                    sluice_config::Mode::Tcp => "tcp",
                },
                connections: open(&s.name),
                max_connections: s.max_connections,
                listen: bound
                    .iter()
                    .filter(|(name, _)| **name == *s.name)
                    .map(|(_, a)| a.to_string())
                    .collect(),
                tls: s.tls.is_some(),
                routes: s
                    .routes
                    .iter()
                    .map(|r| RouteStatus {
                        name: r.name.to_string(),
                        pool: pool_name(r.pool),
                    })
                    .collect(),
                default_pool: s.default_pool.map(pool_name),
            })
            .collect()
    }
}

fn pool_status(pool: &PoolRt, now: Instant) -> PoolStatus {
    PoolStatus {
        name: pool.cfg.name.to_string(),
        algorithm: algorithm_name(&pool.cfg.algorithm),
        persistence: pool.cfg.persistence.as_ref().map(|p| match p.kind {
            PersistenceKind::Cookie(_) => "cookie",
            PersistenceKind::Source { .. } => "source",
            PersistenceKind::Header(_) => "header",
        }),
        stick_entries: pool.persistence.as_ref().and_then(|p| p.entries()),
        check: describe_check(&pool.cfg),
        servers: pool
            .servers
            .iter()
            .map(|s| {
                let live = &s.live;
                ServerStatus {
                    pool: pool.cfg.name.to_string(),
                    server: s.cfg.name.to_string(),
                    address: s.cfg.address.to_string(),
                    state: live.mode().as_str(),
                    up: live.health.is_up(),
                    serving: s.can_take(),
                    weight: s.cfg.weight,
                    backup: s.cfg.backup,
                    active: live.active(),
                    pinned: live.pinned(),
                    requests: live.requests(),
                    last_failure: live.health.last_failure(),
                    last_check: live.health.last_check().map(|c| CheckStatus {
                        at: rfc3339(c.at),
                        ok: c.result.is_ok(),
                        reason: c.result.err(),
                        latency_ms: c.latency.as_secs_f64() * 1000.0,
                    }),
                    leaving_for_s: live
                        .leaving_since()
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                }
            })
            .collect(),
    }
}

fn algorithm_name(a: &Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round-robin",
        Algorithm::LeastConn => "least-conn",
        Algorithm::Hash(_) => "hash",
    }
}

fn describe_check(pool: &Pool) -> Option<String> {
    let check = pool.health.as_ref()?;
    Some(match &check.probe {
        Probe::Tcp => "TCP connect".to_string(),
        Probe::Http(h) => format!("{} {} expecting {}", h.method, h.path, h.expect_status),
        Probe::Dialogue(steps) => {
            let said: Vec<String> = steps
                .iter()
                .map(|s| match (&s.send, &s.expect) {
                    (Some(send), Some(expect)) => format!("{} -> {expect}", send.trim_end()),
                    (Some(send), None) => send.trim_end().to_string(),
                    (None, Some(expect)) => format!("-> {expect}"),
                    (None, None) => String::new(),
                })
                .collect();
            format!("dialogue: {}", said.join(", "))
        }
    })
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
