//! What the allocator refuses, and why: one error type per kind of operation, each
//! naming the values it was given. A refused operation changes nothing.
//!
//! Ranges of pages are named one way everywhere: `[base, +npages pages)` for the page
//! runs of frees and reservations, and an [`AddrRange`] (`[base, limit)`) for the
//! regions of grows and layouts.

use core::fmt;

use crate::constrained::Constraints;
use crate::consts::*;
use crate::index::MAX_NPAGES;
use crate::ranges::AddrRange;

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
    /// cannot tell which; [`PageAlloc::check_free`](crate::PageAlloc::check_free) can, under the lock.
    NotHandedOut {
        /// The page.
        page: u64,
    },
    /// A page cache or free batch used with an allocator other than the one its pages
    /// came from.
    ForeignAllocator {
        /// A page of the cache or batch (or the page being freed into it).
        page: u64,
        /// [`HandedOut::id`](crate::HandedOut::id) of the allocator the cache or batch belongs to (0 for a
        /// cache the test support built without an allocator).
        owner: usize,
        /// [`HandedOut::id`](crate::HandedOut::id) of the allocator it was used with.
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
        /// The region.
        region: AddrRange,
    },
    /// Base or limit not a multiple of the page size.
    Unaligned {
        /// The region.
        region: AddrRange,
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
            GrowError::Empty { region } => write!(f, "grow of an empty region {region}"),
            GrowError::Unaligned { region } => write!(
                f,
                "grow of {region}: not a whole number of {PAGE_SIZE}-byte pages"
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
    /// The metadata slice is shorter than the layout needs.
    TooSmall {
        /// Words needed ([`MetadataLayout::words`](crate::MetadataLayout::words)).
        needed_words: usize,
        /// Words provided.
        provided_words: usize,
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
                needed_words,
                provided_words,
            } => {
                write!(
                    f,
                    "metadata of {provided_words} words is too small: the layout needs {needed_words}"
                )
            }
        }
    }
}

impl core::error::Error for LayoutError {}
