//! The page allocator: a radix tree of packed summaries over 512-page chunk bitmaps.
//!
//! This module follows the structure of Go's `runtime/mpagealloc.go` and
//! `mpagealloc_64bit.go` (Copyright 2019 The Go Authors; BSD-style licence, see the
//! crate's `LICENSE-GO` notice). The search is Go's address-ordered first fit; what a
//! kernel needs on top (page-granular grow, checked frees, aligned and windowed
//! allocation, queries) is marked as such where it appears.
//!
//! # Layout of the tree
//! Level 4 holds one [`PallocSum`] per 2 MiB chunk, and each entry of level `l < 4`
//! merges 8 entries of level `l + 1`. An entry at the root covers 8 GiB. Only the part
//! of each level below the allocator's *span* (the highest address it will ever manage)
//! exists; Go instead reserves every level for the whole address space and maps pages
//! of it on demand, which a kernel without a virtual-memory system underneath cannot do.
//!
//! # Cost of the metadata
//! As in Go, the summary levels and the chunk map are indexed by address from 0, so
//! they cover the whole span `[0, span_limit)` whether memory exists there or not: about
//! 4.7 KiB per GiB of span (8-byte leaves per 2 MiB chunk, the levels above, and 4 bytes
//! of chunk map per 32 MiB). Memory near the top of the address space therefore costs
//! as much of them as if everything below it existed: 64 MiB just below 256 TiB (the
//! 48-bit limit) needs about 1.26 GB of summaries. The chunk bitmaps (128 bytes per
//! chunk) and the handed-out bits (64 bytes per chunk) are sparse: they exist only for
//! the 32 MiB blocks that some grown region touches. Sizing the dense part from the
//! lowest grown address instead would need an offset in every index; physical memory
//! maps of real machines start near 0, so this port keeps Go's layout.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::consts::{
    LEVEL_BITS, LEVEL_LOG_PAGES, LEVEL_SHIFT, LOG_PALLOC_CHUNK_BYTES, MAX_CHUNKS, PAGE_SHIFT,
    PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES, PALLOC_CHUNKS_L2_BITS,
    PALLOC_CHUNKS_L2_ENTRIES, PHYS_ADDR_BITS, SUMMARY_BLOCK_ENTRIES, SUMMARY_LEVEL_BITS,
    SUMMARY_LEVELS,
};
use crate::handedout::{HandedOut, NO_BLOCK, WORDS_PER_CHUNK};
use crate::pallocbits::PallocData;
use crate::ranges::{AddrRange, AddrRanges, RangeError};
use crate::summary::{FREE_CHUNK_SUM, PallocSum, merge_summaries};

/// The highest physical address; a search address here means "nothing is free".
/// Go: `maxSearchAddr` (with `arenaBaseOffset` = 0).
pub const MAX_SEARCH_ADDR: u64 = (1 << PHYS_ADDR_BITS) - 1;

/// The largest request, in pages: the whole physical address space.
pub const MAX_NPAGES: usize = MAX_CHUNKS * PALLOC_CHUNK_PAGES;

/// The leaf level.
const LEAF: usize = SUMMARY_LEVELS - 1;

/// The index of a 2 MiB chunk of physical memory. Go: `chunkIdx`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ChunkIdx(pub usize);

impl ChunkIdx {
    /// The chunk that holds `addr`. Go: `chunkIndex`.
    pub const fn of(addr: u64) -> ChunkIdx {
        ChunkIdx((addr >> LOG_PALLOC_CHUNK_BYTES) as usize)
    }

    /// The first address of the chunk. Go: `chunkBase`.
    pub const fn base(self) -> u64 {
        (self.0 as u64) << LOG_PALLOC_CHUNK_BYTES
    }

    /// Index of the chunk map's block that holds this chunk. Go: `chunkIdx.l1`.
    pub const fn l1(self) -> usize {
        self.0 >> PALLOC_CHUNKS_L2_BITS
    }

    /// Index of this chunk inside its block. Go: `chunkIdx.l2`.
    pub const fn l2(self) -> usize {
        self.0 & (PALLOC_CHUNKS_L2_ENTRIES - 1)
    }
}

impl fmt::Display for ChunkIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk {:#x}", self.0)
    }
}

/// The page index of `addr` inside its chunk. Go: `chunkPageIndex`.
pub const fn chunk_page_index(addr: u64) -> usize {
    ((addr % PALLOC_CHUNK_BYTES) >> PAGE_SHIFT) as usize
}

/// The free pages just below and just above page `i` of a chunk bitmap, looking at most
/// one word beyond `i`'s own; `None` if a run goes further (the caller then summarizes).
fn free_run_around(words: &[u64; 8], i: usize) -> Option<(usize, usize)> {
    let (k, b) = (i / 64, i % 64);
    let w = words[k];
    // Below: zeros in bits [0, b) counted from the top.
    let mut below = if b == 0 {
        0
    } else {
        ((w << (64 - b)).leading_zeros() as usize).min(b)
    };
    if below == b && k > 0 {
        let z = words[k - 1].leading_zeros() as usize;
        if z == 64 {
            return None;
        }
        below += z;
    }
    let mut above = if b == 63 {
        0
    } else {
        ((w >> (b + 1)).trailing_zeros() as usize).min(63 - b)
    };
    if above == 63 - b && k < 7 {
        let z = words[k + 1].trailing_zeros() as usize;
        if z == 64 {
            return None;
        }
        above += z;
    }
    Some((below, above))
}

/// Whether flipping page `i` alone (to free if `freed`, else to allocated) leaves the chunk
/// summary `old` as it was; false when unsure.
pub(crate) fn one_page_keeps_summary(
    words: &[u64; 8],
    i: usize,
    old: PallocSum,
    freed: bool,
) -> bool {
    let Some((below, above)) = free_run_around(words, i) else {
        return false;
    };
    let (first, last, len) = (i - below, i + above, below + 1 + above);
    if first == 0 || last == PALLOC_CHUNK_PAGES - 1 {
        return false;
    }
    // A free makes this run `len` long; an alloc splits a run of `len` pages.
    if freed {
        len <= old.max()
    } else {
        len < old.max()
    }
}

/// The index of the level-`l` entry that covers `addr`. Go: `offAddrToLevelIndex`.
const fn level_index(l: usize, addr: u64) -> usize {
    (addr >> LEVEL_SHIFT[l]) as usize
}

/// The first address covered by entry `i` of level `l`. Go: `levelIndexToOffAddr`.
const fn level_index_to_addr(l: usize, i: usize) -> u64 {
    (i as u64) << LEVEL_SHIFT[l]
}

/// The half-open range of level-`l` entries that covers `[base, limit)`.
/// Go: `addrsToSummaryRange`.
const fn addrs_to_summary_range(l: usize, base: u64, limit: u64) -> (usize, usize) {
    (level_index(l, base), level_index(l, limit - 1) + 1)
}

const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// What grown memory holds, which decides its zeroed ("scavenged") bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contents {
    /// Contents unknown (boot RAM): the pages' zeroed bits start clear.
    Unknown,
    /// Known to be zero (Go's fresh OS memory): the zeroed bits start set.
    Zeroed,
}

/// Sizes of the metadata an allocator needs, computed before any of it exists so a
/// kernel can carve it out of its memory map first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MetadataLayout {
    /// Chunks below the highest address the allocator manages.
    span_chunks: usize,
    /// Entries materialised at each summary level.
    level_len: [usize; SUMMARY_LEVELS],
    /// Blocks of [`PALLOC_CHUNKS_L2_ENTRIES`] chunk bitmaps in the pool.
    l2_blocks: usize,
}

impl MetadataLayout {
    /// A layout for memory below `span_limit` (rounded up to a chunk) with room for the
    /// bitmaps of `l2_blocks` blocks of [`PALLOC_CHUNKS_L2_ENTRIES`] chunks.
    pub fn new(span_limit: u64, l2_blocks: usize) -> Result<MetadataLayout, LayoutError> {
        if span_limit > 1 << PHYS_ADDR_BITS {
            return Err(LayoutError::BeyondAddressSpace { limit: span_limit });
        }
        let span_chunks =
            align_up(span_limit, PALLOC_CHUNK_BYTES) as usize >> LOG_PALLOC_CHUNK_BYTES;
        let mut level_len = [0; SUMMARY_LEVELS];
        for (l, len) in level_len.iter_mut().enumerate() {
            let chunks_per_entry = 1usize << ((LEAF - l) as u32 * SUMMARY_LEVEL_BITS);
            let n = span_chunks.div_ceil(chunks_per_entry);
            // `find` reads whole 8-entry blocks below the root.
            *len = if l == 0 {
                n
            } else {
                n.next_multiple_of(SUMMARY_BLOCK_ENTRIES)
            };
        }
        let map_len = span_chunks.div_ceil(PALLOC_CHUNKS_L2_ENTRIES);
        Ok(MetadataLayout {
            span_chunks,
            level_len,
            l2_blocks: l2_blocks.min(map_len),
        })
    }

    /// The layout for exactly these regions: the span ends at the highest region's end,
    /// and the pool holds a block for every block of chunks a region touches (each
    /// counted once, however many regions overlap it).
    ///
    /// The regions' blocks are sorted and merged: O(n log n) for up to 128 regions (on
    /// the stack, as the crate does not allocate); beyond that they are visited in sorted
    /// order by selection, O(n²) in the number of regions. Neither depends on the
    /// regions' sizes.
    pub fn for_regions(regions: &[AddrRange]) -> Result<MetadataLayout, LayoutError> {
        let span_limit = regions.iter().map(|r| r.limit).max().unwrap_or(0);
        MetadataLayout::new(span_limit, blocks_touched(regions))
    }

    /// One past the highest address the allocator can manage.
    pub const fn span_limit(&self) -> u64 {
        (self.span_chunks as u64) << LOG_PALLOC_CHUNK_BYTES
    }

    /// Entries at each summary level.
    pub const fn level_len(&self) -> [usize; SUMMARY_LEVELS] {
        self.level_len
    }

    /// Length of [`Metadata::summaries`]: every level, root first.
    pub fn summary_entries(&self) -> usize {
        self.level_len.iter().sum()
    }

    /// Length of [`Metadata::chunk_map`]: one entry per block of chunks in the span.
    pub const fn chunk_map_entries(&self) -> usize {
        self.span_chunks.div_ceil(PALLOC_CHUNKS_L2_ENTRIES)
    }

    /// Length of [`Metadata::chunks`]: the pool of chunk bitmaps.
    pub const fn chunk_entries(&self) -> usize {
        self.l2_blocks * PALLOC_CHUNKS_L2_ENTRIES
    }

    /// Length of [`Metadata::handed_out`]: eight words of handed-out bits per entry of
    /// the pool, so they are as sparse as the chunk bitmaps.
    pub const fn handed_out_words(&self) -> usize {
        self.chunk_entries() * WORDS_PER_CHUNK
    }

