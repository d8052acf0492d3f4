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
//! 4.8 KiB per GiB of span (8-byte leaves per 2 MiB chunk, the levels above, and 8 bytes
//! of chunk map per 32 MiB). Memory near the top of the address space therefore costs
//! as much of them as if everything below it existed: 64 MiB just below 256 TiB (the
//! 48-bit limit) needs about 1.29 GB of summaries. The chunk bitmaps (128 bytes per
//! chunk, 64 without known-zero bits) and the handed-out bits (64 bytes per chunk) are
//! sparse: they exist only for the 32 MiB blocks that some grown region touches. Sizing
//! the dense part from the lowest grown address instead would need an offset in every
//! index; physical memory maps of real machines start near 0, so this port keeps Go's
//! layout.
//!
//! # Deviations from Go
//! The functions that port a Go function name it in their docs; where they differ:
//! - `grow`: Go grows whole chunks and takes the summary memory it needs from the OS; here a
//!   region may start and end anywhere on a page boundary (as a boot memory map's regions do),
//!   the metadata was provided up front, `contents` says whether the memory is known to be zero
//!   (Go assumes it is), and bad regions are errors.
//! - `alloc`: Failure is an error value instead of base address 0, which is a valid page here.
//!   A request at least as large as one that failed since the last free or grow fails at
//!   once (`doomed`). A single page is taken from the search address's chunk bitmap without
//!   consulting its summary.
//! - `update`: marks the summaries above the change stale instead of recomputing them; reads
//!   recompute (`stale.rs`).
//! - `find`: The root level is scanned only as far as the span reaches; stale entries are
//!   recomputed as they are read.
//! - `free`: Go trusts the caller; here the free is accepted only if it takes back every page
//!   of the range from its caller (clears their handed-out bits atomically), so of two racing
//!   frees of a page exactly one wins. A range that is not grown, or whose first page that is
//!   not handed out is free ([`RangeOpError::NotAllocated`]) or held by a page cache or free
//!   batch ([`RangeOpError::Held`]), is refused with an error naming that page, and nothing
//!   changes.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::constrained::Constraints;
use crate::consts::*;
use crate::errors::{AllocError, LayoutError, RangeOpError};
use crate::handedout::HandedOut;
use crate::index::*;
use crate::layout::MetadataLayout;
use crate::metadata::{ALLOC_WORDS, Chunks, KNOWN_ZERO_WORDS, Level, NO_BLOCK};
use crate::pallocbits::{PallocBits, PallocData};
use crate::ranges::AddrRanges;
use crate::summary::{FREE_CHUNK_SUM, PallocSum};
use crate::whole::is_whole_chunk;

/// What grown memory holds, which decides its known-zero bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contents {
    /// Contents unknown (boot RAM): the pages' zeroed bits start clear.
    Unknown,
    /// Known to be zero (Go's fresh OS memory): the zeroed bits start set. Without
    /// known-zero tracking ([`MetadataLayout::without_known_zero`]) nothing is recorded:
    /// the same as [`Contents::Unknown`].
    Zeroed,
}

