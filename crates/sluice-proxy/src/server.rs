//! One server as the data plane sees it: its configuration for this generation, and the
//! live state that outlives generations (health, request counts, idle connections, the
//! operator's ready/drain/maint).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_config::Server;
use sluice_health::ServerHealth;
use tokio::sync::watch;

use crate::sync::lock;
use crate::upstream::IdlePool;

/// What the operator wants of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In rotation (while its health checks pass).
    Ready,
    /// No new clients or persistence entries; persisted clients and open connections go on.
    Drain,
    /// Nothing new at all; requests in progress finish.
    Maint,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ready => "ready",
            Mode::Drain => "drain",
            Mode::Maint => "maint",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Ready, Mode::Drain, Mode::Maint]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Drain,
            2 => Mode::Maint,
            _ => Mode::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Mode::Ready => 0,
            Mode::Drain => 1,
            Mode::Maint => 2,
        }
    }
}

/// When the server's connections must close: `None` while they may stay; `Some(t)` once
/// a drain that began at `t` has run out of time.
pub type CutSignal = watch::Receiver<Option<Instant>>;

/// The state of one server of one pool that a reload keeps.
pub struct ServerLive {
    pub health: Arc<ServerHealth>,
    active: AtomicU64,
    requests: AtomicU64,
    /// Server connections owned by one client connection (connection-bound auth).
    pub pinned: AtomicU64,
    pub idle: Arc<IdlePool>,
    mode: AtomicU8,
    /// When the server stopped taking new clients (drain or maint), if it has.
    leaving_since: Mutex<Option<Instant>>,
    cut: watch::Sender<Option<Instant>>,
}

impl ServerLive {
    pub fn new(rise: u32, fall: u32) -> Self {
        ServerLive {
            health: Arc::new(ServerHealth::new(rise, fall)),
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            pinned: AtomicU64::new(0),
            idle: Arc::default(),
            mode: AtomicU8::new(Mode::Ready.to_u8()),
            leaving_since: Mutex::new(None),
            cut: watch::channel(None).0,
        }
    }

    /// A fresh live state (new address or health check) that keeps the operator's mode.
    pub fn succeeding(old: &ServerLive, rise: u32, fall: u32) -> Self {
        let live = ServerLive::new(rise, fall);
        live.mode.store(old.mode().to_u8(), Ordering::Relaxed);
        *lock(&live.leaving_since) = old.leaving_since();
        live
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Requests sent to it.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    pub fn leaving_since(&self) -> Option<Instant> {
        *lock(&self.leaving_since)
    }

    /// Sets the mode; returns when the server started leaving rotation (drain or maint),
    /// for the caller to schedule the drain timeout from.
    pub fn set_mode(&self, mode: Mode, now: Instant) -> Option<Instant> {
        let was = Mode::from_u8(self.mode.swap(mode.to_u8(), Ordering::Relaxed));
        let mut since = lock(&self.leaving_since);
        if mode == Mode::Ready {
            *since = None;
            self.cut.send_replace(None);
            if was == Mode::Maint {
                // Back from maintenance: traffic only after fresh passing checks.
                self.health.require_rise("returning from maintenance");
            }
            return None;
        }
        Some(*since.get_or_insert(now))
    }

    /// Closes the server's connections at their next safe point, if the drain that
    /// began at `since` is still going on.
    pub fn cut(&self, since: Instant) -> bool {
        if self.leaving_since() != Some(since) {
            return false;
        }
        self.cut.send_replace(Some(since));
        self.idle.clear();
        true
    }

    pub fn cut_signal(&self) -> CutSignal {
        self.cut.subscribe()
    }

    /// Takes requests of persisted clients: not in maintenance, not past a drain timeout.
    pub fn continues_sessions(&self) -> bool {
        match self.mode() {
            Mode::Ready => true,
            Mode::Drain => self.cut.borrow().is_none(),
            Mode::Maint => false,
        }
    }

    /// Counts a request on this server until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

pub struct ActiveGuard(Arc<ServerLive>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A server in one configuration generation.
pub struct ServerRt {
    pub cfg: Server,
    pub live: Arc<ServerLive>,
}

impl ServerRt {
    /// Can take a new client: ready, up, weighted, not full.
    pub fn can_take(&self) -> bool {
        self.live.mode() == Mode::Ready && self.cfg.weight > 0 && self.can_continue()
    }

    /// Can take a request of a client persisted to it: a draining server (until its
    /// drain times out) or weight 0 only stops new clients.
    pub fn can_continue(&self) -> bool {
        self.live.continues_sessions()
            && self.live.health.is_up()
            && self
                .cfg
                .max_connections
                .is_none_or(|max| self.live.active() < u64::from(max))
    }
}