    /// Bytes of all four arrays.
    pub fn total_bytes(&self) -> usize {
        self.summary_entries() * size_of::<PallocSum>()
            + self.chunk_map_entries() * size_of::<AtomicU32>()
            + self.chunk_entries() * size_of::<PallocData>()
            + self.handed_out_words() * size_of::<AtomicU64>()
    }
}

/// The blocks of the chunk map that a non-empty range touches, inclusive.
fn l2_blocks_of(r: &AddrRange) -> (usize, usize) {
    (ChunkIdx::of(r.base).l1(), ChunkIdx::of(r.limit - 1).l1())
}

/// The number of distinct blocks of the chunk map that the non-empty regions touch.
fn blocks_touched(regions: &[AddrRange]) -> usize {
    const ON_STACK: usize = 128;
    let intervals = regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.size() != 0)
        .map(|(i, r)| (l2_blocks_of(r), i));
    if regions.len() <= ON_STACK {
        let mut buf = [((0, 0), 0); ON_STACK];
        let mut n = 0;
        for iv in intervals {
            buf[n] = iv;
            n += 1;
        }
        buf[..n].sort_unstable();
        return merged_len(buf[..n].iter().map(|&(iv, _)| iv));
    }
    // Selection: the next interval in (interval, index) order after the last one.
    let mut last: Option<((usize, usize), usize)> = None;
    merged_len(core::iter::from_fn(|| {
        let next = intervals
            .clone()
            .filter(|k| last.is_none_or(|l| *k > l))
            .min()?;
        last = Some(next);
        Some(next.0)
    }))
}

/// The number of integers covered by inclusive intervals sorted by start.
fn merged_len(sorted: impl Iterator<Item = (usize, usize)>) -> usize {
    let mut total = 0;
    // The first block not counted yet (`None`: none counted).
    let mut next: Option<usize> = None;
    for (b0, b1) in sorted {
        let from = next.map_or(b0, |n| b0.max(n));
        if b1 >= from {
            total += b1 - from + 1;
            next = Some(b1 + 1);
        }
    }
    total
}

/// The memory an allocator keeps its state in, provided by the caller (the kernel from
/// identity-mapped frames, tests from the heap). Go gets the same memory through
/// `sysReserve`/`sysMap`; here the allocator never asks for memory after it is built.
///
/// The contents need not be initialised: [`PageAlloc::new`] overwrites them.
pub struct Metadata<'m> {
    /// Every summary level, root first, each [`MetadataLayout::level_len`] long.
    pub summaries: &'m mut [PallocSum],
    /// For each block of chunks, the index of its bitmaps in `chunks` (Go's L1 array).
    /// Atomic so that [`HandedOut`] can find a chunk's bits without the allocator.
    pub chunk_map: &'m mut [AtomicU32],
    /// The pool that grown chunks take their bitmaps from (Go's L2 arrays).
    pub chunks: &'m mut [PallocData],
    /// The handed-out bits, [`WORDS_PER_CHUNK`](MetadataLayout::handed_out_words) words
    /// per entry of `chunks` (not in Go).
    pub handed_out: &'m mut [AtomicU64],
}

/// A physical page allocator over one span of physical memory. Go: `pageAlloc`.
///
/// Not thread-safe by design: every method takes `&mut self`, and the kernel puts the
/// allocator behind its lock (Go: "`mheapLock` must be held").
pub struct PageAlloc<'m> {
    /// The radix tree, root first. Invariant: every leaf equals the summary of its
    /// chunk's bitmap (0 where no chunk was grown) and every inner entry merges its 8
    /// children.
    summary: [&'m mut [PallocSum]; SUMMARY_LEVELS],
    /// Block of chunks -> index of its bitmaps in `chunks`, or [`NO_BLOCK`]. Written only
    /// by `grow` (with `&mut self`), read lock-free by [`HandedOut`].
    chunk_map: &'m [AtomicU32],
    /// The handed-out bits, shared with every [`HandedOut`] handle.
    handed_out: &'m [AtomicU64],
    /// Bitmaps of grown chunks. Pages of a grown chunk that no grow covered are marked
    /// allocated, so they are never handed out.
    chunks: &'m mut [PallocData],
    /// Blocks of `chunks` in use.
    l2_used: usize,
    layout: MetadataLayout,
    /// No page below this address is free. Go: `searchAddr`.
    search_addr: u64,
    /// Grown chunks lie in `[start, end)`; `start > end` until the first grow.
    start: usize,
    end: usize,
    /// The page-granular ranges that were grown. Go: `inUse` (chunk-granular there).
    in_use: AddrRanges,
    /// Free pages, kept so that stats are O(1).
    free_pages: usize,
}

/// The result of an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Allocation {
    /// Physical address of the first page.
    pub base: u64,
    /// Pages allocated.
    pub npages: usize,
    /// How many of them were known to be zero (their zeroed bit was set).
    /// Go returns this as bytes ("scav"); here it is pages.
    pub zeroed_pages: usize,
}

impl Allocation {
    /// Whether every page is known to be zero.
    pub const fn is_zeroed(&self) -> bool {
        self.zeroed_pages == self.npages
    }
}

/// Constraints on where an allocation may be placed (not in Go).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Constraints {
    /// Alignment of the first page, in pages; a power of two.
    pub align_pages: usize,
    /// The allocation starts at or above this address.
    pub min_addr: u64,
    /// The allocation ends at or below this address (exclusive limit).
    pub max_addr: u64,
}

impl Constraints {
    /// No constraint: Go's plain `alloc`.
    pub const NONE: Constraints = Constraints {
        align_pages: 1,
        min_addr: 0,
        max_addr: 1 << PHYS_ADDR_BITS,
    };

    /// Aligned to `align_pages` pages (512 for a 2 MiB frame).
    pub const fn aligned(align_pages: usize) -> Constraints {
        Constraints {
            align_pages,
            ..Constraints::NONE
        }
    }

    /// Entirely below `limit` (e.g. 16 MiB for ISA DMA, 4 GiB for 32-bit devices).
    pub const fn below(limit: u64) -> Constraints {
        Constraints {
            max_addr: limit,
            ..Constraints::NONE
        }
    }

    /// Entirely inside `[min_addr, max_addr)`.
    pub const fn within(min_addr: u64, max_addr: u64) -> Constraints {
        Constraints {
            min_addr,
            max_addr,
            ..Constraints::NONE
        }
    }

    /// The same window with an alignment.
    pub const fn with_align(self, align_pages: usize) -> Constraints {
        Constraints {
            align_pages,
            ..self
        }
    }
}

/// A request the allocator could not satisfy or refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllocError {
    /// A request for zero pages.
    ZeroPages,
    /// More pages than the address space holds.
    TooManyPages {
        /// Pages requested.
        npages: usize,
    },
    /// An alignment that is not a power of two or is larger than the address space.
    BadAlignment {
        /// The alignment requested, in pages.
        align_pages: usize,
    },
    /// No free run satisfies the request: out of memory (for this request).
    OutOfMemory {
        /// Pages requested.
        npages: usize,
        /// The request's constraints.
        constraints: Constraints,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::ZeroPages => write!(f, "allocation of zero pages"),
            AllocError::TooManyPages { npages } => {
                write!(
                    f,
                    "allocation of {npages} pages exceeds the address space ({MAX_NPAGES} pages)"
                )
            }
            AllocError::BadAlignment { align_pages } => {
                write!(
                    f,
                    "alignment of {align_pages} pages is not a power of two up to {MAX_NPAGES}"
                )
            }
            AllocError::OutOfMemory {
                npages,
                constraints: c,
            } => {
                write!(f, "out of memory: no free run of {npages} pages")?;
                if c.align_pages > 1 {
                    write!(f, " aligned to {} pages", c.align_pages)?;
                }
                if c.min_addr > 0 || c.max_addr < 1 << PHYS_ADDR_BITS {
                    write!(f, " within [{:#x}, {:#x})", c.min_addr, c.max_addr)?;
                }
                Ok(())
            }
        }
    }
}

impl core::error::Error for AllocError {}

/// A free or reservation that breaks the caller's contract. Nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RangeOpError {
    /// Zero pages.
    ZeroPages {
        /// The range's base address.
        base: u64,
    },
    /// The base address is not page aligned.
    Unaligned {
        /// The range's base address.
        base: u64,
    },
    /// Part of the range was never grown (or lies past the end of the address space).
    NotGrown {
        /// The range's base address.
        base: u64,
        /// The range's length.
        npages: usize,
        /// The first page of the range that is not grown memory.
        page: u64,
    },
    /// A free of pages that are not allocated (a double free).
    NotAllocated {
        /// The range's base address.
        base: u64,
        /// The range's length.
        npages: usize,
        /// The first page of the range that is free.
        page: u64,
    },
    /// A reservation of pages that are not all free.
    NotFree {
        /// The range's base address.
        base: u64,
        /// The range's length.
        npages: usize,
        /// The first page of the range that is allocated.
        page: u64,
    },
    /// A free of pages one of which is allocated but held by a page cache or a free
    /// batch, not handed out (a double free, the first free having gone to a batch).
    Held {
        /// The range's base address.
        base: u64,
        /// The range's length.
        npages: usize,
        /// The first page of the range that is held.
        page: u64,
    },
    /// A flush of a page cache or free batch one of whose pages is handed out to a
    /// caller, not held (a forged or stale cache).
    NotHeld {
        /// The cache's block or the batch's first page.
        base: u64,
        /// The pages the cache or batch covers.
        npages: usize,
        /// The first such page.
        page: u64,
    },
    /// A lock-free free ([`FreeBatch::free`](crate::FreeBatch::free)) of a page that is
    /// not handed out: free, held by a cache or batch, or never grown. The lock-free path
    /// cannot tell which; [`PageAlloc::check_free`] can, under the lock.
    NotHandedOut {
        /// The page.
        page: u64,
    },
    /// A page cache or free batch used with an allocator other than the one its pages
    /// came from.
    ForeignAllocator {
        /// A page of the cache or batch (or the page being freed into it).
        page: u64,
        /// [`HandedOut::id`] of the allocator the cache or batch belongs to (0 for a
        /// cache the test support built without an allocator).
        owner: usize,
        /// [`HandedOut::id`] of the allocator it was used with.
        other: usize,
    },
    /// A free into a full [`FreeBatch`](crate::FreeBatch): return half of it first, under
    /// the lock, with [`FreeBatch::return_half`](crate::FreeBatch::return_half).
    BatchFull {
        /// The page that was not taken.
        page: u64,
    },
}

