//! The control plane: the one writer of the data plane's snapshot. A reload, a weight
//! change and the start itself all go through the same two steps: `prepare` (bind new
//! listeners, read certificates, build the next generation; nothing running is touched,
//! so any error leaves the old configuration in charge) and `commit` (swap the snapshot
//! in, then start and stop accept loops and health probes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use ring::hmac;
use sluice_config::{Config, Name, Probe};
use sluice_health::{run_probes, Checked, Transition};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::listener::{accept_loop, bind, ConnTracker, Listening};
use crate::persistence::cookie_key;
use crate::probe;
use crate::server::{Mode, ServerLive, ServerRt};
use crate::state::{PoolRt, Snapshot};
use crate::status::{rfc3339, ReloadOutcome, Reloads, ServerStatus, Status};
use crate::StartError;

/// Why an operator's request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no server named \"{server}\"{}", pool.as_ref().map(|p| format!(" in pool \"{p}\"")).unwrap_or_default())]
    NoSuchServer {
        pool: Option<String>,
        server: String,
    },
    #[error("weight {0} is out of range (0 to 256)")]
    BadWeight(u32),
    #[error("sluice was started without a configuration file to reload")]
    NoFile,
    #[error("the configuration was not reloaded:\n{}", .0.join("\n"))]
    Rejected(Vec<String>),
}

/// Heaviest weight a server may have, as in the configuration.
const MAX_WEIGHT: u32 = 256;

/// A listening socket and its accept loop.
struct Listener {
    service: Name,
    /// As configured (port 0 stays 0); with the service, what identifies it in a reload.
    configured: SocketAddr,
    bound: SocketAddr,
    socket: Arc<TcpListener>,
    task: AbortHandle,
}

/// One server's health probe, kept while the server's live state is.
struct Probing {
    live: Arc<ServerLive>,
    task: AbortHandle,
}

/// A weight set through the admin API. It holds across reloads until the file changes
/// that server's weight.
struct WeightOverride {
    file_weight: u32,
    weight: u32,
}

struct Plane {
    /// The configuration as its file says, before runtime weights.
    file: Config,
    source: Option<PathBuf>,
    weights: HashMap<(Name, Name), WeightOverride>,
    cookie_key: hmac::Key,
    listeners: Vec<Listener>,
    /// Open connections per service name, kept across reloads.
    service_trackers: HashMap<Name, Arc<ConnTracker>>,
    probes: HashMap<(Name, Name), Probing>,
    reloads: Reloads,
}

/// The next generation, ready to go live.
struct Prepared {
    file: Config,
    snapshot: Arc<Snapshot>,
    cookie_key: hmac::Key,
    keep: Vec<Listener>,
    start: Started,
    stop: Vec<Listener>,
}

pub struct Control {
    snapshot: Arc<ArcSwap<Snapshot>>,
    plane: Mutex<Plane>,
    runtime: Handle,
    log: AccessLog,
    tracker: Arc<ConnTracker>,
    shutdown: CancellationToken,
}

impl Control {
    /// Binds, builds and starts the first generation. Must run inside a tokio runtime.
    pub(crate) fn start(
        config: Config,
        log: AccessLog,
        shutdown: CancellationToken,
    ) -> Result<Arc<Control>, StartError> {
        let mut plane = Plane {
            file: config.clone(),
            source: None,
            weights: HashMap::new(),
            cookie_key: cookie_key(config.global.persistence_secret.as_deref()),
            listeners: Vec::new(),
            service_trackers: HashMap::new(),
            probes: HashMap::new(),
            reloads: Reloads::default(),
        };
        let prepared = prepare(&mut plane, config, None)?;
        let control = Arc::new(Control {
            snapshot: Arc::new(ArcSwap::new(prepared.snapshot.clone())),
            plane: Mutex::new(plane),
            runtime: Handle::current(),
            log,
            tracker: Arc::new(ConnTracker::default()),
            shutdown,
        });
        control.commit(&mut control.lock(), prepared);
        Ok(control)
    }

    /// The file `reload` reads.
    pub fn set_source(&self, path: PathBuf) {
        self.lock().source = Some(path);
    }

    /// Reads the configuration file again and applies it; on any error the running
    /// configuration stays and every error is returned.
    pub fn reload(&self) -> Result<Vec<String>, ControlError> {
        let source = self.lock().source.clone().ok_or(ControlError::NoFile)?;
        match sluice_config::load(&source) {
            Ok(config) => self.apply(config),
            Err(errors) => {
                let errors = errors.0.iter().map(ToString::to_string).collect();
                Err(self.rejected(&mut self.lock(), errors))
            }
        }
    }

