//! The probing loop for one server, and the shared health record the data plane reads.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::machine::{Machine, Transition};

/// Health of one server in one pool. The data plane reads `is_up` (one atomic load); the
/// probe loop and failed connections write through `record`.
#[derive(Debug)]
pub struct ServerHealth {
    up: AtomicBool,
    machine: Mutex<Machine>,
    last_failure: Mutex<Option<String>>,
}

impl ServerHealth {
    pub fn new(rise: u32, fall: u32) -> Self {
        ServerHealth {
            up: AtomicBool::new(true),
            machine: Mutex::new(Machine::new(rise, fall)),
            last_failure: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one result (from a probe or from live traffic) and returns the state change.
    pub fn record(&self, result: Result<(), String>) -> Option<Transition> {
        let ok = result.is_ok();
        if let Err(reason) = result {
            *lock(&self.last_failure) = Some(reason);
        }
        let mut machine = lock(&self.machine);
        let change = machine.observe(ok);
        self.up.store(machine.is_up(), Ordering::Relaxed);
        change
    }

    pub fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }
}

/// A poisoned lock only means another thread panicked while recording a result; the
/// recorded state is still a valid state, so keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One probe of one server: `Ok` when healthy, otherwise the reason.
pub trait Probe: Send + Sync + 'static {
    fn check(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Probes forever, every `interval`, each attempt bounded by `timeout`; `on_change` hears
/// each state change with the reason. Ends when the task is aborted.
pub async fn run_probes<P: Probe>(
    probe: P,
    health: Arc<ServerHealth>,
    interval: Duration,
    timeout: Duration,
    on_change: impl Fn(Transition, Option<String>) + Send,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(timeout, probe.check()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
        };
        let reason = result.as_ref().err().cloned();
        if let Some(change) = health.record(result) {
            on_change(change, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct Scripted(Arc<AtomicU32>);

    impl Probe for Scripted {
        async fn check(&self) -> Result<(), String> {
            // Fails on calls 0..3, then succeeds.
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            if n < 3 {
                Err(format!("failure {n}"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn loop_marks_down_then_up_on_schedule() {
        let calls = Arc::new(AtomicU32::new(0));
        let health = Arc::new(ServerHealth::new(2, 3));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let log = changes.clone();
        let task = tokio::spawn(run_probes(
            Scripted(calls.clone()),
            health.clone(),
            Duration::from_secs(1),
            Duration::from_millis(500),
            move |t, reason| log.lock().unwrap().push((t, reason)),
        ));
        // Ticks at 0s, 1s, 2s fail: down after the third.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(!health.is_up());
        assert_eq!(health.last_failure().as_deref(), Some("failure 2"));
        // Ticks at 3s and 4s succeed: up after the second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(health.is_up());
        task.abort();
        let changes = changes.lock().unwrap();
        assert_eq!(changes[0], (Transition::WentDown, Some("failure 2".into())));
        assert_eq!(changes[1], (Transition::CameUp, None));
    }
}