impl fmt::Display for RangeOpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RangeOpError::ZeroPages { base } => write!(f, "range of zero pages at {base:#x}"),
            RangeOpError::Unaligned { base } => {
                write!(
                    f,
                    "address {base:#x} is not aligned to a {PAGE_SIZE}-byte page"
                )
            }
            RangeOpError::NotGrown { base, npages, page } => write!(
                f,
                "range [{base:#x}, +{npages} pages) is not managed memory: page {page:#x} was never grown"
            ),
            RangeOpError::NotAllocated { base, npages, page } => write!(
                f,
                "free of [{base:#x}, +{npages} pages): page {page:#x} is not allocated (double free?)"
            ),
            RangeOpError::NotFree { base, npages, page } => write!(
                f,
                "reservation of [{base:#x}, +{npages} pages): page {page:#x} is already allocated"
            ),
            RangeOpError::Held { base, npages, page } => write!(
                f,
                "free of [{base:#x}, +{npages} pages): page {page:#x} is held by a page cache or free batch (double free?)"
            ),
            RangeOpError::NotHeld { base, npages, page } => write!(
                f,
                "flush of [{base:#x}, +{npages} pages): page {page:#x} is handed out to a caller, not held by this cache or batch (forged or stale copy?)"
            ),
            RangeOpError::NotHandedOut { page } => write!(
                f,
                "free of page {page:#x}: it is not handed out (free, held by a page cache or free batch, or never grown; double free?)"
            ),
            RangeOpError::ForeignAllocator { page, owner, other } => write!(
                f,
                "page {page:#x}: the cache or batch belongs to allocator {owner:#x}, not to allocator {other:#x}"
            ),
            RangeOpError::BatchFull { page } => write!(
                f,
                "free of page {page:#x}: the free batch is full; return half of it first"
            ),
        }
    }
}

impl core::error::Error for RangeOpError {}

/// A grow the allocator refused. Nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GrowError {
    /// An empty region.
    Empty {
        /// The region's base.
        base: u64,
    },
    /// Base or size not a multiple of the page size.
    Unaligned {
        /// The region's base.
        base: u64,
        /// The region's size in bytes.
        size_bytes: u64,
    },
    /// The region ends above the span the metadata was sized for.
    BeyondSpan {
        /// The region.
        region: AddrRange,
        /// One past the highest address the metadata covers.
        span_limit: u64,
    },
    /// The region overlaps memory grown before.
    Overlap {
        /// The region.
        region: AddrRange,
        /// The grown range it overlaps.
        existing: AddrRange,
    },
    /// The pool of chunk bitmaps is too small for the new chunks.
    OutOfMetadata {
        /// The region.
        region: AddrRange,
        /// Blocks of chunk bitmaps the region needs.
        needed_blocks: usize,
        /// Blocks left in the pool.
        free_blocks: usize,
    },
    /// The in-use range list is full.
    TooManyRanges {
        /// The region.
        region: AddrRange,
        /// The list's capacity.
        capacity: usize,
    },
}

impl fmt::Display for GrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GrowError::Empty { base } => write!(f, "grow of an empty region at {base:#x}"),
            GrowError::Unaligned { base, size_bytes } => write!(
                f,
                "grow of {size_bytes:#x} bytes at {base:#x}: not a whole number of {PAGE_SIZE}-byte pages"
            ),
            GrowError::BeyondSpan { region, span_limit } => write!(
                f,
                "grow of {region} ends above the metadata's span limit {span_limit:#x}"
            ),
            GrowError::Overlap { region, existing } => {
                write!(f, "grow of {region} overlaps grown memory {existing}")
            }
            GrowError::OutOfMetadata {
                region,
                needed_blocks,
                free_blocks,
            } => write!(
                f,
                "grow of {region} needs {needed_blocks} more blocks of chunk bitmaps, {free_blocks} left"
            ),
            GrowError::TooManyRanges { region, capacity } => write!(
                f,
                "grow of {region}: the list of grown ranges is full ({capacity} ranges)"
            ),
        }
    }
}

impl core::error::Error for GrowError {}

/// Metadata that cannot back an allocator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LayoutError {
    /// The span ends above the physical address space.
    BeyondAddressSpace {
        /// The requested span limit.
        limit: u64,
    },
    /// One of the arrays in [`Metadata`] is shorter than the layout needs.
    TooSmall {
        /// Which array.
        what: &'static str,
        /// Entries needed.
        needed: usize,
        /// Entries provided.
        provided: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::BeyondAddressSpace { limit } => write!(
                f,
                "span limit {limit:#x} is above the {PHYS_ADDR_BITS}-bit physical address space"
            ),
            LayoutError::TooSmall {
                what,
                needed,
                provided,
            } => {
                write!(
                    f,
                    "metadata array `{what}` has {provided} entries, {needed} needed"
                )
            }
        }
    }
}

impl core::error::Error for LayoutError {}

/// The window that must hold the first free page, narrowed as `find` descends.
/// Go: the `firstFree` closure state in `(*pageAlloc).find`. Bounds are inclusive.
struct FirstFree {
    base: u64,
    bound: u64,
}

impl FirstFree {
    /// Narrows the window to `[addr, addr + size)` if that lies inside it.
    /// Go: `foundFree`.
    fn found_free(&mut self, addr: u64, size: u64) {
        let last = addr + size - 1;
        if self.base <= addr && last <= self.bound {
            self.base = addr;
            self.bound = last;
        } else if !(last < self.base || addr > self.bound) {
            panic!(
                "pagealloc: range partially overlaps: [{addr:#x}, {last:#x}] vs [{:#x}, {:#x}]",
                self.base, self.bound
            );
        }
    }
}

impl<'m> PageAlloc<'m> {
    /// An allocator with no memory yet, keeping its state in `metadata`, which must be
    /// at least as large as `layout` says. Go: `(*pageAlloc).init`.
    pub fn new(layout: MetadataLayout, metadata: Metadata<'m>) -> Result<Self, LayoutError> {
        let Metadata {
            summaries,
            chunk_map,
            chunks,
            handed_out,
        } = metadata;
        check_len("summaries", layout.summary_entries(), summaries.len())?;
        check_len("chunk_map", layout.chunk_map_entries(), chunk_map.len())?;
        check_len("chunks", layout.chunk_entries(), chunks.len())?;
        check_len("handed_out", layout.handed_out_words(), handed_out.len())?;
        let chunk_map: &'m [AtomicU32] = &chunk_map[..layout.chunk_map_entries()];
        for e in chunk_map {
            e.store(NO_BLOCK, Ordering::Relaxed);
        }
        let chunks = &mut chunks[..layout.chunk_entries()];
        // `grow` clears a block's bits before it publishes the block.
        let handed_out: &'m [AtomicU64] = &handed_out[..layout.handed_out_words()];

        let mut rest = &mut summaries[..layout.summary_entries()];
        let mut summary: [&'m mut [PallocSum]; SUMMARY_LEVELS] = Default::default();
        for (l, level) in summary.iter_mut().enumerate() {
            let (this, tail) = core::mem::take(&mut rest).split_at_mut(layout.level_len[l]);
            this.fill(PallocSum::EMPTY);
            *level = this;
            rest = tail;
        }
        Ok(PageAlloc {
            summary,
            chunk_map,
            handed_out,
            chunks,
            l2_used: 0,
            layout,
            search_addr: MAX_SEARCH_ADDR,
            start: usize::MAX,
            end: 0,
            in_use: AddrRanges::new(),
            free_pages: 0,
        })
    }

    /// The layout this allocator was built with.
    pub fn layout(&self) -> &MetadataLayout {
        &self.layout
    }

    /// The bitmaps of chunk `ci`, if it was grown. Go: `tryChunkOf`.
    pub fn chunk_data(&self, ci: ChunkIdx) -> Option<&PallocData> {
        let slot = self.chunk_map.get(ci.l1())?.load(Ordering::Relaxed);
        if slot == NO_BLOCK {
            return None;
        }
        Some(&self.chunks[slot as usize * PALLOC_CHUNKS_L2_ENTRIES + ci.l2()])
    }

    /// The bitmaps of a chunk that must have been grown. Go: `chunkOf`.
    fn chunk_of(&self, ci: ChunkIdx) -> &PallocData {
        match self.chunk_data(ci) {
            Some(c) => c,
            None => panic!("pagealloc: no bitmap for {ci}, which the summaries say is grown"),
        }
    }

    pub(crate) fn chunk_of_mut(&mut self, ci: ChunkIdx) -> &mut PallocData {
        let slot = self.chunk_map[ci.l1()].load(Ordering::Relaxed);
        assert!(slot != NO_BLOCK, "pagealloc: no bitmap for {ci}");
        &mut self.chunks[slot as usize * PALLOC_CHUNKS_L2_ENTRIES + ci.l2()]
    }

    /// Summaries of level `l` (0 is the root, 4 the chunks); `None` for a level that does
    /// not exist.
    pub fn summary_level(&self, l: usize) -> Option<&[PallocSum]> {
        self.summary.get(l).map(|s| &**s)
    }

    /// The leaf level.
    pub(crate) fn leaf_summaries(&self) -> &[PallocSum] {
        self.summary[LEAF]
    }

    /// A handle on this allocator's handed-out bits, for use without its lock.
    pub fn handed_out(&self) -> HandedOut<'m> {
        HandedOut::new(self.chunk_map, self.handed_out)
    }

    /// No page below this address is free. Go: `searchAddr`.
    pub fn search_addr(&self) -> u64 {
        self.search_addr
    }

    /// The grown chunks lie in `[start, end)`; `None` before the first grow.
    /// Go: the `start` and `end` fields.
    pub fn bounds(&self) -> Option<(ChunkIdx, ChunkIdx)> {
        (self.start < self.end).then_some((ChunkIdx(self.start), ChunkIdx(self.end)))
    }

    /// The grown memory, page-granular, sorted and coalesced. Go: `inUse`.
    pub fn in_use(&self) -> &[AddrRange] {
        self.in_use.ranges()
    }

    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Pages that were grown, free or not.
    pub fn total_pages(&self) -> usize {
        (self.in_use.total_bytes() >> PAGE_SHIFT) as usize
    }

    /// Bytes of metadata this allocator uses.
    pub fn metadata_bytes(&self) -> usize {
        self.layout.total_bytes()
    }