    /// Applies a new configuration: the difference only, atomically.
    pub fn apply(&self, config: Config) -> Result<Vec<String>, ControlError> {
        // New sockets belong to the data plane's runtime, whichever thread asks.
        let _runtime = self.runtime.enter();
        let mut plane = self.lock();
        let old = self.snapshot.load_full();
        match prepare(&mut plane, config, Some(&old)) {
            Ok(prepared) => {
                let changes = describe_changes(&old, &prepared);
                self.commit(&mut plane, prepared);
                for change in &changes {
                    tracing::info!("reload: {change}");
                }
                self.record_reload(&mut plane, Vec::new(), changes.clone());
                Ok(changes)
            }
            Err(e) => Err(self.rejected(&mut plane, vec![e.to_string()])),
        }
    }

    fn rejected(&self, plane: &mut Plane, errors: Vec<String>) -> ControlError {
        for e in &errors {
            tracing::error!("reload rejected, the running configuration stays: {e}");
        }
        self.record_reload(plane, errors.clone(), Vec::new());
        ControlError::Rejected(errors)
    }

    /// One event makes the log line (above) and the metric.
    fn record_reload(&self, plane: &mut Plane, errors: Vec<String>, changes: Vec<String>) {
        let ok = errors.is_empty();
        self.log.metrics().reload(ok);
        let reloads = &mut plane.reloads;
        if ok {
            reloads.succeeded += 1;
        } else {
            reloads.failed += 1;
        }
        reloads.last = Some(ReloadOutcome {
            at: rfc3339(SystemTime::now()),
            ok,
            errors,
            changes,
        });
    }

    /// Sets the mode of server `server` in `pool`, or in every pool holding a server of
    /// that name. `drain_timeout` overrides the pools' own.
    pub fn set_mode(
        &self,
        pool: Option<&str>,
        server: &str,
        mode: Mode,
        drain_timeout: Option<Duration>,
    ) -> Result<Vec<ServerStatus>, ControlError> {
        let _plane = self.lock();
        let snapshot = self.snapshot.load_full();
        let matched = matching(&snapshot, pool, server)?;
        let now = Instant::now();
        for (pool, server) in &matched {
            let leaving = server.live.set_mode(mode, now);
            tracing::warn!(pool = %pool.cfg.name, server = %server.cfg.name, "server set to {}", mode.as_str());
            let timeout = drain_timeout.or(pool.cfg.drain_timeout);
            if let (Some(since), Some(after)) = (leaving, timeout) {
                self.schedule_cut(pool, server, since, after);
            }
        }
        Ok(self.statuses_of(pool, server))
    }

    /// Sets a server's weight until the file changes it.
    pub fn set_weight(
        &self,
        pool: &str,
        server: &str,
        weight: u32,
    ) -> Result<Vec<ServerStatus>, ControlError> {
        if weight > MAX_WEIGHT {
            return Err(ControlError::BadWeight(weight));
        }
        let mut plane = self.lock();
        let file_weight =
            weight_in(&plane.file, pool, server).ok_or_else(|| ControlError::NoSuchServer {
                pool: Some(pool.to_string()),
                server: server.to_string(),
            })?;
        let key: (Name, Name) = (pool.into(), server.into());
        let previous = plane.weights.insert(
            key.clone(),
            WeightOverride {
                file_weight,
                weight,
            },
        );
        let file = plane.file.clone();
        let old = self.snapshot.load_full();
        match prepare(&mut plane, file, Some(&old)) {
            Ok(prepared) => self.commit(&mut plane, prepared),
            Err(e) => {
                // Nothing new was read, so this cannot fail short of a certificate file
                // vanishing; leave everything as it was.
                match previous {
                    Some(p) => plane.weights.insert(key, p),
                    None => plane.weights.remove(&key),
                };
                return Err(ControlError::Rejected(vec![e.to_string()]));
            }
        }
        tracing::warn!(pool, server, "server weight set to {weight}");
        drop(plane);
        Ok(self.statuses_of(Some(pool), server))
    }

    fn statuses_of(&self, pool: Option<&str>, server: &str) -> Vec<ServerStatus> {
        self.snapshot
            .load()
            .pool_status()
            .into_iter()
            .filter(|p| pool.is_none_or(|name| p.name == name))
            .flat_map(|p| p.servers)
            .filter(|s| s.server == server)
            .collect()
    }

