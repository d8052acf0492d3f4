//! A flat reference model of [`PageAlloc`] and an interpreter that runs the same
//! operations on both and demands identical results.
//!
//! The model keeps one bit per page over `[0, span_limit)` in three bitmaps (grown, free,
//! known zero) and answers every request by scanning them in address order. It has no
//! tree, no search address and no fast paths, so it is slow but easy to check by eye;
//! the property tests and the fuzz target compare the real allocator against it.
//!
//! [`FirstFitBitmap`], the model's free bitmap, doubles as the "linear first-fit
//! bitmap" baseline of the benchmarks.
//!
//! Not published: shared by `pagealloc`'s tests and benchmarks and its fuzz target
//! (through `pagealloc`'s hidden `testutil` feature).

mod bits;
mod decode;
mod flat;
mod harness;
mod ops;
#[cfg(test)]
mod tests;

pub use bits::FirstFitBitmap;
pub use decode::decode_ops;
pub use flat::{FlatModel, ModelCache, PageState};
pub use ops::{BadFree, CPUS, Op, RunConfig, RunStats, run_ops, run_ops_with};