    /// Makes `[base, base + size_bytes)` available, page-granular. Pages of the chunks it
    /// touches that no grow covered stay allocated. Go: `(*pageAlloc).grow`.
    ///
    /// # Deviation from Go
    /// Go grows whole chunks and takes the summary memory it needs from the OS; here a
    /// region may start and end anywhere on a page boundary (as a boot memory map's
    /// regions do), the metadata was provided up front, `contents` says whether the
    /// memory is known to be zero (Go assumes it is), and bad regions are errors.
    pub fn grow(
        &mut self,
        base: u64,
        size_bytes: u64,
        contents: Contents,
    ) -> Result<(), GrowError> {
        if size_bytes == 0 {
            return Err(GrowError::Empty { base });
        }
        if !base.is_multiple_of(PAGE_SIZE) || !size_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(GrowError::Unaligned { base, size_bytes });
        }
        let span_limit = self.layout.span_limit();
        let limit = base.saturating_add(size_bytes);
        let region = AddrRange::new(base, limit);
        if limit > span_limit {
            return Err(GrowError::BeyondSpan { region, span_limit });
        }
        let i = self.in_use.find_succ(base);
        let ranges = self.in_use.ranges();
        let neighbours = [i.checked_sub(1), Some(i)];
        for existing in neighbours
            .into_iter()
            .flatten()
            .filter_map(|k| ranges.get(k))
        {
            if existing.base < limit && base < existing.limit {
                return Err(GrowError::Overlap {
                    region,
                    existing: *existing,
                });
            }
        }
        let (b0, b1) = l2_blocks_of(&region);
        let needed_blocks = (b0..=b1)
            .filter(|&b| self.chunk_map[b].load(Ordering::Relaxed) == NO_BLOCK)
            .count();
        let free_blocks = self.layout.l2_blocks - self.l2_used;
        if needed_blocks > free_blocks {
            return Err(GrowError::OutOfMetadata {
                region,
                needed_blocks,
                free_blocks,
            });
        }
        match self.in_use.add(region) {
            Ok(()) => {}
            Err(RangeError::Full { capacity }) => {
                return Err(GrowError::TooManyRanges { region, capacity });
            }
            Err(e) => panic!("pagealloc: grown ranges rejected a checked region: {e}"),
        }

        // Chunks seen for the first time start out allocated, so pages that no grow
        // covers are never handed out.
        for b in b0..=b1 {
            if self.chunk_map[b].load(Ordering::Relaxed) == NO_BLOCK {
                let first = self.l2_used * PALLOC_CHUNKS_L2_ENTRIES;
                for c in &mut self.chunks[first..first + PALLOC_CHUNKS_L2_ENTRIES] {
                    *c = PallocData::default();
                    c.alloc_all();
                }
                let words =
                    first * WORDS_PER_CHUNK..(first + PALLOC_CHUNKS_L2_ENTRIES) * WORDS_PER_CHUNK;
                for w in &self.handed_out[words] {
                    w.store(0, Ordering::Relaxed);
                }
                // Release: a lock-free reader that finds the block sees its bits cleared.
                self.chunk_map[b].store(self.l2_used as u32, Ordering::Release);
                self.l2_used += 1;
            }
        }
        let npages = (size_bytes >> PAGE_SHIFT) as usize;
        self.for_each_chunk_piece(base, npages, |chunk, i, n| {
            chunk.free(i, n);
            if contents == Contents::Zeroed {
                chunk.scavenged.set_range(i, n);
            }
        });

