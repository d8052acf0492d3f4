//! Executable invariants: recompute the whole tree from the bitmaps and compare.
//!
//! Go has no single checker; its tests compare bitmaps only (and leave summaries as a
//! TODO). Here every operation in the tests is followed by this full check.

use core::fmt;

use crate::consts::{
    LEVEL_BITS, LEVEL_LOG_PAGES, PAGE_SHIFT, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES,
    SUMMARY_BLOCK_ENTRIES, SUMMARY_LEVELS,
};
use crate::index::{ChunkIdx, MAX_SEARCH_ADDR, chunk_page_index};
use crate::pallocbits::PageBits;
use crate::summary::{PallocSum, merge_summaries};
use crate::tree::PageAlloc;

/// A broken invariant, with the values that show it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InvariantError {
    /// A summary differs from the one recomputed from the bitmaps or its children.
    Summary {
        /// Level (0 is the root).
        level: usize,
        /// Index in the level.
        index: usize,
        /// The recomputed value.
        expected: PallocSum,
        /// The stored value.
        found: PallocSum,
    },
    /// A fresh summary has a stale child: a change below it was not marked above.
    StaleBelowFresh {
        /// Level of the fresh entry (0 is the root).
        level: usize,
        /// Its index.
        index: usize,
        /// The index of its stale child, one level down.
        child: usize,
    },
    /// A page is marked zeroed but is allocated.
    ZeroedNotFree {
        /// The chunk.
        chunk: ChunkIdx,
        /// The page inside it.
        page: usize,
    },
    /// A free page lies outside every grown range.
    FreeNotGrown {
        /// The page's address.
        page: u64,
    },
    /// A free page lies below the search address.
    FreeBelowSearchAddr {
        /// The search address.
        search_addr: u64,
        /// The free page.
        page: u64,
    },
    /// A grown chunk lies outside the recorded chunk bounds.
    OutOfBounds {
        /// The chunk.
        chunk: ChunkIdx,
        /// Recorded start.
        start: usize,
        /// Recorded end.
        end: usize,
    },
    /// The kept free-page count differs from the bitmaps.
    FreeCount {
        /// Free pages in the bitmaps.
        counted: usize,
        /// The allocator's count.
        recorded: usize,
    },
    /// A page is marked handed out but is free in the tree.
    HandedOutFree {
        /// The page's address.
        page: u64,
    },
    /// A page is marked handed out but was never grown.
    HandedOutNotGrown {
        /// The page's address.
        page: u64,
    },
    /// The grown ranges are malformed.
    Ranges {
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            InvariantError::Summary {
                level,
                index,
                expected,
                found,
            } => write!(
                f,
                "summary[{level}][{index}] is {found:?}, recomputed {expected:?}"
            ),
            InvariantError::ZeroedNotFree { chunk, page } => {
                write!(f, "{chunk} page {page} is marked zeroed but allocated")
            }
            InvariantError::FreeNotGrown { page } => {
                write!(f, "page {page:#x} is free but was never grown")
            }
            InvariantError::FreeBelowSearchAddr { search_addr, page } => {
                write!(
                    f,
                    "page {page:#x} is free below the search address {search_addr:#x}"
                )
            }
            InvariantError::OutOfBounds { chunk, start, end } => {
                write!(
                    f,
                    "{chunk} has free pages outside the bounds [{start:#x}, {end:#x})"
                )
            }
            InvariantError::StaleBelowFresh {
                level,
                index,
                child,
            } => write!(
                f,
                "summary[{level}][{index}] is fresh but its child summary[{}][{child}] is stale",
                level + 1
            ),
            InvariantError::FreeCount { counted, recorded } => {
                write!(f, "{counted} pages are free, the count says {recorded}")
            }
            InvariantError::HandedOutFree { page } => {
                write!(f, "page {page:#x} is marked handed out but is free")
            }
            InvariantError::HandedOutNotGrown { page } => {
                write!(f, "page {page:#x} is marked handed out but was never grown")
            }
            InvariantError::Ranges { reason } => write!(f, "grown ranges: {reason}"),
        }
    }
}

impl core::error::Error for InvariantError {}

