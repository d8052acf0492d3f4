//! The exercises of `kernel/pagealloc/GUIDE.md` section 9. Each `exerciseN` module is a
//! function to write (it starts as `todo!()`); `tests/checks.rs` checks it:
//!
//! ```text
//! cargo test -p pagealloc-exercises -- --ignored exercise2
//! ```
//!
//! With the feature `solutions`, the modules come from `solutions/` instead (what
//! `./run-qemu.sh test` checks). Everything here uses `pagealloc`'s public API only.

#[cfg_attr(feature = "solutions", path = "../solutions/exercise1.rs")]
pub mod exercise1;
#[cfg_attr(feature = "solutions", path = "../solutions/exercise2.rs")]
pub mod exercise2;
#[cfg_attr(feature = "solutions", path = "../solutions/exercise4.rs")]
pub mod exercise4;
pub mod workload;
