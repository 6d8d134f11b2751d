//! The probing loop for one server, and the shared health record the data plane reads.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::machine::{Machine, Transition};

/// Health of one server in one pool. The data plane reads `is_up` (one atomic load); the
/// probe loop and failed connections write through `record`.
#[derive(Debug)]
pub struct ServerHealth {
    up: AtomicBool,
    machine: Mutex<Machine>,
    last_failure: Mutex<Option<String>>,
    last_check: Mutex<Option<Checked>>,
    /// When it last came back up, in nanoseconds after [`epoch`] (0: it never went down),
    /// read on every pick by slow start, hence an atomic.
    came_up: AtomicU64,
}

/// The process-wide origin of `came_up` times.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ServerHealth {
    pub fn new(rise: u32, fall: u32) -> Self {
        ServerHealth {
            up: AtomicBool::new(true),
            machine: Mutex::new(Machine::new(rise, fall)),
            last_failure: Mutex::new(None),
            last_check: Mutex::new(None),
            came_up: AtomicU64::new(0),
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
        if change == Some(Transition::CameUp) {
            let since = Instant::now().saturating_duration_since(epoch()).as_nanos();
            self.came_up.store(
                u64::try_from(since).unwrap_or(u64::MAX).max(1),
                Ordering::Relaxed,
            );
        }
        change
    }

    /// How long ago it came back up after being down; `None` if it never went down
    /// (a server that was up from the start needs no slow start).
    pub fn up_for(&self, now: Instant) -> Option<Duration> {
        let came_up = self.came_up.load(Ordering::Relaxed);
        if came_up == 0 || !self.is_up() {
            return None;
        }
        let at = epoch() + Duration::from_nanos(came_up);
        Some(now.saturating_duration_since(at))
    }

    pub fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }

    /// The latest probe, if one ran.
    pub fn last_check(&self) -> Option<Checked> {
        lock(&self.last_check).clone()
    }

    /// Takes the server out until `rise` checks in a row pass, `reason` saying why.
    pub fn require_rise(&self, reason: &str) {
        let mut machine = lock(&self.machine);
        machine.require_rise();
        self.up.store(false, Ordering::Relaxed);
        *lock(&self.last_failure) = Some(reason.to_string());
    }

    fn record_check(&self, checked: Checked) -> Option<Transition> {
        let change = self.record(checked.result.clone());
        *lock(&self.last_check) = Some(checked);
        change
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub at: SystemTime,
    pub latency: Duration,
    pub result: Result<(), String>,
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

/// Probes forever, every `interval`, each attempt bounded by `timeout`; `on_check` hears
/// every result and the state change it made, if any. Ends when the task is aborted.
pub async fn run_probes<P: Probe>(
    probe: P,
    health: Arc<ServerHealth>,
    interval: Duration,
    timeout: Duration,
    on_check: impl Fn(&Checked, Option<Transition>) + Send,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, probe.check()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
        };
        let checked = Checked {
            at: SystemTime::now(),
            latency: started.elapsed(),
            result,
        };
        let change = health.record_check(checked.clone());
        on_check(&checked, change);
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

    #[test]
    fn only_a_server_that_came_back_has_an_up_time() {
        let health = ServerHealth::new(1, 1);
        assert_eq!(health.up_for(Instant::now()), None);
        health.record(Err("refused".into()));
        assert_eq!(health.up_for(Instant::now()), None);
        health.record(Ok(()));
        let later = Instant::now() + Duration::from_secs(5);
        let up_for = health.up_for(later).expect("it came back");
        assert!(up_for >= Duration::from_secs(5) && up_for < Duration::from_secs(6));
    }

    #[test]
    fn requiring_rise_takes_a_server_out_until_it_passes_again() {
        let health = ServerHealth::new(2, 3);
        health.require_rise("returning from maintenance");
        assert!(!health.is_up());
        assert_eq!(
            health.last_failure().as_deref(),
            Some("returning from maintenance")
        );
        assert_eq!(health.record(Ok(())), None);
        assert_eq!(health.record(Ok(())), Some(Transition::CameUp));
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
            move |checked: &Checked, change| {
                if let Some(t) = change {
                    log.lock().unwrap().push((t, checked.result.clone().err()));
                }
            },
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
        let last = health.last_check().expect("probes ran");
        assert_eq!(last.result, Ok(()));
    }
}
