//! Slow start: a server that has just come back up takes a growing share of what its
//! weight would give it, from [`FLOOR`] to all of it over the slow-start window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The share a server gets the moment it comes back.
pub const FLOOR: f64 = 0.05;

/// The share of its weight a server up for `up_for` of a `window` slow start gets.
pub fn share(up_for: Duration, window: Duration) -> f64 {
    if window.is_zero() || up_for >= window {
        return 1.0;
    }
    (up_for.as_secs_f64() / window.as_secs_f64()).max(FLOOR)
}

/// Admits exactly a `share` of the requests offered to a server (evenly spread, not
/// random): the n-th offer is taken when `floor(n * share)` steps up.
#[derive(Debug, Default)]
pub struct Throttle {
    offered: AtomicU64,
}

impl Throttle {
    pub fn admit(&self, share: f64) -> bool {
        if share >= 1.0 {
            return true;
        }
        let n = self.offered.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * share).floor() > (n * share).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_share_ramps_from_the_floor_to_whole() {
        let window = Duration::from_secs(60);
        assert_eq!(share(Duration::ZERO, window), FLOOR);
        assert!((share(Duration::from_secs(30), window) - 0.5).abs() < 1e-9);
        assert_eq!(share(Duration::from_secs(60), window), 1.0);
        assert_eq!(share(Duration::from_secs(1), Duration::ZERO), 1.0);
    }

    proptest! {
        #[test]
        fn a_throttle_admits_its_share(share in 0.01f64..1.0, offers in 100u64..5000) {
            let t = Throttle::default();
            let admitted = (0..offers).filter(|_| t.admit(share)).count() as f64;
            prop_assert!((admitted - share * offers as f64).abs() <= 1.0);
        }
    }
}
