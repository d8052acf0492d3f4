#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod consts;
pub mod pagecache;
pub mod ranges;
pub mod summary;

pub use summary::{FREE_CHUNK_SUM, PallocSum, merge_summaries};
