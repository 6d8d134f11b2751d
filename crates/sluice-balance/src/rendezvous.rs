//! Weighted rendezvous (highest random weight) hashing.
//!
//! Each server scores every key; the best eligible score wins. Every sluice instance with
//! the same servers computes the same scores, so they agree without sharing state; a
//! server that leaves loses only the keys it won (about 1/N of them), and one that is
//! down for a moment gets them back when it returns. The cost is one score per server
//! per request, nothing for pools of the size a load balancer sees, and no table to
//! rebuild when health changes.

/// The server with the best score for `key` among `0..len` for which `eligible` holds.
/// `id(i)` identifies server i stably (a hash of its name); `weight(i)` scales its share.
pub fn rendezvous(
    len: usize,
    key: u64,
    eligible: impl Fn(usize) -> bool,
    id: impl Fn(usize) -> u64,
    weight: impl Fn(usize) -> u32,
) -> Option<usize> {
    (0..len)
        .filter(|&i| eligible(i) && weight(i) > 0)
        .map(|i| (score(key, id(i), weight(i)), i))
        .max_by(|(a, i), (b, j)| a.total_cmp(b).then(j.cmp(i)))
        .map(|(_, i)| i)
}

/// `weight / -ln(u)` with `u` uniform in (0, 1) from the pair: the share of keys a server
/// wins is proportional to its weight (Schindelhauer and Schomaker's weighted form).
fn score(key: u64, id: u64, weight: u32) -> f64 {
    let h = mix(key ^ mix(id));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// SplitMix64's finalizer: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pick(key: u64, ids: &[u64], weights: &[u32]) -> Option<usize> {
        rendezvous(ids.len(), key, |_| true, |i| ids[i], |i| weights[i])
    }

    #[test]
    fn shares_follow_weights() {
        let ids = [11, 22, 33];
        let weights = [1, 2, 1];
        let mut counts = [0usize; 3];
        for key in 0..40_000u64 {
            counts[pick(mix(key), &ids, &weights).unwrap()] += 1;
        }
        // Expected 10,000 / 20,000 / 10,000; allow 3 %.
        for (count, expected) in counts.iter().zip([10_000.0, 20_000.0, 10_000.0]) {
            let off = (*count as f64 - expected).abs() / expected;
            assert!(off < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn nothing_eligible_means_no_server() {
        assert_eq!(rendezvous(3, 1, |_| false, |i| i as u64, |_| 1), None);
        assert_eq!(rendezvous(2, 1, |_| true, |i| i as u64, |_| 0), None);
    }

    proptest! {
        #[test]
        fn removing_a_server_moves_only_its_own_keys(
            servers in 2usize..12,
            removed in 0usize..12,
            keys in proptest::collection::vec(any::<u64>(), 200..400),
        ) {
            let removed = removed % servers;
            let ids: Vec<u64> = (0..servers as u64).map(|i| i * 7919 + 1).collect();
            let weights = vec![1; servers];
            let mut moved = 0;
            for key in &keys {
                let before = pick(*key, &ids, &weights).unwrap();
                let after = rendezvous(servers, *key, |i| i != removed, |i| ids[i], |i| weights[i]).unwrap();
                if before != removed {
                    prop_assert_eq!(before, after, "a key of a remaining server moved");
                } else {
                    moved += 1;
                }
            }
            // About 1/N of the keys were on the removed server; allow generous noise.
            let share = moved as f64 / keys.len() as f64;
            prop_assert!(share < 2.5 / servers as f64 + 0.05, "{} of {} moved", moved, keys.len());
        }

        #[test]
        fn the_same_servers_always_choose_the_same(key in any::<u64>(), servers in 1usize..20) {
            let ids: Vec<u64> = (0..servers as u64).map(|i| i.wrapping_mul(0x2545_f491)).collect();
            let weights = vec![3; servers];
            prop_assert_eq!(pick(key, &ids, &weights), pick(key, &ids, &weights));
        }
    }
}
