//! A tiny deterministic random-number generator (xorshift64*) for tests and demos.
//!
//! The kernel's own rather than the allocator crate's `testutil::Rng`: that one sits behind
//! a test-support feature (with `alloc` and the Go-test helpers) that the kernel does not
//! build.

/// xorshift64*: fast, small, good enough to shuffle test workloads. Not for secrets.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed (zero is replaced).
    pub const fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