        self.start = self.start.min(ChunkIdx::of(base).0);
        self.end = self.end.max(ChunkIdx::of(limit - 1).0 + 1);
        // A grow is like a free: the new memory may lie below the search address.
        if base < self.search_addr {
            self.search_addr = base;
        }
        self.free_pages += npages;
        self.update(base, npages, true, false);
        Ok(())
    }

    /// Calls `f(chunk, first_page, npages)` for each chunk's part of
    /// `[base, base + npages pages)`, in address order.
    fn for_each_chunk_piece(
        &mut self,
        base: u64,
        npages: usize,
        mut f: impl FnMut(&mut PallocData, usize, usize),
    ) {
        let limit = base + ((npages as u64) << PAGE_SHIFT) - 1;
        let (sc, ec) = (ChunkIdx::of(base).0, ChunkIdx::of(limit).0);
        let (si, ei) = (chunk_page_index(base), chunk_page_index(limit));
        for c in sc..=ec {
            let i = if c == sc { si } else { 0 };
            let j = if c == ec { ei } else { PALLOC_CHUNK_PAGES - 1 };
            f(self.chunk_of_mut(ChunkIdx(c)), i, j + 1 - i);
        }
    }

    /// Recomputes the summaries after the bitmaps of `[base, base + npages pages)`
    /// changed. `contig` says the change was one contiguous alloc (`alloc`) or free of
    /// the whole range. Go: `(*pageAlloc).update`.
    pub(crate) fn update(&mut self, base: u64, npages: usize, contig: bool, alloc: bool) {
        // Inclusive bounds, as in Go.
        let limit = base + ((npages as u64) << PAGE_SHIFT) - 1;
        let (sc, ec) = (ChunkIdx::of(base), ChunkIdx::of(limit));
        if sc == ec {
            // Fast path: one chunk; if its summary did not change, nothing above can.
            let y = self.chunk_of(sc).alloc.summarize();
            if self.summary[LEAF][sc.0] == y {
                return;
            }
            self.summary[LEAF][sc.0] = y;
            // One entry per level changes: its parent's index is its own over 8.
            let mut i = sc.0;
            for l in (0..LEAF).rev() {
                let first = i & !(SUMMARY_BLOCK_ENTRIES - 1);
                let children: &[PallocSum; SUMMARY_BLOCK_ENTRIES] = self.summary[l + 1]
                    [first..first + SUMMARY_BLOCK_ENTRIES]
                    .try_into()
                    .expect("a whole block");
                let sum = merge_summaries(children, LEVEL_LOG_PAGES[l + 1]);
                i >>= SUMMARY_LEVEL_BITS;
                if self.summary[l][i] == sum {
                    return;
                }
                self.summary[l][i] = sum;
            }
            return;
        } else if contig {
            // The chunks strictly inside the range went all allocated or all free.
            self.summary[LEAF][sc.0] = self.chunk_of(sc).alloc.summarize();
            let whole = if alloc {
                PallocSum::EMPTY
            } else {
                FREE_CHUNK_SUM
            };
            self.summary[LEAF][sc.0 + 1..ec.0].fill(whole);
            self.summary[LEAF][ec.0] = self.chunk_of(ec).alloc.summarize();
        } else {
            for c in sc.0..=ec.0 {
                self.summary[LEAF][c] = self.chunk_of(ChunkIdx(c)).alloc.summarize();
            }
        }

        // Climb while something changed.
        let mut changed = true;
        let mut l = LEAF;
        while l > 0 && changed {
            l -= 1;
            changed = false;
            let log_entries = LEVEL_BITS[l + 1];
            let log_max_pages = LEVEL_LOG_PAGES[l + 1];
            let (lo, hi) = addrs_to_summary_range(l, base, limit + 1);
            for i in lo..hi {
                let children = &self.summary[l + 1][i << log_entries..(i + 1) << log_entries];
                let sum = merge_summaries(children, log_max_pages);
                if self.summary[l][i] != sum {
                    self.summary[l][i] = sum;
                    changed = true;
                }
            }
        }
    }

    /// Marks `[base, base + npages pages)` allocated without checks and returns how many
    /// of its pages were known to be zero. Go: `(*pageAlloc).allocRange`.
    fn alloc_range_unchecked(&mut self, base: u64, npages: usize) -> usize {
        if npages == 1 {
            let (ci, i) = (ChunkIdx::of(base), chunk_page_index(base));
            let old = self.summary[LEAF][ci.0];
            let chunk = self.chunk_of_mut(ci);
            let zeroed = usize::from(chunk.scavenged.get(i));
            chunk.alloc_range(i, 1);
            let keeps = one_page_keeps_summary(chunk.alloc.words(), i, old, false);
            self.free_pages -= 1;
            if !keeps {
                self.update(base, 1, true, true);
            }
            return zeroed;
        }
        let mut zeroed = 0;
        self.for_each_chunk_piece(base, npages, |chunk, i, n| {
            zeroed += chunk.scavenged.popcnt_range(i, n);
            if n == PALLOC_CHUNK_PAGES {
                chunk.alloc_all();
            } else {
                chunk.alloc_range(i, n);
            }
        });
        self.update(base, npages, true, true);
        self.free_pages -= npages;
        zeroed
    }

    /// Reserves `[base, base + npages pages)`, which must be grown and free, and returns
    /// how many of its pages were known to be zero. For memory the kernel must keep
    /// (its own metadata, firmware tables). Go: `(*pageAlloc).allocRange`, which
    /// trusts its caller; this one checks.
    ///
    /// The pages are handed out to the caller, who may free them later.
    pub fn alloc_range(&mut self, base: u64, npages: usize) -> Result<usize, RangeOpError> {
        self.check_range(base, npages)?;
        if let Some(page) = self.first_page_with(base, npages, true) {
            return Err(RangeOpError::NotFree { base, npages, page });
        }
        let zeroed = self.alloc_range_unchecked(base, npages);
        self.handed_out().set(base, npages);
        Ok(zeroed)
    }

    /// Calls `f(base, npages)` for each maximal run of `[base, base + npages pages)`
    /// whose zeroed bits are clear, in address order.
    fn visit_dirty(&self, base: u64, npages: usize, f: &mut dyn FnMut(u64, usize)) {
        let mut run: Option<(u64, usize)> = None;
        for p in 0..npages {
            let addr = base + ((p as u64) << PAGE_SHIFT);
            let zeroed = self
                .chunk_of(ChunkIdx::of(addr))
                .scavenged
                .get(chunk_page_index(addr));
            run = match (run, zeroed) {
                (Some((b, n)), false) => Some((b, n + 1)),
                (None, false) => Some((addr, 1)),
                (Some((b, n)), true) => {
                    f(b, n);
                    None
                }
                (None, true) => None,
            };
        }
        if let Some((b, n)) = run {
            f(b, n);
        }
    }

    /// Checks that a range is non-empty, page aligned and inside one grown range.
    pub(crate) fn check_range(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        if npages == 0 {
            return Err(RangeOpError::ZeroPages { base });
        }
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(RangeOpError::Unaligned { base });
        }
        let limit = (npages as u64)
            .checked_mul(PAGE_SIZE)
            .and_then(|b| base.checked_add(b))
            .unwrap_or(u64::MAX);
        let i = self.in_use.find_succ(base);
        let ranges = self.in_use.ranges();
        // Grown ranges are coalesced, so a grown range lies inside one of them.
        match i.checked_sub(1).map(|k| ranges[k]) {
            Some(r) if r.contains(base) => {
                if limit <= r.limit {
                    Ok(())
                } else {
                    Err(RangeOpError::NotGrown {
                        base,
                        npages,
                        page: r.limit,
                    })
                }
            }
            _ => Err(RangeOpError::NotGrown {
                base,
                npages,
                page: base,
            }),
        }
    }

    /// The first page of a grown range whose alloc bit equals `allocated`.
    fn first_page_with(&self, base: u64, npages: usize, allocated: bool) -> Option<u64> {
        let limit = base + ((npages as u64) << PAGE_SHIFT) - 1;
        let (sc, ec) = (ChunkIdx::of(base).0, ChunkIdx::of(limit).0);
        for c in sc..=ec {
            let i = if c == sc { chunk_page_index(base) } else { 0 };
            let j = if c == ec {
                chunk_page_index(limit)
            } else {
                PALLOC_CHUNK_PAGES - 1
            };
            let n = j + 1 - i;
            let bits = &self.chunk_of(ChunkIdx(c)).alloc;
            let set = bits.popcnt_range(i, n);
            if (allocated && set > 0) || (!allocated && set < n) {
                let p = (i..=j).find(|&p| bits.get(p) == allocated).unwrap_or(i);
                return Some(ChunkIdx(c).base() + ((p as u64) << PAGE_SHIFT));
            }
        }
        None
    }

    /// Allocates `npages` contiguous pages at the lowest address where they fit.
    /// Go: `(*pageAlloc).alloc`.
    ///
    /// # Deviation from Go
    /// Failure is an error value instead of base address 0, which is a valid page here.
    pub fn alloc(&mut self, npages: usize) -> Result<Allocation, AllocError> {
        self.alloc_go(npages, None)
    }

    /// [`PageAlloc::alloc`], telling `dirty` which runs of the result were not known to
    /// be zero.
    fn alloc_go(
        &mut self,
        npages: usize,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Result<Allocation, AllocError> {
        check_npages(npages)?;
        let oom = AllocError::OutOfMemory {
            npages,
            constraints: Constraints::NONE,
        };
        // A search address above every grown chunk means nothing is free.
        if ChunkIdx::of(self.search_addr).0 >= self.end {
            return Err(oom);
        }
        let mut found = None;
        // Fast path: the run may fit in the chunk the search address points into.
        if PALLOC_CHUNK_PAGES - chunk_page_index(self.search_addr) >= npages {
            let ci = ChunkIdx::of(self.search_addr);
            if self.summary[LEAF][ci.0].max() >= npages {
                let Some((j, search_idx)) = self
                    .chunk_of(ci)
                    .alloc
                    .find(npages, chunk_page_index(self.search_addr))
                else {
                    panic!(
                        "pagealloc: bad summary data: {ci} summary {:?} but no run of {npages} pages from page {}",
                        self.summary[LEAF][ci.0],
                        chunk_page_index(self.search_addr)
                    );
                };
                found = Some((
                    ci.base() + ((j as u64) << PAGE_SHIFT),
                    ci.base() + ((search_idx as u64) << PAGE_SHIFT),
                ));
            }
        }
        let (addr, candidate) = match found {
            Some(f) => f,
            None => match self.find(npages) {
                Some(f) => f,
                None => {
                    // Not even one page is free: remember that until something is freed.
                    if npages == 1 {
                        self.search_addr = MAX_SEARCH_ADDR;
                    }
                    return Err(oom);
                }
            },
        };
        if let Some(f) = dirty {
            self.visit_dirty(addr, npages, f);
        }
        let zeroed_pages = self.alloc_range_unchecked(addr, npages);
        self.handed_out().set(addr, npages);
        // Only an allocation raises the search address.
        if self.search_addr < candidate {
            self.search_addr = candidate;
        }
        Ok(Allocation {
            base: addr,
            npages,
            zeroed_pages,
        })
    }

    /// The lowest address of a free run of `npages` and a new search-address candidate.
    /// Relies on nothing below `search_addr` being free. Go: `(*pageAlloc).find`.
    ///
    /// # Deviation from Go
    /// The root level is scanned only as far as the span reaches.
    pub(crate) fn find(&self, npages: usize) -> Option<(u64, u64)> {
        let mut i = 0;
        let mut first_free = FirstFree {
            base: 0,
            bound: MAX_SEARCH_ADDR,
        };
        let mut last_sum = (usize::MAX, PallocSum::EMPTY);
        'next_level: for l in 0..SUMMARY_LEVELS {
            let log_max_pages = LEVEL_LOG_PAGES[l];
            i <<= LEVEL_BITS[l];
            let entries: &[PallocSum] = if l == 0 {
                self.summary[0]
            } else {
                &self.summary[l][i..i + SUMMARY_BLOCK_ENTRIES]
            };
            let block_mask = if l == 0 {
                usize::MAX
            } else {
                SUMMARY_BLOCK_ENTRIES - 1
            };
            // Skip the entries below the search address when it falls in this block.
            let search_idx = level_index(l, self.search_addr);
            let j0 = if search_idx & !block_mask == i {
                search_idx & block_mask
            } else {
                0
            };

            // The current candidate run, in pages from the block's first page.
            let (mut base, mut size) = (0usize, 0usize);
            let mut j = j0;
            while j < entries.len() {
                let sum = entries[j];
                if sum == PallocSum::EMPTY {
                    size = 0;
                    j += 1;
                    continue;
                }
                first_free.found_free(level_index_to_addr(l, i + j), PAGE_SIZE << log_max_pages);
                let s = sum.start();
                if size + s >= npages {
                    // A run across entry boundaries is complete.
                    if size == 0 {
                        base = j << log_max_pages;
                    }
                    size += s;
                    break;
                }
                if sum.max() >= npages {
                    // The entry holds a long enough run: look inside it.
                    i += j;
                    last_sum = (i, sum);
                    continue 'next_level;
                }
                if size == 0 || s < 1 << log_max_pages {
                    // The run is broken: a new one may begin at this entry's end.
                    size = sum.end();
                    base = ((j + 1) << log_max_pages) - size;
                } else {
                    // The entry is entirely free and extends the run.
                    size += 1 << log_max_pages;
                }
                j += 1;
            }
            if size >= npages {
                let addr = level_index_to_addr(l, i) + ((base as u64) << PAGE_SHIFT);
                return Some((addr, self.find_mapped_addr(first_free.base)));
            }
            if l == 0 {
                return None;
            }
            panic!(
                "pagealloc: bad summary data: summary[{}][{}] = {:?} promised {npages} pages, \
                 but its children summary[{l}][{i}..] are {entries:?} (search_addr {:#x}, j0 {j0})",
                l - 1,
                last_sum.0,
                last_sum.1,
                self.search_addr
            );
        }

        // Every level descended: `i` is a chunk whose summary promised a long enough run.
        let ci = ChunkIdx(i);
        let Some((j, search_idx)) = self.chunk_of(ci).alloc.find(npages, 0) else {
            panic!(
                "pagealloc: bad summary data: {ci} summary {:?} but no run of {npages} pages",
                self.summary[LEAF][i]
            );
        };
        let addr = ci.base() + ((j as u64) << PAGE_SHIFT);
        let search = ci.base() + ((search_idx as u64) << PAGE_SHIFT);
        first_free.found_free(search, ChunkIdx(i + 1).base() - search);
        Some((addr, self.find_mapped_addr(first_free.base)))
    }

    /// The lowest grown address at or above `addr`, or [`MAX_SEARCH_ADDR`].
    /// Go: `(*pageAlloc).findMappedAddr`.
    fn find_mapped_addr(&self, addr: u64) -> u64 {
        self.in_use
            .find_addr_greater_equal(addr)
            .unwrap_or(MAX_SEARCH_ADDR)
    }

    /// Frees `[base, base + npages pages)`, which must be allocated grown memory.
    /// Go: `(*pageAlloc).free`.
    ///
    /// # Deviation from Go
    /// Go trusts the caller; here the free is accepted only if it takes back every page
    /// of the range from its caller (clears their handed-out bits atomically), so of two
    /// racing frees of a page exactly one wins. A range that is not grown, or whose first
    /// page that is not handed out is free ([`RangeOpError::NotAllocated`]) or held by a
    /// page cache or free batch ([`RangeOpError::Held`]), is refused with an error naming
    /// that page, and nothing changes.
    pub fn free(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.check_range(base, npages)?;
        if let Err(page) = self.handed_out().take(base, npages) {
            return Err(self.why_not_handed_out(base, npages, page));
        }
        self.free_unchecked(base, npages);
        Ok(())
    }

    /// What a free of `[base, base + npages pages)` would say, without changing anything:
    /// [`RangeOpError::NotGrown`] (or another range error), [`RangeOpError::NotAllocated`]
    /// if the first page that is not handed out is free, [`RangeOpError::Held`] if it is
    /// held by a page cache or free batch, or `Ok` if every page is handed out. Lets a
    /// caller explain, under the lock, a refusal of a lock-free path such as
    /// [`FreeBatch::free`](crate::FreeBatch::free). Not in Go.
    pub fn check_free(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.check_range(base, npages)?;
        match self.handed_out().first_not_handed_out(base, npages) {
            Some(page) => Err(self.why_not_handed_out(base, npages, page)),
            None => Ok(()),
        }
    }

    /// Why `page` of a checked range is not handed out: free, or held.
    fn why_not_handed_out(&self, base: u64, npages: usize, page: u64) -> RangeOpError {
        if self.check_range(page, 1).is_err() {
            RangeOpError::NotGrown { base, npages, page }
        } else if self.is_allocated(page) {
            RangeOpError::Held { base, npages, page }
        } else {
            RangeOpError::NotAllocated { base, npages, page }
        }
    }

    /// Whether the page at `addr` (in a grown chunk) is allocated in the tree.
    pub(crate) fn is_allocated(&self, addr: u64) -> bool {
        self.chunk_data(ChunkIdx::of(addr))
            .is_some_and(|c| c.alloc.get(chunk_page_index(addr)))
    }

    /// Pages that are allocated in the tree but held by a page cache or free batch (not
    /// handed out). Counted from the bitmaps, in time proportional to grown memory; exact
    /// only while no lock-free operation runs.
    pub fn held_pages(&self) -> usize {
        let h = self.handed_out();
        let mut held = 0;
        for r in self.in_use.ranges() {
            let npages = (r.size() >> PAGE_SHIFT) as usize;
            let mut addr = r.base;
            let mut left = npages;
            while left > 0 {
                let b = chunk_page_index(addr) % 64;
                let k = (64 - b).min(left);
                let mask = if k == 64 { !0 } else { ((1u64 << k) - 1) << b };
                let ci = ChunkIdx::of(addr);
                let w = chunk_page_index(addr) / 64;
                let alloc = self.chunk_of(ci).alloc.pages64(w * 64);
                let out = h.chunk_word(ci, w).unwrap_or(0);
                held += (alloc & !out & mask).count_ones() as usize;
                addr += (k as u64) << PAGE_SHIFT;
                left -= k;
            }
        }
        held
    }

    /// Frees pages whose contents the caller has zeroed (e.g. emptied page tables): like
    /// [`PageAlloc::free`], and their zeroed bits are set, so the next allocation reports
    /// them as zero (not in Go, whose scavenger sets these bits on free memory).
    pub fn free_zeroed(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.free(base, npages)?;
        self.for_each_chunk_piece(base, npages, |chunk, i, n| chunk.scavenged.set_range(i, n));
        Ok(())
    }

    /// Go's `free` without the checks.
    fn free_unchecked(&mut self, base: u64, npages: usize) {
        if base < self.search_addr {
            self.search_addr = base;
        }
        if npages == 1 {
            // Fast path: one page in one chunk.
            let (ci, i) = (ChunkIdx::of(base), chunk_page_index(base));
            let old = self.summary[LEAF][ci.0];
            let chunk = self.chunk_of_mut(ci);
            chunk.free1(i);
            if one_page_keeps_summary(chunk.alloc.words(), i, old, true) {
                self.free_pages += 1;
                return;
            }
        } else {
            self.for_each_chunk_piece(base, npages, |chunk, i, n| {
                if n == PALLOC_CHUNK_PAGES {
                    chunk.free_all();
                } else {
                    chunk.free(i, n);
                }
            });
        }
        self.free_pages += npages;
        self.update(base, npages, true, false);
    }

    /// Allocates `npages` pages at the lowest address that satisfies `c` (not in Go).
    ///
    /// Exact: if an aligned fit inside the window exists, the lowest one is returned. The
    /// search walks the tree depth-first in address order, descends only where a
    /// summary leaves room for a fit or the window cuts an entry, and carries the free
    /// run that crosses entry boundaries, as Go's `find` does on one level.
    ///
    /// Unconstrained requests take Go's path ([`PageAlloc::alloc`]). A window that
    /// starts at the search address may raise it to the first entry it found not full,
    /// so that repeated huge-page requests do not rescan full memory.
    pub fn alloc_constrained(
        &mut self,
        npages: usize,
        c: Constraints,
    ) -> Result<Allocation, AllocError> {
        self.alloc_constrained_opt(npages, c, None)
    }

    /// [`PageAlloc::alloc_constrained`] that first calls `dirty(base, npages)` for each
    /// run of the allocation whose pages were not known to be zero, in address order, so
    /// that a caller who wants zeroed memory clears only those (not in Go).
    pub fn alloc_constrained_with(
        &mut self,
        npages: usize,
        c: Constraints,
        dirty: &mut dyn FnMut(u64, usize),
    ) -> Result<Allocation, AllocError> {
        self.alloc_constrained_opt(npages, c, Some(dirty))
    }

    fn alloc_constrained_opt(
        &mut self,
        npages: usize,
        c: Constraints,
        mut dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Result<Allocation, AllocError> {
        check_npages(npages)?;
        if !c.align_pages.is_power_of_two() || c.align_pages > MAX_NPAGES {
            return Err(AllocError::BadAlignment {
                align_pages: c.align_pages,
            });
        }
        if c == Constraints::NONE {
            return self.alloc_go(npages, dirty);
        }
        let oom = AllocError::OutOfMemory {
            npages,
            constraints: c,
        };
        // Nothing below the search address is free, so start there.
        let lo = align_up(c.min_addr.min(MAX_SEARCH_ADDR), PAGE_SIZE).max(self.search_addr);
        let hi = (c.max_addr & !(PAGE_SIZE - 1)).min(self.layout.span_limit());
        if lo >= hi || ChunkIdx::of(lo).0 >= self.end {
            return Err(oom);
        }
        let mut st = Dfs {
            npages,
            align_bytes: (c.align_pages as u64) << PAGE_SHIFT,
            lo,
            hi,
            run_start: 0,
            run_pages: 0,
            first_free: MAX_SEARCH_ADDR,
        };
        let root_hi = level_index(0, hi - 1).min(self.summary[0].len() - 1);
        // A window that starts at the search address sees every free page above it, so
        // the first free entry it meets may raise the search address.
        let raise = lo == self.search_addr;
        let to_end = hi >= self.layout.span_limit();
        for j in level_index(0, lo)..=root_hi {
            if let Some(addr) = self.visit(&mut st, 0, j) {
                if raise {
                    self.search_addr = self.search_addr.max(st.first_free);
                }
                if let Some(f) = dirty.as_mut() {
                    self.visit_dirty(addr, npages, &mut **f);
                }
                let zeroed_pages = self.alloc_range_unchecked(addr, npages);
                self.handed_out().set(addr, npages);
                return Ok(Allocation {
                    base: addr,
                    npages,
                    zeroed_pages,
                });
            }
        }
        if raise && to_end {
            self.search_addr = self.search_addr.max(st.first_free);
        }
        Err(oom)
    }

    /// Visits entry `i` of level `l` for [`PageAlloc::alloc_constrained`]: returns the
    /// lowest fit that begins in or before it, and leaves the run of free pages that
    /// reaches its end in `st`.
    fn visit(&self, st: &mut Dfs, l: usize, i: usize) -> Option<u64> {
        let entry_pages = 1usize << LEVEL_LOG_PAGES[l];
        let entry_base = level_index_to_addr(l, i);
        let entry_limit = entry_base + ((entry_pages as u64) << PAGE_SHIFT);
        let sum = self.summary[l][i];
        if sum == PallocSum::EMPTY {
            st.run_pages = 0;
            return None;
        }
        if st.first_free == MAX_SEARCH_ADDR {
            st.first_free = entry_base.max(st.lo);
        }
        let clipped = entry_base < st.lo || entry_limit > st.hi;
        if !clipped {
            if sum.start() == entry_pages {
                st.extend(entry_base, entry_pages);
                return st.fit();
            }
            if sum.max() < st.npages {
                // No run inside the entry is long enough: only its ends matter.
                st.extend(entry_base, sum.start());
                if let Some(addr) = st.fit() {
                    return Some(addr);
                }
                st.restart(entry_limit - ((sum.end() as u64) << PAGE_SHIFT), sum.end());
                return None;
            }
        }
        if l == LEAF {
            return self.visit_chunk(st, ChunkIdx(i), sum);
        }
        let first = i << LEVEL_BITS[l + 1];
        for child in first..first + SUMMARY_BLOCK_ENTRIES {
            let child_base = level_index_to_addr(l + 1, child);
            if child_base >= st.hi {
                break;
            }
            if level_index_to_addr(l + 1, child + 1) <= st.lo {
                continue;
            }
            if let Some(addr) = self.visit(st, l + 1, child) {
                return Some(addr);
            }
        }
        None
    }

    /// The leaf case of [`PageAlloc::visit`], clipped to the window.
    fn visit_chunk(&self, st: &mut Dfs, ci: ChunkIdx, sum: PallocSum) -> Option<u64> {
        let cbase = ci.base();
        let lo_idx = if st.lo > cbase {
            ((st.lo - cbase) >> PAGE_SHIFT) as usize
        } else {
            0
        };
        let hi_idx = (((st.hi - cbase) >> PAGE_SHIFT) as usize).min(PALLOC_CHUNK_PAGES);
        let window = hi_idx - lo_idx;
        let bits = &self.chunk_of(ci).alloc;

        // The run arriving from below continues through the chunk's free prefix.
        if st.run_pages > 0 {
            let prefix = sum.start().min(window);
            st.extend(cbase, prefix);
            if let Some(addr) = st.fit() {
                return Some(addr);
            }
            if prefix == window {
                return None;
            }
        }
        // A fit that lies entirely inside the chunk.
        if st.npages <= PALLOC_CHUNK_PAGES {
            let align_pages = (st.align_bytes >> PAGE_SHIFT) as usize;
            let found = if align_pages <= PALLOC_CHUNK_PAGES {
                bits.find_aligned(st.npages, align_pages, lo_idx, hi_idx)
            } else if cbase.is_multiple_of(st.align_bytes) {
                bits.find_aligned(st.npages, PALLOC_CHUNK_PAGES, lo_idx, hi_idx)
            } else {
                None
            };
            if let Some(j) = found {
                return Some(cbase + ((j as u64) << PAGE_SHIFT));
            }
        }
        // The chunk's free suffix may begin a run that continues above.
        if hi_idx < PALLOC_CHUNK_PAGES {
            st.run_pages = 0;
            return None;
        }
        let end = sum.end().min(window);
        st.restart(
            cbase + (((PALLOC_CHUNK_PAGES - end) as u64) << PAGE_SHIFT),
            end,
        );
        None
    }

    /// The longest run of free pages, from the root summaries alone.
    pub fn largest_free_run(&self) -> usize {
        let full = 1usize << LEVEL_LOG_PAGES[0];
        let (mut most, mut run) = (0, 0);
        for s in self.summary[0].iter() {
            let (start, max, end) = s.unpack();
            most = most.max(run + start).max(max);
            run = if start == full { run + full } else { end };
        }
        most.max(run)
    }

    /// The free runs in address order, as `(base, npages)`.
    pub fn free_runs(&self) -> FreeRuns<'_, 'm> {
        FreeRuns { pa: self, next: 0 }
    }

    /// The first free run at or after `from`, clipped to start at `from`.
    fn next_free_run(&self, from: u64) -> Option<(u64, usize)> {
        let mut ci = ChunkIdx::of(from).0.max(self.start);
        let mut idx = if ci == ChunkIdx::of(from).0 {
            chunk_page_index(from)
        } else {
            0
        };
        while ci < self.end {
            if self.summary[LEAF][ci] != PallocSum::EMPTY
                && let Some((s, n)) = self.chunk_of(ChunkIdx(ci)).alloc.next_free_run(idx)
            {
                {
                    let base = ChunkIdx(ci).base() + ((s as u64) << PAGE_SHIFT);
                    let mut npages = n;
                    if s + n == PALLOC_CHUNK_PAGES {
                        // The run may continue into the following chunks.
                        let mut c = ci + 1;
                        while c < self.end && self.summary[LEAF][c] == FREE_CHUNK_SUM {
                            npages += PALLOC_CHUNK_PAGES;
                            c += 1;
                        }
                        if c < self.end {
                            npages += self.summary[LEAF][c].start();
                        }
                    }
                    return Some((base, npages));
                }
            }
            ci += 1;
            idx = 0;
        }
        None
    }

    /// Recomputes every summary from the bitmaps and checks every other invariant:
    /// zeroed pages are free, free pages are grown, handed-out pages are grown and
    /// allocated, nothing below the search address is
    /// free, the grown ranges are well formed, and the free-page count is right.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) -> Result<(), crate::InvariantError> {
        crate::check::check_invariants(self)
    }

    #[cfg(any(test, feature = "check"))]
    pub(crate) fn in_use_ranges(&self) -> &AddrRanges {
        &self.in_use
    }

    pub(crate) fn set_search_addr(&mut self, addr: u64) {
        self.search_addr = addr;
    }

    pub(crate) fn add_free_pages(&mut self, n: isize) {
        self.free_pages = self
            .free_pages
            .checked_add_signed(n)
            .expect("pagealloc: free count");
    }

    pub(crate) fn chunk_bounds(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// Iterator over free runs. See [`PageAlloc::free_runs`].
pub struct FreeRuns<'a, 'm> {
    pa: &'a PageAlloc<'m>,
    next: u64,
}

impl Iterator for FreeRuns<'_, '_> {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        let (base, npages) = self.pa.next_free_run(self.next)?;
        self.next = base + ((npages as u64) << PAGE_SHIFT);
        Some((base, npages))
    }
}

