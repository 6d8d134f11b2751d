//! Least connections, weighted: the server with the fewest active requests per unit of
//! weight. Ties go to the first eligible server at or after `start`, so a caller that
//! rotates `start` spreads ties evenly.

/// Picks among servers `0..n` for which `eligible` holds.
pub fn least_connections(
    n: usize,
    start: usize,
    eligible: impl Fn(usize) -> bool,
    active: impl Fn(usize) -> u64,
    weight: impl Fn(usize) -> u32,
) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for k in 0..n {
        let i = (start + k) % n.max(1);
        let w = u64::from(weight(i));
        if w == 0 || !eligible(i) {
            continue;
        }
        let a = active(i);
        // a/w < best_a/best_w, compared without division.
        let better = best.is_none_or(|(_, ba, bw)| {
            u128::from(a) * u128::from(bw) < u128::from(ba) * u128::from(w)
        });
        if better {
            best = Some((i, a, w));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_idle_server() {
        let active = [5, 0, 3];
        assert_eq!(
            least_connections(3, 0, |_| true, |i| active[i], |_| 1),
            Some(1)
        );
    }

    #[test]
    fn weighs_connections_by_weight() {
        let active = [4, 3];
        let weight = [4, 1];
        assert_eq!(
            least_connections(2, 1, |_| true, |i| active[i], |i| weight[i]),
            Some(0)
        );
    }

    #[test]
    fn ties_rotate_with_start() {
        assert_eq!(least_connections(3, 1, |_| true, |_| 0, |_| 1), Some(1));
        assert_eq!(least_connections(3, 2, |_| true, |_| 0, |_| 1), Some(2));
    }

    #[test]
    fn skips_ineligible_and_zero_weight() {
        assert_eq!(
            least_connections(3, 0, |i| i != 0, |i| [0, 9, 9][i], |i| [1, 0, 1][i]),
            Some(2)
        );
        assert_eq!(least_connections(2, 0, |_| false, |_| 0, |_| 1), None);
        assert_eq!(least_connections(0, 0, |_| true, |_| 0, |_| 1), None);
    }
}
