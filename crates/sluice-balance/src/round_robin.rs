//! Smooth weighted round robin (nginx's interleaving) without a lock on the hot path.
//!
//! The interleaved order for the configured weights is computed once; picking is then one
//! atomic increment. A server that cannot take a request is skipped by taking the next
//! ticket, so the servers that can keep their proportions to each other exactly.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct SmoothWeighted {
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl SmoothWeighted {
    /// `weights[i]` is server i's weight; weight 0 servers are never chosen.
    pub fn new(weights: &[u32]) -> Self {
        SmoothWeighted {
            schedule: interleave(weights),
            next: AtomicUsize::new(0),
        }
    }

    /// The next server for which `eligible` holds, or `None` if none does.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        for _ in 0..len {
            let ticket = self.next.fetch_add(1, Ordering::Relaxed) % len;
            let server = self.schedule[ticket] as usize;
            if eligible(server) {
                return Some(server);
            }
        }
        None
    }
}

/// nginx's smooth weighted order over one period (weights divided by their gcd).
fn interleave(weights: &[u32]) -> Vec<u32> {
    let divisor = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let best = (0..weights.len())
            .filter(|&i| weights[i] > 0)
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)));
        if let Some(best) = best {
            current[best] -= total;
            order.push(best as u32);
        }
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        rr: &SmoothWeighted,
        n: usize,
        picks: usize,
        eligible: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[rr.pick(&eligible).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn interleaves_smoothly() {
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(interleave(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(interleave(&[10, 20]), vec![1, 0, 1]);
    }

    #[test]
    fn proportions_follow_weights() {
        let rr = SmoothWeighted::new(&[3, 2, 1]);
        assert_eq!(counts(&rr, 3, 600, |_| true), vec![300, 200, 100]);
    }

    #[test]
    fn skipped_servers_leave_the_others_in_proportion() {
        let rr = SmoothWeighted::new(&[3, 2, 1]);
        assert_eq!(counts(&rr, 3, 300, |i| i != 1), vec![225, 0, 75]);
    }

    #[test]
    fn zero_weight_and_no_eligible_server() {
        let rr = SmoothWeighted::new(&[0, 4]);
        assert_eq!(counts(&rr, 2, 10, |_| true), vec![0, 10]);
        assert_eq!(rr.pick(|_| false), None);
        assert_eq!(SmoothWeighted::new(&[0, 0]).pick(|_| true), None);
        assert_eq!(SmoothWeighted::new(&[]).pick(|_| true), None);
    }
}