/// State of the depth-first search of [`PageAlloc::alloc_constrained`].
struct Dfs {
    npages: usize,
    align_bytes: u64,
    lo: u64,
    hi: u64,
    /// The free run that reaches the end of the last entry visited.
    run_start: u64,
    run_pages: usize,
    /// The base (clipped to `lo`) of the first entry visited that has a free page; no page
    /// between `lo` and it is free. [`MAX_SEARCH_ADDR`] until one is seen.
    first_free: u64,
}

impl Dfs {
    /// Extends the run with `n` free pages at `base`, which follow it directly.
    fn extend(&mut self, base: u64, n: usize) {
        if n == 0 {
            self.run_pages = 0;
            return;
        }
        if self.run_pages == 0 {
            self.run_start = base;
        }
        self.run_pages += n;
    }

    fn restart(&mut self, base: u64, n: usize) {
        self.run_start = base;
        self.run_pages = n;
    }

    /// The lowest aligned fit inside the current run.
    fn fit(&self) -> Option<u64> {
        if self.run_pages < self.npages {
            return None;
        }
        let addr = align_up(self.run_start, self.align_bytes);
        let need = (self.npages as u64) << PAGE_SHIFT;
        let run_end = self.run_start + ((self.run_pages as u64) << PAGE_SHIFT);
        (addr + need <= run_end && addr + need <= self.hi).then_some(addr)
    }
}