pub(crate) fn check_invariants(pa: &PageAlloc<'_>) -> Result<(), InvariantError> {
    pa.grown_ranges()
        .check()
        .map_err(|reason| InvariantError::Ranges { reason })?;
    let leaf = SUMMARY_LEVELS - 1;
    let (start, end) = pa.chunk_bounds();
    let search_addr = pa.search_addr();
    let search_chunk = ChunkIdx::of(search_addr);
    let mut counted = 0;

    let handed_out = pa.handed_out();
    let leaves = &pa.summary[leaf];
    for ci in 0..leaves.len() {
        let chunk = ChunkIdx(ci);
        // A stale leaf is recomputed before it is read; a fresh one must be right.
        let found = leaves.cached(ci);
        let Some(data) = pa.chunk_data(chunk) else {
            if let Some(found) = found
                && found != PallocSum::EMPTY
            {
                return Err(InvariantError::Summary {
                    level: leaf,
                    index: ci,
                    expected: PallocSum::EMPTY,
                    found,
                });
            }
            continue;
        };
        let expected = data.alloc.summarize();
        if let Some(found) = found
            && expected != found
        {
            return Err(InvariantError::Summary {
                level: leaf,
                index: ci,
                expected,
                found,
            });
        }
        let grown = grown_pages(pa, chunk);
        for (w, ((&a, &z), &g)) in data
            .alloc
            .words()
            .iter()
            .zip(data.known_zero.words())
            .zip(grown.words())
            .enumerate()
        {
            let h = handed_out.chunk_word(chunk, w).unwrap_or(0);
            if h & !a != 0 {
                let page = w * 64 + (h & !a).trailing_zeros() as usize;
                return Err(InvariantError::HandedOutFree {
                    page: page_addr(chunk, page),
                });
            }
            if h & !g != 0 {
                let page = w * 64 + (h & !g).trailing_zeros() as usize;
                return Err(InvariantError::HandedOutNotGrown {
                    page: page_addr(chunk, page),
                });
            }
            if a & z != 0 {
                let page = w * 64 + (a & z).trailing_zeros() as usize;
                return Err(InvariantError::ZeroedNotFree { chunk, page });
            }
            let free_not_grown = !a & !g;
            if free_not_grown != 0 {
                let page = w * 64 + free_not_grown.trailing_zeros() as usize;
                return Err(InvariantError::FreeNotGrown {
                    page: page_addr(chunk, page),
                });
            }
        }
        let free = data.alloc.free_count();
        if free > 0 && (ci < start || ci >= end) {
            return Err(InvariantError::OutOfBounds { chunk, start, end });
        }
        // Nothing below the search address may be free.
        if free > 0 && chunk <= search_chunk {
            let below = if chunk < search_chunk {
                PALLOC_CHUNK_PAGES
            } else {
                chunk_page_index(search_addr)
            };
            if let Some(p) = (0..below).find(|&p| !data.alloc.get(p)) {
                return Err(InvariantError::FreeBelowSearchAddr {
                    search_addr,
                    page: page_addr(chunk, p),
                });
            }
        }
        counted += free;
    }

    for l in (0..leaf).rev() {
        let children = &pa.summary[l + 1];
        let level = &pa.summary[l];
        for i in 0..level.len() {
            let Some(found) = level.cached(i) else {
                continue;
            };
            let lo = i << LEVEL_BITS[l + 1];
            let hi = (i + 1) << LEVEL_BITS[l + 1];
            // Padding entries past the last block of children summarise nothing. Below
            // the root a block is 8 entries.
            let expected = if hi <= children.len() {
                let mut block = [PallocSum::EMPTY; SUMMARY_BLOCK_ENTRIES];
                for (k, b) in block.iter_mut().enumerate() {
                    *b = children
                        .cached(lo + k)
                        .ok_or(InvariantError::StaleBelowFresh {
                            level: l,
                            index: i,
                            child: lo + k,
                        })?;
                }
                merge_summaries(&block, LEVEL_LOG_PAGES[l + 1])
            } else {
                PallocSum::EMPTY
            };
            if expected != found {
                return Err(InvariantError::Summary {
                    level: l,
                    index: i,
                    expected,
                    found,
                });
            }
        }
    }

    if counted != pa.free_pages() {
        return Err(InvariantError::FreeCount {
            counted,
            recorded: pa.free_pages(),
        });
    }
    debug_assert!(search_addr <= MAX_SEARCH_ADDR);
    Ok(())
}

/// The pages of a chunk that some grow covered.
fn grown_pages(pa: &PageAlloc<'_>, chunk: ChunkIdx) -> PageBits {
    let (cb, ce) = (chunk.base(), chunk.base() + PALLOC_CHUNK_BYTES);
    let mut bits = PageBits::default();
    for r in pa.inspect().grown() {
        if r.limit <= cb || r.base >= ce {
            continue;
        }
        let lo = r.base.max(cb);
        let hi = r.limit.min(ce);
        let i = ((lo - cb) >> PAGE_SHIFT) as usize;
        let n = ((hi - lo) >> PAGE_SHIFT) as usize;
        bits.set_range(i, n);
    }
    bits
}

fn page_addr(chunk: ChunkIdx, page: usize) -> u64 {
    chunk.base() + ((page as u64) << PAGE_SHIFT)
}