    /// After `after`, closes the connections of a server still leaving since `since`.
    fn schedule_cut(&self, pool: &PoolRt, server: &ServerRt, since: Instant, after: Duration) {
        let live = server.live.clone();
        let pool = pool.cfg.name.clone();
        let name = server.cfg.name.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep_until((since + after).into()).await;
            if live.cut(since) {
                tracing::warn!(
                    pool = %pool,
                    server = %name,
                    "drain timed out after {}s: closing its connections at their next safe point",
                    after.as_secs()
                );
            }
        });
    }

    /// Everything the balancer believes now.
    pub fn status(&self) -> Status {
        let snapshot = self.snapshot.load_full();
        let plane = self.lock();
        let bound: Vec<(String, SocketAddr)> = plane
            .listeners
            .iter()
            .map(|l| (l.service.to_string(), l.bound))
            .collect();
        let open = |name: &str| plane.service_trackers.get(name).map_or(0, |t| t.open());
        Status {
            connections: self.tracker.open(),
            reloads: plane.reloads.clone(),
            services: snapshot.service_status(&bound, open),
            pools: snapshot.pool_status(),
        }
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> String {
        self.log
            .metrics()
            .render(&self.status(), self.log.dropped())
    }

    /// The admin token of the configuration running now.
    pub fn admin_token(&self) -> Option<String> {
        let snapshot = self.snapshot.load();
        let admin = snapshot.config.admin.as_ref()?;
        admin.token.as_ref().map(|t| t.secret.clone())
    }

    /// The addresses actually bound (useful with port 0), by service name.
    pub fn local_addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.lock()
            .listeners
            .iter()
            .filter(|l| *l.service == *service)
            .map(|l| l.bound)
            .collect()
    }

    pub(crate) fn tracker(&self) -> &Arc<ConnTracker> {
        &self.tracker
    }

    /// Stops every accept loop and health probe; connections are left to finish.
    pub(crate) fn stop(&self) {
        let mut plane = self.lock();
        for l in plane.listeners.drain(..) {
            l.task.abort();
        }
        for (_, p) in plane.probes.drain() {
            p.task.abort();
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Plane> {
        crate::sync::lock(&self.plane)
    }

    fn commit(&self, plane: &mut Plane, prepared: Prepared) {
        let Prepared {
            file,
            snapshot,
            cookie_key,
            keep,
            start,
            stop,
        } = prepared;
        self.snapshot.store(snapshot);
        for l in stop {
            tracing::info!(service = %l.service, "no longer listening on {}", l.bound);
            l.task.abort();
        }
        plane.listeners = keep;
        for (service, configured, socket) in start {
            let tracker = plane.service_trackers.entry(service.clone()).or_default();
            let listener = self.listen(service, configured, socket, tracker.clone());
            plane.listeners.push(listener);
        }
        plane.file = file;
        plane.cookie_key = cookie_key;
        plane.prune_weights();
        self.sync_probes(plane);
    }

    fn listen(
        &self,
        service: Name,
        configured: SocketAddr,
        socket: Arc<TcpListener>,
        service_tracker: Arc<ConnTracker>,
    ) -> Listener {
        let bound = socket.local_addr().unwrap_or(configured);
        tracing::info!(service = %service, "listening on {bound}");
        let ctx = Listening {
            service: service.clone(),
            snapshot: self.snapshot.clone(),
            log: self.log.clone(),
            tracker: self.tracker.clone(),
            service_tracker,
            shutdown: self.shutdown.clone(),
        };
        let task = self
            .runtime
            .spawn(accept_loop(socket.clone(), ctx))
            .abort_handle();
        Listener {
            service,
            configured,
            bound,
            socket,
            task,
        }
    }

    /// Keeps the probe of every server whose live state carried over; starts the others.
    fn sync_probes(&self, plane: &mut Plane) {
        let snapshot = self.snapshot.load_full();
        let mut old = std::mem::take(&mut plane.probes);
        for pool in &snapshot.pools {
            for server in &pool.servers {
                let key = (pool.cfg.name.clone(), server.cfg.name.clone());
                let kept = old
                    .remove(&key)
                    .filter(|p| Arc::ptr_eq(&p.live, &server.live));
                let probing = kept.or_else(|| self.spawn_probe(pool, server));
                if let Some(p) = probing {
                    plane.probes.insert(key, p);
                }
            }
        }
        for (_, p) in old {
            p.task.abort();
        }
    }

    fn spawn_probe(&self, pool: &PoolRt, server: &ServerRt) -> Option<Probing> {
        let check = pool.cfg.health.as_ref()?;
        let connector = probe::connector_for(&pool.cfg, &pool.connector);
        let addr = server.cfg.address;
        let task = match &check.probe {
            Probe::Tcp => self.run_probes(probe::TcpCheck { connector, addr }, pool, server),
            Probe::Http(http) => {
                let probe = http.clone();
                self.run_probes(
                    probe::HttpCheck {
                        connector,
                        addr,
                        probe,
                    },
                    pool,
                    server,
                )
            }
            Probe::Dialogue(steps) => {
                let steps = steps.clone();
                self.run_probes(
                    probe::DialogueCheck {
                        connector,
                        addr,
                        steps,
                    },
                    pool,
                    server,
                )
            }
        }?;
        Some(Probing {
            live: server.live.clone(),
            task,
        })
    }

    /// Runs `probe` against `server` at its pool's interval until aborted.
    fn run_probes<P: sluice_health::Probe>(
        &self,
        probe: P,
        pool: &PoolRt,
        server: &ServerRt,
    ) -> Option<AbortHandle> {
        let check = pool.cfg.health.as_ref()?;
        let on_check = check_events(self.log.clone(), &pool.cfg.name, &server.cfg.name);
        let health = server.live.health.clone();
        let run = run_probes(probe, health, check.interval, check.timeout, on_check);
        Some(self.runtime.spawn(run).abort_handle())
    }
}

/// One probe result makes its metric and, when it changes the state, its log line.
fn check_events(
    log: AccessLog,
    pool: &str,
    server: &str,
) -> impl Fn(&Checked, Option<Transition>) + Send + 'static {
    let (pool, server) = (pool.to_string(), server.to_string());
    move |checked, change| {
        log.metrics().check(&pool, &server, checked);
        match change {
            Some(Transition::WentDown) => tracing::warn!(
                pool = %pool,
                server = %server,
                "server is DOWN: {}",
                checked.result.clone().err().unwrap_or_default()
            ),
            Some(Transition::CameUp) => {
                tracing::info!(pool = %pool, server = %server, "server is UP")
            }
            None => {}
        }
    }
}