fn check_npages(npages: usize) -> Result<(), AllocError> {
    if npages == 0 {
        return Err(AllocError::ZeroPages);
    }
    if npages > MAX_NPAGES {
        return Err(AllocError::TooManyPages { npages });
    }
    Ok(())
}

fn check_len(what: &'static str, needed: usize, provided: usize) -> Result<(), LayoutError> {
    if provided < needed {
        return Err(LayoutError::TooSmall {
            what,
            needed,
            provided,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::testutil::HeapMetadata;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// An allocator over `regions`, grown with unknown contents.
    fn with_regions<'m>(md: &'m mut HeapMetadata, regions: &[AddrRange]) -> PageAlloc<'m> {
        let layout = MetadataLayout::for_regions(regions).unwrap();
        let mut pa = md.page_alloc(layout);
        for r in regions {
            pa.grow(r.base, r.size(), Contents::Unknown).unwrap();
            pa.check_invariants().unwrap();
        }
        pa
    }

    fn pages(n: u64) -> u64 {
        n * PAGE_SIZE
    }

    #[test]
    fn address_zero_and_chunk_zero_are_ordinary() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(0, pages(10))]);
        assert_eq!(pa.bounds(), Some((ChunkIdx(0), ChunkIdx(1))));
        assert_eq!(pa.alloc(1).unwrap().base, 0);
        assert_eq!(pa.alloc(9).unwrap().base, pages(1));
        assert!(matches!(pa.alloc(1), Err(AllocError::OutOfMemory { .. })));
        assert_eq!(pa.search_addr(), MAX_SEARCH_ADDR);
        pa.free(0, 1).unwrap();
        assert_eq!(pa.search_addr(), 0);
        assert_eq!(pa.alloc(1).unwrap().base, 0);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn page_granular_grow_keeps_the_rest_of_the_chunk_allocated() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(pages(3), pages(8))]);
        assert_eq!(pa.free_pages(), 5);
        assert_eq!(pa.summary_level(LEAF).unwrap()[0].unpack(), (0, 5, 0));
        assert_eq!(pa.summary_level(SUMMARY_LEVELS), None);
        let got: Vec<u64> = (0..5).map(|_| pa.alloc(1).unwrap().base).collect();
        assert_eq!(got, vec![pages(3), pages(4), pages(5), pages(6), pages(7)]);
        assert!(pa.alloc(1).is_err());
        // The pages around the region were never grown: freeing them is an error.
        assert_eq!(
            pa.free(pages(2), 1),
            Err(RangeOpError::NotGrown {
                base: pages(2),
                npages: 1,
                page: pages(2)
            })
        );
        assert_eq!(
            pa.free(pages(7), 2),
            Err(RangeOpError::NotGrown {
                base: pages(7),
                npages: 2,
                page: pages(8)
            })
        );
        // A second region in the same chunk joins the first.
        pa.grow(pages(8), pages(2), Contents::Zeroed).unwrap();
        assert_eq!(pa.in_use(), &[AddrRange::new(pages(3), pages(10))]);
        let a = pa.alloc(2).unwrap();
        assert_eq!((a.base, a.zeroed_pages), (pages(8), 2));
        pa.check_invariants().unwrap();
    }

    #[test]
    fn grow_errors_change_nothing() {
        let mut md = HeapMetadata::default();
        let layout = MetadataLayout::new(64 * MIB, 1).unwrap();
        let mut pa = md.page_alloc(layout);
        pa.grow(4 * MIB, 4 * MIB, Contents::Unknown).unwrap();
        let r = |b, l| AddrRange::new(b, l);
        assert_eq!(
            pa.grow(0, 0, Contents::Unknown),
            Err(GrowError::Empty { base: 0 })
        );
        assert_eq!(
            pa.grow(1, 4096, Contents::Unknown),
            Err(GrowError::Unaligned {
                base: 1,
                size_bytes: 4096
            })
        );
        assert_eq!(
            pa.grow(7 * MIB, 2 * MIB, Contents::Unknown),
            Err(GrowError::Overlap {
                region: r(7 * MIB, 9 * MIB),
                existing: r(4 * MIB, 8 * MIB)
            })
        );
        assert_eq!(
            pa.grow(60 * MIB, 8 * MIB, Contents::Unknown),
            Err(GrowError::BeyondSpan {
                region: r(60 * MIB, 68 * MIB),
                span_limit: 64 * MIB
            })
        );
        // The second 32 MiB block of chunks needs a bitmap block the pool does not have.
        assert_eq!(
            pa.grow(40 * MIB, MIB, Contents::Unknown),
            Err(GrowError::OutOfMetadata {
                region: r(40 * MIB, 41 * MIB),
                needed_blocks: 1,
                free_blocks: 0
            })
        );
        assert_eq!(pa.free_pages(), 1024);
        assert_eq!(pa.in_use(), &[r(4 * MIB, 8 * MIB)]);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn layout_counts_each_bitmap_block_once() {
        let regions = [
            AddrRange::new(0, 640 * 1024),
            AddrRange::new(MIB, 30 * MIB),
            AddrRange::new(31 * MIB, 40 * MIB),
            AddrRange::new(4 * GIB, 5 * GIB),
        ];
        let layout = MetadataLayout::for_regions(&regions).unwrap();
        // Blocks are 32 MiB: [0, 64 MiB) touches two, [4 GiB, 5 GiB) 32.
        assert_eq!(layout.chunk_entries(), 34 * PALLOC_CHUNKS_L2_ENTRIES);
        assert_eq!(layout.span_limit(), 5 * GIB);
        assert_eq!(layout.level_len(), [1, 8, 40, 320, 2560]);
        assert_eq!(layout.chunk_map_entries(), 160);
    }

    /// Many overlapping regions over the whole address space: each block is counted
    /// once, on both paths (sorted on the stack, and selection beyond 128 regions), and
    /// fast (the old count looked at every block of every region).
    #[test]
    fn layout_of_many_overlapping_regions() {
        use crate::consts::PHYS_ADDR_BITS;
        let top = 1u64 << PHYS_ADDR_BITS;
        let block_bytes = PALLOC_CHUNK_BYTES * PALLOC_CHUNKS_L2_ENTRIES as u64;
        // One bit per block, filled a word at a time.
        let reference = |regions: &[AddrRange]| {
            let mut seen = vec![0u64; (top / block_bytes).div_ceil(64) as usize];
            for r in regions.iter().filter(|r| r.size() != 0) {
                let (b0, b1) = l2_blocks_of(r);
                let (w0, w1) = (b0 / 64, b1 / 64);
                let lo = !0u64 << (b0 % 64);
                let hi = !0u64 >> (63 - b1 % 64);
                if w0 == w1 {
                    seen[w0] |= lo & hi;
                } else {
                    seen[w0] |= lo;
                    seen[w0 + 1..w1].fill(!0);
                    seen[w1] |= hi;
                }
            }
            seen.iter().map(|w| w.count_ones() as usize).sum::<usize>()
        };
        // The case: 32 regions over the 48-bit space, all overlapping.
        let nested: Vec<AddrRange> = (0..32u64)
            .map(|i| AddrRange::new(i * GIB, top - i * 3 * GIB))
            .collect();
        let layout = MetadataLayout::for_regions(&nested).unwrap();
        assert_eq!(
            layout.chunk_entries() / PALLOC_CHUNKS_L2_ENTRIES,
            reference(&nested)
        );
        assert_eq!(layout.chunk_map_entries(), (top / block_bytes) as usize);

        let mut r = crate::testutil::Rng(0x5eed_1234_abcd_ef01);
        for n in [1, 7, 128, 129, 600] {
            let regions: Vec<AddrRange> = (0..n)
                .map(|_| {
                    let base = r.below(top >> 12) << 12;
                    let len = match r.below(3) {
                        0 => r.below(64 * MIB),
                        1 => r.below(64 * GIB),
                        _ => r.below(top - base),
                    } & !(PAGE_SIZE - 1);
                    AddrRange::new(base, (base + len).min(top))
                })
                .collect();
            let layout = MetadataLayout::for_regions(&regions).unwrap();
            assert_eq!(
                layout.chunk_entries() / PALLOC_CHUNKS_L2_ENTRIES,
                reference(&regions),
                "{n} regions"
            );
        }
        assert_eq!(
            MetadataLayout::for_regions(&[AddrRange::new(5, 5)]).unwrap(),
            MetadataLayout::new(5, 0).unwrap()
        );
    }

    /// The summaries and the chunk map cover the span from address 0 (Go's design): a
    /// little memory at the top of the address space costs as much of them as all the
    /// memory below it would; the bitmaps and handed-out bits stay sparse.
    #[test]
    fn metadata_near_the_top_of_the_address_space() {
        use crate::consts::PHYS_ADDR_BITS;
        let top = 1u64 << PHYS_ADDR_BITS;
        let low = MetadataLayout::for_regions(&[AddrRange::new(0, 64 * MIB)]).unwrap();
        let high = MetadataLayout::for_regions(&[AddrRange::new(top - 64 * MIB, top)]).unwrap();
        assert_eq!(high.chunk_entries(), low.chunk_entries());
        assert_eq!(high.handed_out_words(), low.handed_out_words());
        let dense = high.summary_entries() * size_of::<PallocSum>()
            + high.chunk_map_entries() * size_of::<AtomicU32>();
        // About 4.7 KiB of summaries and chunk map per GiB of span: 1.26 GB for 256 TiB.
        let per_gib = dense as u64 / (top / GIB);
        assert!(
            (4700..4900).contains(&per_gib),
            "{per_gib} bytes per GiB of span"
        );
        assert!(high.total_bytes() > 1000 * low.total_bytes());
    }

    #[test]
    fn metadata_cost_per_gib() {
        let layout = MetadataLayout::for_regions(&[AddrRange::new(0, 4 * GIB)]).unwrap();
        let per_gib = layout.total_bytes() as u64 / 4;
        // 64 KiB of bitmaps, 32 KiB of handed-out bits, 4 KiB of leaves, a little above.
        assert!(per_gib < 102 * 1024, "{per_gib} bytes per GiB");
        assert!(per_gib > 100 * 1024, "{per_gib} bytes per GiB");
    }

    #[test]
    fn too_small_metadata_is_refused() {
        let layout = MetadataLayout::new(GIB, 16).unwrap();
        let mut sums = vec![PallocSum::EMPTY; layout.summary_entries() - 1];
        let mut map: Vec<AtomicU32> = (0..layout.chunk_map_entries())
            .map(|_| AtomicU32::new(0))
            .collect();
        let mut chunks = vec![PallocData::default(); layout.chunk_entries()];
        let mut bits: Vec<AtomicU64> = (0..layout.handed_out_words() - 1)
            .map(|_| AtomicU64::new(0))
            .collect();
        let md = Metadata {
            summaries: &mut sums,
            chunk_map: &mut map,
            chunks: &mut chunks,
            handed_out: &mut bits,
        };
        let err = PageAlloc::new(layout, md).err().unwrap();
        assert_eq!(
            err,
            LayoutError::TooSmall {
                what: "summaries",
                needed: layout.summary_entries(),
                provided: layout.summary_entries() - 1
            }
        );
        sums.push(PallocSum::EMPTY);
        let md = Metadata {
            summaries: &mut sums,
            chunk_map: &mut map,
            chunks: &mut chunks,
            handed_out: &mut bits,
        };
        assert_eq!(
            PageAlloc::new(layout, md).err(),
            Some(LayoutError::TooSmall {
                what: "handed_out",
                needed: layout.handed_out_words(),
                provided: layout.handed_out_words() - 1
            })
        );
    }

    #[test]
    fn constrained_alignment_finds_the_lowest_aligned_fit() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(pages(1), 64 * MIB)]);
        // Page 1 is the lowest free page; 2 MiB alignment skips to chunk 1.
        let a = pa
            .alloc_constrained(512, Constraints::aligned(512))
            .unwrap();
        assert_eq!(a.base, 2 * MIB);
        // 16 pages at 16-page alignment: the first aligned spot after page 1.
        let b = pa.alloc_constrained(16, Constraints::aligned(16)).unwrap();
        assert_eq!(b.base, pages(16));
        // An unaligned request still takes the lowest page.
        assert_eq!(pa.alloc(1).unwrap().base, pages(1));
        pa.check_invariants().unwrap();
        // Four chunks at 8 MiB alignment: [8 MiB, 16 MiB) is free.
        let c = pa
            .alloc_constrained(2048, Constraints::aligned(2048))
            .unwrap();
        assert_eq!(c.base, 8 * MIB);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn constrained_window_clips_at_both_ends() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(0, 64 * MIB)]);
        let w = Constraints::within(pages(5), pages(9));
        assert_eq!(pa.alloc_constrained(4, w).unwrap().base, pages(5));
        assert!(matches!(
            pa.alloc_constrained(1, w),
            Err(AllocError::OutOfMemory { .. })
        ));
        // Below a limit: the lowest fit, which must end at or below it.
        let below = Constraints::below(pages(12));
        assert_eq!(pa.alloc_constrained(3, below).unwrap().base, pages(0));
        assert_eq!(pa.alloc_constrained(3, below).unwrap().base, pages(9));
        assert_eq!(pa.alloc_constrained(2, below).unwrap().base, pages(3));
        assert!(pa.alloc_constrained(1, below).is_err());
        // A window that starts inside a chunk whose summary includes pages below it.
        let hi = Constraints::within(3 * MIB + pages(7), 40 * MIB).with_align(8);
        assert_eq!(
            pa.alloc_constrained(8, hi).unwrap().base,
            3 * MIB + pages(8)
        );
        pa.check_invariants().unwrap();
    }

    #[test]
    fn constrained_gigabyte_alignment() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(MIB, 3 * GIB)]);
        let gib_pages = (GIB / PAGE_SIZE) as usize;
        let a = pa
            .alloc_constrained(gib_pages, Constraints::aligned(gib_pages))
            .unwrap();
        assert_eq!(a.base, GIB);
        let b = pa
            .alloc_constrained(gib_pages, Constraints::aligned(gib_pages))
            .unwrap();
        assert_eq!(b.base, 2 * GIB);
        assert!(
            pa.alloc_constrained(1, Constraints::aligned(gib_pages))
                .is_err()
        );
        pa.free(a.base, gib_pages).unwrap();
        assert_eq!(
            pa.largest_free_run(),
            ((2 * GIB - MIB) / PAGE_SIZE) as usize
        );
        pa.check_invariants().unwrap();
    }

    #[test]
    fn bad_requests_are_errors() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(0, 4 * MIB)]);
        assert_eq!(pa.alloc(0), Err(AllocError::ZeroPages));
        assert_eq!(
            pa.alloc(MAX_NPAGES + 1),
            Err(AllocError::TooManyPages {
                npages: MAX_NPAGES + 1
            })
        );
        assert_eq!(
            pa.alloc_constrained(1, Constraints::aligned(3)),
            Err(AllocError::BadAlignment { align_pages: 3 })
        );
        assert!(matches!(
            pa.alloc(1025),
            Err(AllocError::OutOfMemory { npages: 1025, .. })
        ));
        assert_eq!(pa.free(1, 1), Err(RangeOpError::Unaligned { base: 1 }));
        assert_eq!(pa.free(0, 0), Err(RangeOpError::ZeroPages { base: 0 }));
        let a = pa.alloc(2).unwrap();
        assert_eq!(
            pa.alloc_range(0, 4),
            Err(RangeOpError::NotFree {
                base: 0,
                npages: 4,
                page: 0
            })
        );
        assert_eq!(pa.alloc_range(pages(2), 2).unwrap(), 0);
        pa.free(a.base, 2).unwrap();
        assert_eq!(
            pa.free(0, 3),
            Err(RangeOpError::NotAllocated {
                base: 0,
                npages: 3,
                page: 0
            })
        );
        assert_eq!(
            pa.free(4 * MIB, 1),
            Err(RangeOpError::NotGrown {
                base: 4 * MIB,
                npages: 1,
                page: 4 * MIB
            })
        );
        pa.check_invariants().unwrap();
    }

    #[test]
    fn free_runs_and_largest_run() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(
            &mut md,
            &[
                AddrRange::new(pages(2), 6 * MIB),
                AddrRange::new(8 * MIB, 8 * MIB + pages(5)),
            ],
        );
        pa.alloc_range(pages(10), 3).unwrap();
        pa.alloc_range(2 * MIB - pages(1), 2).unwrap();
        let runs: Vec<_> = pa.free_runs().collect();
        assert_eq!(
            runs,
            vec![
                (pages(2), 8),
                (pages(13), 512 - 13 - 1),
                (2 * MIB + pages(1), 1023),
                (8 * MIB, 5),
            ]
        );
        assert_eq!(pa.largest_free_run(), 1023);
        assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), pa.free_pages());
    }

    #[test]
    fn page_cache_round_trip() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(pages(60), pages(200))]);
        let mut c = pa.alloc_to_cache();
        assert_eq!((c.base(), c.cache()), (0, !0 << 60));
        assert_eq!(pa.free_pages(), 140 - 4);
        assert_eq!(c.alloc(1), Some((pages(60), 0)));
        assert_eq!(pa.alloc(1).unwrap().base, pages(64));
        pa.check_invariants().unwrap();
        assert_eq!(pa.held_pages(), 3);
        let (base, cache) = (c.base(), c.cache());
        c.flush(&mut pa).unwrap();
        assert!(c.is_empty());
        assert_eq!(pa.free_pages(), 140 - 2);
        assert_eq!(pa.held_pages(), 0);
        // A stale copy cannot return the pages a second time.
        let mut stale =
            crate::testutil::new_page_cache(Some(pa.handed_out()), base, cache, 0).unwrap();
        assert_eq!(
            stale.flush(&mut pa),
            Err(RangeOpError::NotAllocated {
                base: 0,
                npages: 64,
                page: pages(61)
            })
        );
        pa.check_invariants().unwrap();
    }

    #[test]
    fn error_messages_name_the_values() {
        let e = AllocError::OutOfMemory {
            npages: 4,
            constraints: Constraints::below(16 * MIB),
        };
        assert_eq!(
            e.to_string(),
            "out of memory: no free run of 4 pages within [0x0, 0x1000000)"
        );
        let e = GrowError::Overlap {
            region: AddrRange::new(0x1000, 0x3000),
            existing: AddrRange::new(0x2000, 0x4000),
        };
        assert_eq!(
            e.to_string(),
            "grow of [0x1000, 0x3000) overlaps grown memory [0x2000, 0x4000)"
        );
    }

    #[test]
    fn zeroed_pages_are_reported_run_by_run() {
        let mut md = HeapMetadata::default();
        let mut pa = with_regions(&mut md, &[AddrRange::new(0, 4 * MIB)]);
        // Pages 0..8 and 516..520 were zeroed by their last user; the rest is dirty.
        let a = pa.alloc(8).unwrap();
        let b = pa
            .alloc_constrained(12, Constraints::within(2 * MIB - pages(4), 4 * MIB))
            .unwrap();
        assert_eq!(b.base, 2 * MIB - pages(4));
        pa.free_zeroed(a.base, 8).unwrap();
        pa.free(b.base, 12).unwrap();
        pa.alloc_range(b.base, 12).unwrap();
        pa.free_zeroed(2 * MIB + pages(4), 4).unwrap();
        pa.free(b.base, 8).unwrap();
        pa.check_invariants().unwrap();
        // Pages 0..20: 0..8 zeroed, 8..20 dirty; then 512..524 has 516..520 zeroed.
        let mut dirty = Vec::new();
        let c = pa
            .alloc_constrained_with(20, Constraints::NONE, &mut |b, n| dirty.push((b, n)))
            .unwrap();
        assert_eq!((c.base, c.zeroed_pages), (0, 8));
        assert_eq!(dirty, vec![(pages(8), 12)]);
        dirty.clear();
        let d = pa
            .alloc_constrained_with(12, Constraints::within(2 * MIB, 4 * MIB), &mut |b, n| {
                dirty.push((b, n))
            })
            .unwrap();
        assert_eq!((d.base, d.zeroed_pages), (2 * MIB, 4));
        assert_eq!(dirty, vec![(2 * MIB, 4), (2 * MIB + pages(8), 4)]);
        // Freed again normally, the pages are dirty.
        pa.free(d.base, 12).unwrap();
        assert_eq!(
            pa.alloc_constrained(12, Constraints::within(2 * MIB, 4 * MIB))
                .unwrap()
                .zeroed_pages,
            0
        );
        assert_eq!(
            pa.free_zeroed(d.base, 13),
            Err(RangeOpError::NotAllocated {
                base: d.base,
                npages: 13,
                page: 2 * MIB + pages(12)
            })
        );
        pa.check_invariants().unwrap();
    }
}