/// A physical page allocator over one span of physical memory. Go: `pageAlloc`.
///
/// Not thread-safe by design: every method takes `&mut self`, and the kernel puts the
/// allocator behind its lock (Go: "`mheapLock` must be held").
pub struct PageAlloc<'m> {
    /// The radix tree, root first. Invariant: every fresh leaf equals the summary of its
    /// chunk's bitmap (0 where no chunk was grown), every fresh inner entry merges its 8
    /// children, and a stale entry's parent is stale (`stale.rs`).
    pub(crate) summary: [Level<'m>; SUMMARY_LEVELS],
    /// Block of chunks -> index of its bitmaps in `chunks`, or [`NO_BLOCK`]. Written only
    /// by `grow` (with `&mut self`), read lock-free by [`HandedOut`].
    pub(crate) chunk_map: &'m [AtomicU64],
    /// The handed-out bits, shared with every [`HandedOut`] handle.
    pub(crate) handed_out: &'m [AtomicU64],
    /// Bitmaps of grown chunks. Pages of a grown chunk that no grow covered are marked
    /// allocated, so they are never handed out.
    pub(crate) chunks: Chunks<'m>,
    /// Blocks of `chunks` in use.
    pub(crate) l2_used: usize,
    pub(crate) layout: MetadataLayout,
    /// No page below this address is free. Go: `searchAddr`.
    pub(crate) search_addr: u64,
    /// Grown chunks lie in `[start, end)`; `start > end` until the first grow.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// The page-granular ranges that were grown. Go: `inUse` (chunk-granular there).
    pub(crate) grown: AddrRanges,
    /// Free pages, kept so that stats are O(1).
    pub(crate) free_pages: usize,
    /// The fewest pages an unconstrained request asked for and did not get since pages
    /// last became free; `usize::MAX` if none. A request at least this large fails at
    /// once. Not in Go.
    pub(crate) doomed: usize,
    /// No chunk below this one is wholly free: where the 2 MiB fast path starts looking.
    /// Not in Go.
    pub(crate) free_chunk_hint: usize,
}