/// Builds the next generation from `file` without touching what runs.
fn prepare(
    plane: &mut Plane,
    file: Config,
    old: Option<&Snapshot>,
) -> Result<Prepared, StartError> {
    let effective = plane.effective(&file);
    // The plane starts with the first file's key. A random one (no secret configured) is
    // kept: a reload must not log everyone out.
    let secret_changed =
        old.is_some_and(|o| o.config.global.persistence_secret != file.global.persistence_secret);
    let key = match (&file.global.persistence_secret, secret_changed) {
        (Some(secret), true) => cookie_key(Some(secret)),
        _ => plane.cookie_key.clone(),
    };
    let (keep, start) = plan_listeners(&plane.listeners, &effective)?;
    let snapshot = Arc::new(Snapshot::build(Arc::new(effective), &key, old)?);
    // Nothing failed: the listeners move out of the plane here, to stay or to stop.
    let (keep, stop) = plane
        .listeners
        .drain(..)
        .partition(|l| keep.contains(&l.key()));
    Ok(Prepared {
        file,
        snapshot,
        cookie_key: key,
        keep,
        start,
        stop,
    })
}

type ListenerKey = (Name, SocketAddr);
type Started = Vec<(Name, SocketAddr, Arc<TcpListener>)>;

impl Listener {
    fn key(&self) -> ListenerKey {
        (self.service.clone(), self.configured)
    }
}

/// Which listeners stay, and which start (bound here, or taken over from another
/// service that had the same address); the others stop.
fn plan_listeners(
    current: &[Listener],
    config: &Config,
) -> Result<(Vec<ListenerKey>, Started), StartError> {
    let wanted: Vec<ListenerKey> = config
        .services
        .iter()
        .flat_map(|s| s.listen.iter().map(|a| (s.name.clone(), *a)))
        .collect();
    let keep: Vec<ListenerKey> = current
        .iter()
        .map(Listener::key)
        .filter(|k| wanted.contains(k))
        .collect();
    let mut start = Vec::new();
    for (service, addr) in wanted.iter().filter(|k| !keep.contains(k)) {
        let taken_over = current
            .iter()
            .find(|l| addr.port() != 0 && l.configured == *addr && !keep.contains(&l.key()));
        let socket = match taken_over {
            Some(l) => l.socket.clone(),
            None => Arc::new(bind(*addr).map_err(|source| StartError::Listen {
                service: service.to_string(),
                addr: *addr,
                source,
            })?),
        };
        start.push((service.clone(), *addr, socket));
    }
    Ok((keep, start))
}

