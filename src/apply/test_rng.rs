//! A deterministic pseudo-random generator for the tests that compare the
//! value readers (`numeric_input.rs`, `jsonb_input.rs`) with PostgreSQL's
//! input functions over thousands of generated texts: the same seed gives
//! the same texts, so a failure names a text that can be replayed.
//! Test builds only.

/// xorshift64* (a non-zero seed).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
