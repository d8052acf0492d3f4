//! A read-only view of an allocator's insides, for a memory console, a picture of the
//! tree, and tests (feature `inspect`).
//!
//! Everything here is what the design is made of (summaries, chunk bitmaps, the grown
//! ranges, the search address), named as in Go where Go has the thing. None of it is
//! needed to allocate: the root of the crate is the whole allocating API. One view type,
//! [`Inspect`], reaches every piece; the other items are the values it returns and the
//! geometry needed to read them.

use crate::index::LEAF;
use crate::{AddrRange, PageAlloc};

pub use crate::consts::{
    LEVEL_BITS, LEVEL_LOG_PAGES, LEVEL_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES, PHYS_ADDR_BITS,
    SUMMARY_BLOCK_ENTRIES, SUMMARY_LEVELS,
};
pub use crate::index::{ChunkIdx, MAX_SEARCH_ADDR, chunk_page_index};
pub use crate::pallocbits::{PageBits, PallocData};
pub use crate::summary::{FREE_CHUNK_SUM, PallocSum};

/// A read-only view of one allocator, from [`PageAlloc::inspect`].
#[derive(Clone, Copy)]
pub struct Inspect<'a, 'm> {
    pa: &'a PageAlloc<'m>,
}

impl<'a, 'm> Inspect<'a, 'm> {
    pub(crate) fn new(pa: &'a PageAlloc<'m>) -> Self {
        Inspect { pa }
    }

    /// The summaries of level `l` (0 is the root, 4 the chunks) in index order, stale
    /// ones recomputed; `None` for a level that does not exist.
    pub fn summaries(self, l: usize) -> Option<impl ExactSizeIterator<Item = PallocSum> + 'a> {
        let pa = self.pa;
        let level = pa.summary.get(l)?;
        Some((0..level.len()).map(move |i| pa.sum(l, i)))
    }

    /// Entry `i` of summary level `l`, recomputed if it was stale; `None` if there is no
    /// such entry.
    pub fn summary(self, l: usize, i: usize) -> Option<PallocSum> {
        let level = self.pa.summary.get(l)?;
        (i < level.len()).then(|| self.pa.sum(l, i))
    }

    /// Whether entry `i` of level `l` is stale: a bitmap below it changed since it was
    /// last computed, and the next read recomputes it. Reading it (or any entry above
    /// it, or any search) recomputes it and clears the mark, so ask before reading.
    /// `None` if there is no such entry. Not in Go, whose summaries are never stale.
    pub fn is_stale(self, l: usize, i: usize) -> Option<bool> {
        let level = self.pa.summary.get(l)?;
        (i < level.len()).then(|| level.cached(i).is_none())
    }

    /// The leaf summary of chunk `ci`; `None` beyond the span.
    pub fn chunk_summary(self, ci: ChunkIdx) -> Option<PallocSum> {
        self.summary(LEAF, ci.index())
    }

    /// A copy of the bitmaps of chunk `ci`, if a grow touched it. Go: `tryChunkOf`.
    pub fn chunk_data(self, ci: ChunkIdx) -> Option<PallocData> {
        self.pa.chunk_data(ci)
    }

    /// The grown memory, page-granular, sorted and coalesced. Go: `inUse`.
    pub fn grown(self) -> &'a [AddrRange] {
        self.pa.grown_ranges().ranges()
    }

    /// No page below this address is free. Go: `searchAddr`.
    pub fn search_addr(self) -> u64 {
        self.pa.search_addr()
    }

    /// The grown chunks lie in `[first, end)`; `None` before the first grow.
    /// Go: the `start` and `end` fields.
    pub fn chunk_bounds(self) -> Option<(ChunkIdx, ChunkIdx)> {
        let (start, end) = self.pa.chunk_bounds();
        (start < end).then_some((ChunkIdx::new(start), ChunkIdx::new(end)))
    }
}

impl PallocData {
    /// Which pages of the chunk are allocated (held and handed-out pages, and pages no
    /// grow covered). Go: `pallocData.pallocBits`.
    pub fn alloc_bits(&self) -> &PageBits {
        &self.alloc
    }

    /// Which free pages of the chunk are known to be zero. Go: `pallocData.scavenged`.
    pub fn known_zero_bits(&self) -> &PageBits {
        &self.known_zero
    }

    /// The search the allocator runs in this chunk: the first run of `npages` free pages
    /// at or after page `from`, and the first free page at or after `from` (the next
    /// search address). Go: `(*pallocBits).find`.
    pub fn find_free(&self, npages: usize, from: usize) -> Option<(usize, usize)> {
        self.alloc.find(npages, from)
    }
}

impl<'m> PageAlloc<'m> {
    /// A read-only view of the allocator's insides (feature `inspect`).
    pub fn inspect(&self) -> Inspect<'_, 'm> {
        Inspect::new(self)
    }
}