impl Plane {
    /// `file` with the runtime weights that still apply: those set since the file last
    /// changed that server's weight.
    fn effective(&self, file: &Config) -> Config {
        let mut config = file.clone();
        for pool in &mut config.pools {
            for server in &mut pool.servers {
                let key = (pool.name.clone(), server.name.clone());
                match self.weights.get(&key) {
                    Some(o) if o.file_weight == server.weight => server.weight = o.weight,
                    _ => {}
                }
            }
        }
        config
    }

    /// Forgets the runtime weights the running file has made stale.
    fn prune_weights(&mut self) {
        let file = &self.file;
        self.weights
            .retain(|(pool, server), o| weight_in(file, pool, server) == Some(o.file_weight));
    }
}

/// The weight `config` gives `server` in `pool`, if it has such a server.
fn weight_in(config: &Config, pool: &str, server: &str) -> Option<u32> {
    let pool = config.pools.iter().find(|p| *p.name == *pool)?;
    pool.servers
        .iter()
        .find(|s| *s.name == *server)
        .map(|s| s.weight)
}

/// A server and the pool it is in.
type PlacedServer = (Arc<PoolRt>, Arc<ServerRt>);

/// The servers an operator's request names.
fn matching(
    snapshot: &Snapshot,
    pool: Option<&str>,
    server: &str,
) -> Result<Vec<PlacedServer>, ControlError> {
    let found: Vec<_> = snapshot
        .pools
        .iter()
        .filter(|p| pool.is_none_or(|name| *p.cfg.name == *name))
        .flat_map(|p| {
            p.servers
                .iter()
                .filter(|s| *s.cfg.name == *server)
                .map(|s| (p.clone(), s.clone()))
        })
        .collect();
    if found.is_empty() {
        return Err(ControlError::NoSuchServer {
            pool: pool.map(str::to_string),
            server: server.to_string(),
        });
    }
    Ok(found)
}

/// One line per difference between the running generation and the next.
fn describe_changes(old: &Snapshot, next: &Prepared) -> Vec<String> {
    let mut changes = Vec::new();
    for (service, addr, _) in &next.start {
        changes.push(format!("service {service}: listener {addr} added"));
    }
    for l in &next.stop {
        changes.push(format!(
            "service {}: listener {} removed",
            l.service, l.configured
        ));
    }
    let new = &next.snapshot.config;
    let names =
        |c: &Config| -> Vec<String> { c.pools.iter().map(|p| p.name.to_string()).collect() };
    let (old_pools, new_pools) = (names(&old.config), names(new));
    for p in new_pools.iter().filter(|p| !old_pools.contains(p)) {
        changes.push(format!("pool {p} added"));
    }
    for p in old_pools.iter().filter(|p| !new_pools.contains(p)) {
        changes.push(format!("pool {p} removed"));
    }
    for pool in &new.pools {
        let Some(before) = old.config.pools.iter().find(|p| p.name == pool.name) else {
            continue;
        };
        for s in &pool.servers {
            match before.servers.iter().find(|b| b.name == s.name) {
                None => changes.push(format!("pool {}: server {} added", pool.name, s.name)),
                Some(b) if b != s => {
                    changes.push(format!("pool {}: server {} changed", pool.name, s.name))
                }
                Some(_) => {}
            }
        }
        for b in &before.servers {
            if !pool.servers.iter().any(|s| s.name == b.name) {
                changes.push(format!("pool {}: server {} removed", pool.name, b.name));
            }
        }
    }
    let routes = |c: &Config| -> Vec<String> {
        c.services
            .iter()
            .flat_map(|s| {
                s.routes
                    .iter()
                    .map(move |r| format!("{}/{}", s.name, r.name))
            })
            .collect()
    };
    if routes(&old.config) != routes(new) {
        changes.push("routes changed".to_string());
    }
    if changes.is_empty() {
        changes.push("no change to listeners, pools or servers".to_string());
    }
    changes
}
