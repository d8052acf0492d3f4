#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "testutil"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(any(test, feature = "check"))]
mod check;
pub mod consts;
#[doc = include_str!("../GUIDE.md")]
pub mod guide {}
mod handedout;
#[cfg(any(test, feature = "testutil"))]
pub mod model;
pub mod pagealloc;
pub mod pagecache;
pub mod pallocbits;
pub mod ranges;
pub mod summary;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

#[cfg(any(test, feature = "check"))]
pub use check::InvariantError;
pub use handedout::HandedOut;
pub use pagealloc::{
    AllocError, Allocation, ChunkIdx, Constraints, Contents, FreeRuns, GrowError, LayoutError,
    MAX_NPAGES, MAX_SEARCH_ADDR, Metadata, MetadataLayout, PageAlloc, RangeOpError,
};
pub use pagecache::{FREE_BATCH_PAGES, FreeBatch, PageCache};
pub use pallocbits::{PageBits, PallocBits, PallocData};
pub use ranges::{AddrRange, AddrRanges};
pub use summary::{FREE_CHUNK_SUM, PallocSum, merge_summaries};