/// The result of an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Allocation {
    /// Physical address of the first page.
    pub base: u64,
    /// Pages allocated.
    pub npages: usize,
    /// How many of them were known to be zero (their zeroed bit was set).
    pub zeroed_pages: usize,
}

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
    /// at least [`MetadataLayout::words`] long; its contents need not be initialised.
    /// Go: `(*pageAlloc).init` (Go maps the memory it needs itself).
    pub fn new(layout: MetadataLayout, metadata: &'m mut [AtomicU64]) -> Result<Self, LayoutError> {
        let parts = crate::metadata::split(&layout, metadata)?;
        Ok(PageAlloc {
            summary: parts.summary,
            chunk_map: parts.chunk_map,
            handed_out: parts.handed_out,
            chunks: parts.chunks,
            l2_used: 0,
            layout,
            search_addr: MAX_SEARCH_ADDR,
            start: usize::MAX,
            end: 0,
            grown: AddrRanges::new(),
            free_pages: 0,
            doomed: usize::MAX,
            free_chunk_hint: 0,
        })
    }

    /// The layout this allocator was built with.
    pub fn layout(&self) -> &MetadataLayout {
        &self.layout
    }

    /// The pool entry of chunk `ci`'s bitmaps, if a grow touched its block.
    #[inline]
    pub(crate) fn chunk_slot(&self, ci: ChunkIdx) -> Option<usize> {
        let slot = self.chunk_map.get(ci.map_block())?.load(Ordering::Relaxed);
        (slot != NO_BLOCK).then(|| slot as usize * PALLOC_CHUNKS_L2_ENTRIES + ci.slot_in_block())
    }

    /// The pool entry of a chunk that must have been grown.
    #[inline]
    pub(crate) fn grown_slot(&self, ci: ChunkIdx) -> usize {
        match self.chunk_slot(ci) {
            Some(k) => k,
            None => panic!("pagealloc: no bitmap for {ci}, which the summaries say is grown"),
        }
    }

    /// A copy of the bitmaps of chunk `ci`, if it was grown. Go: `tryChunkOf`.
    pub(crate) fn chunk_data(&self, ci: ChunkIdx) -> Option<PallocData> {
        Some(self.chunks.load(self.chunk_slot(ci)?))
    }

    /// A copy of the allocation bits of a grown chunk. Go: `chunkOf` (its `pallocBits`).
    #[inline]
    pub(crate) fn alloc_bits_of(&self, ci: ChunkIdx) -> PallocBits {
        self.chunks.load_alloc(self.grown_slot(ci))
    }

    /// Word `w` (of 8) of the allocation bits of a grown chunk.
    #[inline]
    pub(crate) fn alloc_word(&self, ci: ChunkIdx, w: usize) -> u64 {
        self.chunks.word(self.grown_slot(ci), ALLOC_WORDS + w)
    }

    /// Word `w` (of 8) of the known-zero bits of a grown chunk.
    #[inline]
    pub(crate) fn known_zero_word(&self, ci: ChunkIdx, w: usize) -> u64 {
        self.chunks.word(self.grown_slot(ci), KNOWN_ZERO_WORDS + w)
    }

    /// Runs `f` on the bitmaps of a grown chunk, keeping what it changes.
    #[inline]
    pub(crate) fn with_chunk<R>(
        &mut self,
        ci: ChunkIdx,
        f: impl FnOnce(&mut PallocData) -> R,
    ) -> R {
        let k = self.grown_slot(ci);
        self.chunks.with(k, f)
    }

    /// A handle on this allocator's handed-out bits, for use without its lock.
    pub fn handed_out(&self) -> HandedOut<'m> {
        HandedOut::new(self.chunk_map, self.handed_out)
    }

    /// No page below this address is free. Go: `searchAddr`.
    pub(crate) fn search_addr(&self) -> u64 {
        self.search_addr
    }

    /// Calls `f(chunks, slot, first_page, npages)` for each chunk's part of
    /// `[base, base + npages pages)`, in address order; `slot` is the chunk's entry in
    /// `chunks`, whose words `f` changes in place.
    pub(crate) fn for_each_chunk_piece(
        &mut self,
        base: u64,
        npages: usize,
        mut f: impl FnMut(&mut Chunks<'m>, usize, usize, usize),
    ) {
        let limit = base + ((npages as u64) << PAGE_SHIFT) - 1;
        let (sc, ec) = (ChunkIdx::of(base).0, ChunkIdx::of(limit).0);
        let (si, ei) = (chunk_page_index(base), chunk_page_index(limit));
        for c in sc..=ec {
            let i = if c == sc { si } else { 0 };
            let j = if c == ec { ei } else { PALLOC_CHUNK_PAGES - 1 };
            let k = self.grown_slot(ChunkIdx(c));
            f(&mut self.chunks, k, i, j + 1 - i);
        }
    }

    /// Marks the summaries above `[base, base + npages pages)` stale after its bitmaps
    /// changed. `contig` says the change was one contiguous alloc (`alloc`) or free of the
    /// whole range: then the chunks it covers whole are set directly. Go:
    /// `(*pageAlloc).update`, which recomputes every level at once (see `stale.rs`).
    pub(crate) fn update(&mut self, base: u64, npages: usize, contig: bool, alloc: bool) {
        let limit = base + ((npages as u64) << PAGE_SHIFT);
        let (sc, ec) = (ChunkIdx::of(base).0, ChunkIdx::of(limit - 1).0);
        if sc == ec && npages < PALLOC_CHUNK_PAGES {
            self.mark_chunk_stale(ChunkIdx(sc));
            return;
        }
        let whole = if alloc {
            PallocSum::EMPTY
        } else {
            FREE_CHUNK_SUM
        };
        for c in sc..=ec {
            let covered = base <= ChunkIdx(c).base() && ChunkIdx(c + 1).base() <= limit;
            if contig && covered {
                self.summary[LEAF].set(c, whole);
            } else {
                self.summary[LEAF].mark_stale(c);
            }
        }
        self.leaves_written(sc, ec);
    }

    /// Marks `[base, base + npages pages)` allocated without checks and returns how many
    /// of its pages were known to be zero. Go: `(*pageAlloc).allocRange`.
    pub(crate) fn alloc_range_unchecked(&mut self, base: u64, npages: usize) -> usize {
        if is_whole_chunk(base, npages) {
            return self.alloc_chunk(ChunkIdx::of(base)).1;
        }
        if npages == 1 {
            let (ci, i) = (ChunkIdx::of(base), chunk_page_index(base));
            let k = self.grown_slot(ci);
            let zeroed = self.chunks.flip_one(k, i, true);
            self.free_pages -= 1;
            self.one_page_flipped(ci, k, i, false);
            return usize::from(zeroed);
        }
        let mut zeroed = 0;
        self.for_each_chunk_piece(base, npages, |chunks, k, i, n| {
            zeroed += chunks.alloc_range(k, i, n);
        });
        self.update(base, npages, true, true);
        self.free_pages -= npages;
        zeroed
    }

    /// `npages` pages from `base` became free (or were grown): the search address, the
    /// free count, the doomed-request memo and the free-chunk hint learn of it.
    pub(crate) fn note_freed(&mut self, base: u64, npages: usize) {
        if base < self.search_addr {
            self.search_addr = base;
        }
        self.free_pages += npages;
        self.doomed = usize::MAX;
        self.free_chunk_hint = self.free_chunk_hint.min(ChunkIdx::of(base).0);
    }

    /// Reserves `[base, base + npages pages)`, which must be grown and free; the
    /// [`Allocation`] says how many of its pages were known to be zero. For memory the kernel must keep
    /// (its own metadata, firmware tables). Go: `(*pageAlloc).allocRange`, which
    /// trusts its caller; this one checks.
    ///
    /// The pages are handed out to the caller, who may free them later.
    pub fn alloc_range(&mut self, base: u64, npages: usize) -> Result<Allocation, RangeOpError> {
        self.check_range(base, npages)?;
        if let Some(page) = self.first_page_with(base, npages, true) {
            return Err(RangeOpError::NotFree { base, npages, page });
        }
        let zeroed_pages = self.alloc_range_unchecked(base, npages);
        self.handed_out().set(base, npages);
        Ok(Allocation {
            base,
            npages,
            zeroed_pages,
        })
    }

    /// Calls `f(base, npages)` for each maximal run of `[base, base + npages pages)`
    /// whose zeroed bits are clear, in address order (the whole range without
    /// known-zero tracking).
    pub(crate) fn visit_dirty(&self, base: u64, npages: usize, f: &mut dyn FnMut(u64, usize)) {
        if !self.layout.tracks_known_zero() {
            f(base, npages);
            return;
        }
        let mut run: Option<(u64, usize)> = None;
        for p in 0..npages {
            let addr = base + ((p as u64) << PAGE_SHIFT);
            let i = chunk_page_index(addr);
            let zeroed = (self.known_zero_word(ChunkIdx::of(addr), i / 64) >> (i % 64)) & 1 != 0;
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
        let i = self.grown.find_succ(base);
        let ranges = self.grown.ranges();
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
            let bits = &self.alloc_bits_of(ChunkIdx(c));
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
    /// Inlined into the caller as far as the single-page fast path; the rest is a call.
    #[inline]
    pub fn alloc(&mut self, npages: usize) -> Result<Allocation, AllocError> {
        if npages == 1
            && let Some(a) = self.alloc_one_at_search_addr()
        {
            return Ok(a);
        }
        self.alloc_searched(npages, None)
    }

    /// [`PageAlloc::alloc`], telling `dirty` which runs of the result were not known to
    /// be zero.
    pub(crate) fn alloc_first_fit(
        &mut self,
        npages: usize,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Result<Allocation, AllocError> {
        if npages == 1
            && let Some(a) = self.alloc_one_at_search_addr()
        {
            if let Some(f) = dirty
                && a.zeroed_pages == 0
            {
                f(a.base, 1);
            }
            return Ok(a);
        }
        self.alloc_searched(npages, dirty)
    }

    /// First fit past the single-page fast path (which, for one page, has already looked
    /// at the search address's chunk): the search address's chunk for longer runs, then
    /// the tree.
    #[inline(never)]
    fn alloc_searched(
        &mut self,
        npages: usize,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Result<Allocation, AllocError> {
        check_npages(npages)?;
        let oom = AllocError::OutOfMemory {
            npages,
            constraints: Constraints::NONE,
        };
        // A search address above every grown chunk means nothing is free; a request at
        // least as large as one that failed since the last free fails again.
        if ChunkIdx::of(self.search_addr).0 >= self.end || npages >= self.doomed {
            return Err(oom);
        }
        let in_chunk = if npages == 1 {
            None
        } else {
            self.find_at_search_addr(npages)
        };
        let (addr, candidate) = match in_chunk {
            Some(f) => f,
            None => match self.find(npages) {
                Some(f) => f,
                None => {
                    self.doomed = npages;
                    // Not even one page is free: remember that until something is freed.
                    if npages == 1 {
                        self.search_addr = MAX_SEARCH_ADDR;
                    }
                    return Err(oom);
                }
            },
        };
        let a = self.alloc_found(addr, npages, dirty);
        // Only an allocation raises the search address.
        if self.search_addr < candidate {
            self.search_addr = candidate;
        }
        Ok(a)
    }

    /// Hands out the free run `[addr, addr + npages pages)` that a search found.
    pub(crate) fn alloc_found(
        &mut self,
        addr: u64,
        npages: usize,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Allocation {
        if let Some(f) = dirty {
            self.visit_dirty(addr, npages, f);
        }
        let zeroed_pages = self.alloc_range_unchecked(addr, npages);
        self.handed_out().set(addr, npages);
        Allocation {
            base: addr,
            npages,
            zeroed_pages,
        }
    }

    /// The fast path of `alloc`: a run of `npages` in the chunk the search address points
    /// into, at or after it, and the first free page there (the next search address).
    /// Go: the first part of `(*pageAlloc).alloc`, which always consults the chunk's
    /// summary; here a stale summary is not recomputed, as searching the bitmap costs
    /// about the same.
    #[inline]
    fn find_at_search_addr(&self, npages: usize) -> Option<(u64, u64)> {
        let from = chunk_page_index(self.search_addr);
        if PALLOC_CHUNK_PAGES - from < npages {
            return None;
        }
        let ci = ChunkIdx::of(self.search_addr);
        let leaf = self.summary[LEAF].cached(ci.0);
        if leaf.is_some_and(|s| s.max() < npages) {
            return None;
        }
        let Some((j, search_idx)) = self.alloc_bits_of(ci).find(npages, from) else {
            // A fresh summary that promised a run must be right; a stale one promised
            // nothing.
            assert!(
                leaf.is_none(),
                "pagealloc: bad summary data: {ci} summary {leaf:?} but no run of {npages} pages from page {from}"
            );
            return None;
        };
        Some((
            ci.base() + ((j as u64) << PAGE_SHIFT),
            ci.base() + ((search_idx as u64) << PAGE_SHIFT),
        ))
    }

    /// The lowest address of a free run of `npages` and a new search-address candidate.
    /// Relies on nothing below `search_addr` being free. Go: `(*pageAlloc).find`
    /// (stale entries are recomputed as they are read).
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
            // The entries to scan: the whole root, or the block of 8 below an entry
            // (`i` is 0 at the root).
            let entries_len = if l == 0 {
                self.summary[0].len()
            } else {
                SUMMARY_BLOCK_ENTRIES
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
            while j < entries_len {
                let sum = self.sum(l, i + j);
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
                 but its children summary[{l}][{i}..] are {:?} (search_addr {:#x}, j0 {j0})",
                l - 1,
                last_sum.0,
                last_sum.1,
                self.block(l, i),
                self.search_addr
            );
        }

        // Every level descended: `i` is a chunk whose summary promised a long enough run.
        let ci = ChunkIdx(i);
        let Some((j, search_idx)) = self.alloc_bits_of(ci).find(npages, 0) else {
            panic!(
                "pagealloc: bad summary data: {ci} summary {:?} but no run of {npages} pages",
                self.sum(LEAF, i)
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
        self.grown
            .find_addr_greater_equal(addr)
            .unwrap_or(MAX_SEARCH_ADDR)
    }

    /// Frees `[base, base + npages pages)`, which must be allocated grown memory.
    /// Go: `(*pageAlloc).free`.
    ///
    /// Inlined into the caller as far as the single-page fast path; the rest is a call.
    #[inline]
    pub fn free(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        if npages == 1 && base.is_multiple_of(PAGE_SIZE) && self.free_one_handed_out(base) {
            return Ok(());
        }
        self.free_checked(base, npages)
    }

    /// [`PageAlloc::free`] past its fast path.
    #[inline(never)]
    fn free_checked(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        if is_whole_chunk(base, npages) && self.free_chunk_handed_out(base) {
            return Ok(());
        }
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
        let i = chunk_page_index(addr);
        self.chunk_slot(ChunkIdx::of(addr))
            .is_some_and(|k| (self.chunks.word(k, ALLOC_WORDS + i / 64) >> (i % 64)) & 1 != 0)
    }

    /// Frees pages whose contents the caller has zeroed (e.g. emptied page tables): like
    /// [`PageAlloc::free`], and their zeroed bits are set, so the next allocation reports
    /// them as zero (not in Go, whose scavenger sets these bits on free memory). Without
    /// known-zero tracking ([`MetadataLayout::without_known_zero`]) exactly
    /// [`PageAlloc::free`].
    pub fn free_zeroed(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.free(base, npages)?;
        if self.layout.tracks_known_zero() {
            self.for_each_chunk_piece(base, npages, |chunks, k, i, n| {
                chunks.set_known_zero(k, i, n);
            });
        }
        Ok(())
    }

    /// Go's `free` without the checks. (Single pages take `free_one_handed_out`.)
    fn free_unchecked(&mut self, base: u64, npages: usize) {
        self.for_each_chunk_piece(base, npages, |chunks, k, i, n| {
            chunks.free_range(k, i, n);
        });
        self.update(base, npages, true, false);
        self.note_freed(base, npages);
    }

    /// Recomputes every summary from the bitmaps and checks every other invariant:
    /// zeroed pages are free, free pages are grown, handed-out pages are grown and
    /// allocated, nothing below the search address is
    /// free, the grown ranges are well formed, and the free-page count is right.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) -> Result<(), crate::InvariantError> {
        crate::check::check_invariants(self)
    }

    #[cfg_attr(not(any(feature = "testutil", feature = "inspect")), allow(dead_code))]
    /// The page-granular ranges that were grown. Go: `inUse`.
    pub(crate) fn grown_ranges(&self) -> &AddrRanges {
        &self.grown
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

pub(crate) fn check_npages(npages: usize) -> Result<(), AllocError> {
    if npages == 0 {
        return Err(AllocError::ZeroPages);
    }
    if npages > MAX_NPAGES {
        return Err(AllocError::TooManyPages { npages });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::errors::GrowError;
    use crate::layout::l2_blocks_of;
    use crate::ranges::AddrRange;
    use crate::testutil::HeapMetadata;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// An allocator over `regions`, grown with unknown contents.
    fn with_regions<'m>(md: &'m mut HeapMetadata, regions: &[AddrRange]) -> PageAlloc<'m> {
        let layout = MetadataLayout::for_regions(regions).unwrap();
        let mut pa = md.page_alloc(layout);
        for r in regions {
            pa.grow(*r, Contents::Unknown).unwrap();
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
        assert_eq!(
            pa.inspect().chunk_bounds(),
            Some((ChunkIdx(0), ChunkIdx(1)))
        );
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
        assert_eq!(pa.inspect().summary(LEAF, 0).unwrap().unpack(), (0, 5, 0));
        assert!(pa.inspect().summaries(SUMMARY_LEVELS).is_none());
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
        pa.grow(
            AddrRange::new(pages(8), pages(8) + pages(2)),
            Contents::Zeroed,
        )
        .unwrap();
        assert_eq!(pa.inspect().grown(), &[AddrRange::new(pages(3), pages(10))]);
        let a = pa.alloc(2).unwrap();
        assert_eq!((a.base, a.zeroed_pages), (pages(8), 2));
        pa.check_invariants().unwrap();
    }

    #[test]
    fn grow_errors_change_nothing() {
        let mut md = HeapMetadata::default();
        let layout = MetadataLayout::new(64 * MIB, 1).unwrap();
        let mut pa = md.page_alloc(layout);
        pa.grow(
            AddrRange::new(4 * MIB, 4 * MIB + 4 * MIB),
            Contents::Unknown,
        )
        .unwrap();
        let r = |b, l| AddrRange::new(b, l);
        assert_eq!(
            pa.grow(AddrRange::new(0, 0), Contents::Unknown),
            Err(GrowError::Empty { region: r(0, 0) })
        );
        assert_eq!(
            pa.grow(AddrRange::new(1, 1 + 4096), Contents::Unknown),
            Err(GrowError::Unaligned {
                region: r(1, 1 + 4096)
            })
        );
        assert_eq!(
            pa.grow(
                AddrRange::new(7 * MIB, 7 * MIB + 2 * MIB),
                Contents::Unknown
            ),
            Err(GrowError::Overlap {
                region: r(7 * MIB, 9 * MIB),
                existing: r(4 * MIB, 8 * MIB)
            })
        );
        assert_eq!(
            pa.grow(
                AddrRange::new(60 * MIB, 60 * MIB + 8 * MIB),
                Contents::Unknown
            ),
            Err(GrowError::BeyondSpan {
                region: r(60 * MIB, 68 * MIB),
                span_limit: 64 * MIB
            })
        );
        // The second 32 MiB block of chunks needs a bitmap block the pool does not have.
        assert_eq!(
            pa.grow(AddrRange::new(40 * MIB, 40 * MIB + MIB), Contents::Unknown),
            Err(GrowError::OutOfMetadata {
                region: r(40 * MIB, 41 * MIB),
                needed_blocks: 1,
                free_blocks: 0
            })
        );
        assert_eq!(pa.free_pages(), 1024);
        assert_eq!(pa.inspect().grown(), &[r(4 * MIB, 8 * MIB)]);
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
        let dense = (high.summary_entries() + high.chunk_map_entries()) * size_of::<AtomicU64>();
        // About 4.8 KiB of summaries and chunk map per GiB of span: 1.29 GB for 256 TiB.
        let per_gib = dense as u64 / (top / GIB);
        assert!(
            (4800..5000).contains(&per_gib),
            "{per_gib} bytes per GiB of span"
        );
        assert!(high.bytes() > 1000 * low.bytes());
    }

    #[test]
    fn metadata_cost_per_gib() {
        let layout = MetadataLayout::for_regions(&[AddrRange::new(0, 4 * GIB)]).unwrap();
        let per_gib = layout.bytes() as u64 / 4;
        // 64 KiB of bitmaps, 32 KiB of handed-out bits, 4 KiB of leaves, a little above.
        assert!(per_gib < 102 * 1024, "{per_gib} bytes per GiB");
        assert!(per_gib > 100 * 1024, "{per_gib} bytes per GiB");
    }

    #[test]
    fn too_small_metadata_is_refused() {
        let layout = MetadataLayout::new(GIB, 16).unwrap();
        let mut words: Vec<AtomicU64> =
            (0..layout.words() - 1).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(
            PageAlloc::new(layout, &mut words).err(),
            Some(LayoutError::TooSmall {
                needed_words: layout.words(),
                provided_words: layout.words() - 1
            })
        );
        assert_eq!(
            LayoutError::TooSmall {
                needed_words: 10,
                provided_words: 9
            }
            .to_string(),
            "metadata of 9 words is too small: the layout needs 10"
        );
        words.push(AtomicU64::new(0));
        assert!(PageAlloc::new(layout, &mut words).is_ok());
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
        assert_eq!(pa.alloc_range(pages(2), 2).unwrap().zeroed_pages, 0);
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
