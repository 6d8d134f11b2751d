//! sluice's data plane: listeners, TLS termination, routing, balancing, health probing
//! and streaming relay to pools of HTTP/1.1 servers.
//!
//! [`Proxy::start`] binds everything a configuration asks for and returns a handle that
//! reports the bound addresses and shuts the whole thing down gracefully. Connections read
//! an immutable [`state::Snapshot`] taken when they are accepted.

mod access_log;
mod body;
mod conn_io;
mod error;
mod expect;
mod forward;
mod headers;
mod listener;
mod local;
mod persistence;
mod pinning;
mod probe;
mod request;
mod routing;
mod rules;
mod state;
mod stream;
pub mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_config::{Config, Probe};
use sluice_health::{run_probes, Transition};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use access_log::{AccessLog, Record};
pub use error::ProxyError;

use listener::{accept_loop, bind, ConnTracker, Listening};
use state::{PoolRt, Snapshot};

/// Why sluice could not start; each names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {service}: cannot listen on {addr}: {source}")]
    Listen {
        service: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] tls::TlsFileError),
}

/// What the balancer currently believes about one server of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub pool: String,
    pub server: String,
    pub up: bool,
    pub active: u64,
    /// Server connections pinned to one client connection (NTLM/Negotiate).
    pub pinned: u64,
    pub last_failure: Option<String>,
}

/// A running proxy.
pub struct Proxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    accept_loops: JoinSet<()>,
    probes: JoinSet<()>,
    tracker: Arc<ConnTracker>,
}

impl Proxy {
    /// Binds every listener, starts health checks and begins accepting. Must run inside a
    /// tokio runtime.
    pub async fn start(config: Config, log: AccessLog) -> Result<Proxy, StartError> {
        let config = Arc::new(config);
        let cookie_key = persistence::cookie_key(config.global.persistence_secret.as_deref());
        let snapshot = Arc::new(Snapshot::build(config.clone(), &cookie_key)?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = Arc::new(ConnTracker::default());
        let shared = Arc::new(ArcSwap::new(snapshot.clone()));
        let mut bound = Vec::new();
        for (index, service) in config.services.iter().enumerate() {
            let tls = service
                .tls
                .as_ref()
                .map(|t| tls::server_config(t).map(TlsAcceptor::from))
                .transpose()?;
            for &addr in &service.listen {
                let listener = bind(addr).map_err(|source| StartError::Listen {
                    service: service.name.clone(),
                    addr,
                    source,
                })?;
                let ctx = Listening {
                    service: index,
                    snapshot: shared.clone(),
                    tls: tls.clone(),
                    log: log.clone(),
                    tracker: tracker.clone(),
                    shutdown: shutdown_rx.clone(),
                };
                bound.push((service.name.clone(), listener, ctx));
            }
        }
        let mut accept_loops = JoinSet::new();
        let mut addrs = Vec::new();
        for (name, listener, ctx) in bound {
            let addr = listener.local_addr().map_err(|source| StartError::Listen {
                service: name.clone(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            tracing::info!(service = %name, "listening on {addr}");
            addrs.push((name, addr));
            accept_loops.spawn(accept_loop(listener, ctx));
        }
        let mut probes = JoinSet::new();
        for pool in &snapshot.pools {
            spawn_probes(pool, &mut probes);
        }
        Ok(Proxy {
            snapshot: shared,
            addrs,
            shutdown,
            accept_loops,
            probes,
            tracker,
        })
    }

    /// The addresses actually bound (useful with port 0), by service name.
    pub fn local_addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .filter(|(name, _)| name == service)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Every server of every pool, in configuration order.
    pub fn server_status(&self) -> Vec<ServerStatus> {
        let snapshot = self.snapshot.load();
        snapshot
            .pools
            .iter()
            .flat_map(|pool| {
                pool.servers.iter().map(|s| ServerStatus {
                    pool: pool.cfg.name.clone(),
                    server: s.cfg.name.clone(),
                    up: s.health.is_up(),
                    active: s.active(),
                    pinned: s.pinned(),
                    last_failure: s.health.last_failure(),
                })
            })
            .collect()
    }

    /// Live stick table entries per pool with source or header persistence (for metrics).
    pub fn persistence_entries(&self) -> Vec<(String, usize)> {
        self.snapshot
            .load()
            .pools
            .iter()
            .filter_map(|p| {
                let entries = p.persistence.as_ref()?.entries()?;
                Some((p.cfg.name.clone(), entries))
            })
            .collect()
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Stops accepting, asks every connection to finish its request in progress, and
    /// waits up to `grace` for them. Returns whether all finished in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        while self.accept_loops.join_next().await.is_some() {}
        let finished = tokio::time::timeout(grace, self.tracker.wait_idle())
            .await
            .is_ok();
        self.probes.abort_all();
        finished
    }
}

fn spawn_probes(pool: &Arc<PoolRt>, tasks: &mut JoinSet<()>) {
    let Some(check) = &pool.cfg.health else {
        return;
    };
    for server in &pool.servers {
        let pool_name = pool.cfg.name.clone();
        let server_name = server.cfg.name.clone();
        let on_change = move |t: Transition, reason: Option<String>| match t {
            Transition::WentDown => tracing::warn!(
                pool = %pool_name,
                server = %server_name,
                "server is DOWN: {}",
                reason.unwrap_or_default()
            ),
            Transition::CameUp => {
                tracing::info!(pool = %pool_name, server = %server_name, "server is UP")
            }
        };
        let connector = pool.connector.clone();
        let addr = server.cfg.address;
        let health = server.health.clone();
        let every = (check.interval, check.timeout);
        match &check.probe {
            Probe::Tcp => spawn_probe(
                tasks,
                probe::TcpCheck { connector, addr },
                health,
                every,
                on_change,
            ),
            Probe::Http(http) => {
                let probe = probe::HttpCheck {
                    connector,
                    addr,
                    probe: http.clone(),
                };
                spawn_probe(tasks, probe, health, every, on_change);
            }
        }
    }
}

fn spawn_probe<P: sluice_health::Probe>(
    tasks: &mut JoinSet<()>,
    probe: P,
    health: Arc<sluice_health::ServerHealth>,
    (interval, timeout): (Duration, Duration),
    on_change: impl Fn(Transition, Option<String>) + Send + 'static,
) {
    tasks.spawn(run_probes(probe, health, interval, timeout, on_change));
}
