//! A server's run-time state: which components are active, what it has served, and the
//! EWS subscriptions it knows.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use sluice_exchange::WORKLOADS;

fn index(workload: &str) -> Option<usize> {
    WORKLOADS.iter().position(|w| w.name == workload)
}

/// Component states, one per workload, all active at start.
pub(crate) struct Components([AtomicBool; WORKLOADS.len()]);

impl Default for Components {
    fn default() -> Self {
        Components(std::array::from_fn(|_| AtomicBool::new(true)))
    }
}

impl Components {
    pub fn is_active(&self, workload: &str) -> bool {
        index(workload).is_some_and(|i| self.0[i].load(Ordering::Relaxed))
    }

    pub fn set(&self, workload: &str, active: bool) -> bool {
        let Some(i) = index(workload) else {
            return false;
        };
        self.0[i].store(active, Ordering::Relaxed);
        true
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    served: [AtomicU64; WORKLOADS.len()],
    health_checks: AtomicU64,
    connections: AtomicU64,
    body_bytes: AtomicU64,
    login_timeouts: AtomicU64,
    logins: AtomicU64,
    unknown_subscriptions: AtomicU64,
}

/// What a server has served, by workload and by event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests per workload (health pages excluded), in catalogue order.
    pub served: Vec<(&'static str, u64)>,
    pub health_checks: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// Request body bytes read.
    pub body_bytes: u64,
    /// Forms logins that succeeded.
    pub logins: u64,
    /// `440 Login Timeout` answers (a session cookie this server could not open).
    pub login_timeouts: u64,
    /// EWS requests naming a subscription this server does not know.
    pub unknown_subscriptions: u64,
}

impl Counts {
    /// Requests served for one workload.
    pub fn of(&self, workload: &str) -> u64 {
        self.served
            .iter()
            .find(|(w, _)| *w == workload)
            .map_or(0, |(_, n)| *n)
    }

    /// Requests served for every workload.
    pub fn total(&self) -> u64 {
        self.served.iter().map(|(_, n)| n).sum()
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub fn served(&self, workload: &str) {
        if let Some(i) = index(workload) {
            bump(&self.served[i], 1);
        }
    }

    pub fn health_check(&self) {
        bump(&self.health_checks, 1);
    }

    pub fn connection(&self) {
        bump(&self.connections, 1);
    }

    pub fn body_bytes(&self, n: usize) {
        bump(&self.body_bytes, n as u64);
    }

    pub fn login(&self) {
        bump(&self.logins, 1);
    }

    pub fn login_timeout(&self) {
        bump(&self.login_timeouts, 1);
    }

    pub fn unknown_subscription(&self) {
        bump(&self.unknown_subscriptions, 1);
    }

    pub fn snapshot(&self) -> Counts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            served: WORKLOADS
                .iter()
                .zip(&self.served)
                .map(|(w, n)| (w.name, read(n)))
                .collect(),
            health_checks: read(&self.health_checks),
            connections: read(&self.connections),
            body_bytes: read(&self.body_bytes),
            logins: read(&self.logins),
            login_timeouts: read(&self.login_timeouts),
            unknown_subscriptions: read(&self.unknown_subscriptions),
        }
    }
}

/// EWS notification subscriptions by id. From 2013 they live with the mailbox, which every
/// Client Access server reaches; on 2010 they live in the server that created them.
#[derive(Default)]
pub struct Mailboxes {
    subscriptions: Mutex<HashSet<String>>,
}

impl Mailboxes {
    pub(crate) fn subscribe(&self, id: String) {
        self.lock().insert(id);
    }

    pub(crate) fn knows(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
