#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The public API is the root's re-exports below (and the `inspect` module with its
// feature); every module is private, so the folder listing maps the design without
// becoming API. Tests in `tests/` reach internals through the hidden `testutil` module
// only, as Go's tests do through `export_test.go`.

#[cfg(any(test, feature = "testutil"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(any(test, feature = "check"))]
mod check;
mod constrained;
mod consts;
mod errors;
mod grow;
mod handedout;
mod index;
mod layout;
mod metadata;
mod pagecache;
mod pallocbits;
mod queries;
mod ranges;
mod single;
mod stale;
mod summary;
mod tree;
mod whole;

#[cfg(any(test, feature = "inspect"))]
#[cfg_attr(docsrs, doc(cfg(feature = "inspect")))]
pub mod inspect;

#[cfg(any(test, feature = "testutil"))]
#[doc(hidden)]
pub mod testutil;

#[doc = include_str!("../GUIDE.md")]
pub mod guide {}

#[cfg(any(test, feature = "check"))]
#[cfg_attr(docsrs, doc(cfg(feature = "check")))]
pub use check::InvariantError;
pub use constrained::Constraints;
pub use errors::{AllocError, GrowError, LayoutError, RangeOpError};
pub use handedout::HandedOut;
pub use layout::MetadataLayout;
pub use pagecache::{FreeBatch, PageCache};
pub use ranges::AddrRange;
pub use tree::{Allocation, Contents, PageAlloc};
