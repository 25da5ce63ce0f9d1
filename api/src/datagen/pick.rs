//! Drawing from lists and the small bijections behind unique ids and numbers.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The generator's random source: ChaCha8, whose output is fixed by its
/// seed and stream on every platform.
pub type Rand = ChaCha8Rng;

/// A list drawn with weights, through cumulative sums and a binary search.
#[derive(Debug, Clone)]
pub struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    /// Weights in list order; at least one must be positive.
    pub fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut total = 0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    /// Weights that fall with the position like a Zipf law: the item at
    /// position `i` weighs `1 / (i + offset)`, scaled to integers.
    pub fn zipf(len: usize, offset: u64) -> Self {
        Self::new((0..len as u64).map(|i| 1_000_000_000 / (i + offset)))
    }

    /// The index of one item.
    pub fn index(&self, rng: &mut Rand) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let x = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// One element of a non-empty slice, uniformly.
pub fn one<'a, T>(rng: &mut Rand, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// True with probability `p` (clamped to 0..=1).
pub fn chance(rng: &mut Rand, p: f64) -> bool {
    rng.random_bool(p.clamp(0.0, 1.0))
}

/// A bijection of `0..modulus` (when `mul` is coprime with `modulus`): an
/// affine map that turns a counter into a number that looks drawn at random
/// but never repeats. Counters past the modulus are returned as they are
/// plus the modulus, so they cannot collide with scrambled ones either.
pub fn scramble(n: u64, modulus: u64, mul: u64, add: u64) -> u64 {
    if n >= modulus {
        return n + modulus;
    }
    ((u128::from(n) * u128::from(mul) + u128::from(add % modulus)) % u128::from(modulus)) as u64
}

/// A bijection of the 64-bit integers (odd multiplications and xor-shifts
/// are each invertible), for ids written in hexadecimal.
pub fn mix64(mut x: u64, key: u64) -> u64 {
    x ^= key;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn scramble_is_a_bijection_and_never_collides_past_its_modulus() {
        let seen: HashSet<u64> = (0..10_000).map(|n| scramble(n, 10_000, 7_321, 99)).collect();
        assert_eq!(seen.len(), 10_000);
        assert!(seen.iter().all(|&x| x < 10_000));
        assert_eq!(scramble(10_000, 10_000, 7_321, 99), 20_000);
    }

    #[test]
    fn weighted_draws_follow_their_weights() {
        let w = Weighted::new([1, 0, 3]);
        let mut rng = Rand::seed_from_u64(1);
        let mut counts = [0; 3];
        for _ in 0..4000 {
            counts[w.index(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[2] > 2 * counts[0], "{counts:?}");
    }
}
