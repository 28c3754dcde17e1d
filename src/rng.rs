/*!
The crate's one seeded random number generator: SplitMix64, with uniform, normal, shuffle
and sampling draws and index-addressable draw ranges.

Every random choice repro makes (weight initialisation, dropout masks, training shuffles,
negative mining, dev splits, randomisation tests) draws from here, so a seed gives the same
values on every machine and thread count. This module knows nothing about what the draws
are for.
*/

/// SplitMix64: tiny, fast, and identical everywhere. Also the generator of training's
/// initialisation, shuffling and dropout masks.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }

    /// A uniform draw from `0..n` (multiply-shift reduction of one 64-bit draw).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates over all of `items`, from the back (one draw per position).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// Partial Fisher–Yates from the front: the first `count` items become a uniform sample
    /// of all of them, in draw order; the rest is left in some order.
    pub(crate) fn sample_prefix<T>(&mut self, items: &mut [T], count: usize) {
        for slot in 0..count.min(items.len()) {
            let pick = slot + self.below(items.len() - slot);
            items.swap(slot, pick);
        }
    }

    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    #[inline(always)]
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Reserves the next `count` draws and returns them as a [`DrawRange`] whose draws can be
    /// computed in any order and on any thread: SplitMix64's state advances by a constant,
    /// so draw `i` is a function of the starting state and `i` alone.
    pub(crate) fn reserve(&mut self, count: u64) -> DrawRange {
        let start = self.0;
        self.0 = self.0.wrapping_add(Self::GAMMA.wrapping_mul(count));
        DrawRange { start }
    }

    /// Uniform in (0, 1].
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller.
    pub(crate) fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// Draws `0, 1, …` of a [`SplitMix64`] stream from a fixed point, by index: the same values
/// `next_u64` would have returned one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrawRange {
    start: u64,
}

impl DrawRange {
    #[inline(always)]
    pub(crate) fn draw(&self, index: u64) -> u64 {
        SplitMix64::mix(
            self.start
                .wrapping_add(SplitMix64::GAMMA.wrapping_mul(index.wrapping_add(1))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_draws_are_the_serial_draws() {
        let mut serial = SplitMix64::new(42);
        let mut jumping = SplitMix64::new(42);
        let range = jumping.reserve(5);
        let expected: Vec<u64> = (0..5).map(|_| serial.next_u64()).collect();
        let by_index: Vec<u64> = (0..5).map(|i| range.draw(i)).collect();
        assert_eq!(by_index, expected);
        assert_eq!(
            jumping.next_u64(),
            serial.next_u64(),
            "the stream continues after the range"
        );
    }

    /// The draws the samplers make, spelled out: one 64-bit draw per position, reduced by
    /// multiply-shift (what every shuffle in the crate did inline before these methods).
    #[test]
    fn shuffles_and_samples_make_the_documented_draws() {
        let reduce = |draw: u64, n: usize| ((draw as u128 * n as u128) >> 64) as usize;
        let mut expected: Vec<u32> = (0..10).collect();
        let mut draws = SplitMix64::new(5);
        for i in (1..expected.len()).rev() {
            let j = reduce(draws.next_u64(), i + 1);
            expected.swap(i, j);
        }
        let mut shuffled: Vec<u32> = (0..10).collect();
        SplitMix64::new(5).shuffle(&mut shuffled);
        assert_eq!(shuffled, expected);

        let mut expected: Vec<u32> = (0..10).collect();
        let mut draws = SplitMix64::new(6);
        for slot in 0..4 {
            let pick = slot + reduce(draws.next_u64(), 10 - slot);
            expected.swap(slot, pick);
        }
        let mut sampled: Vec<u32> = (0..10).collect();
        SplitMix64::new(6).sample_prefix(&mut sampled, 4);
        assert_eq!(sampled, expected);
        let mut short = vec![1, 2];
        SplitMix64::new(6).sample_prefix(&mut short, 5);
        assert_eq!(short.len(), 2);
    }
}
