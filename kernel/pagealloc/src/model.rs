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

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Debug;

use crate::consts::{
    PAGE_CACHE_PAGES, PAGE_SHIFT, PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES,
    PALLOC_CHUNKS_L2_ENTRIES,
};
use crate::pagealloc::{
    AllocError, Allocation, ChunkIdx, Constraints, Contents, GrowError, MAX_NPAGES, MetadataLayout,
    PageAlloc, RangeOpError,
};
use crate::pagecache::{FreeBatch, PageCache};
use crate::ranges::{AddrRange, MAX_ADDR_RANGES};
use crate::testutil::HeapMetadata;

/// Words of a chunk bitmap.
const CHUNK_WORDS: usize = PALLOC_CHUNK_PAGES / 64;

/// Ones in the low `n` bits, all 64 for `n >= 64`.
const fn low_mask(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1 << n) - 1 }
}

fn get_bit(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
}

/// Sets (`value`) or clears bits `[i, i + n)`, a word at a time.
fn put_bits(words: &mut [u64], i: usize, n: usize, value: bool) {
    let (mut i, end) = (i, i + n);
    while i < end {
        let b = i % 64;
        let k = (64 - b).min(end - i);
        let mask = low_mask(k) << b;
        if value {
            words[i / 64] |= mask;
        } else {
            words[i / 64] &= !mask;
        }
        i += k;
    }
}

/// Set bits in `[i, i + n)`.
fn count_bits(words: &[u64], i: usize, n: usize) -> usize {
    let (mut i, end) = (i, i + n);
    let mut count = 0;
    while i < end {
        let b = i % 64;
        let k = (64 - b).min(end - i);
        count += ((words[i / 64] >> b) & low_mask(k)).count_ones() as usize;
        i += k;
    }
    count
}

/// The first index in `[from, len)` whose bit equals `value`, or `len`. Skips whole words
/// that hold no such bit.
fn find_bit(words: &[u64], from: usize, len: usize, value: bool) -> usize {
    let mut i = from;
    while i < len {
        let w = if value { words[i / 64] } else { !words[i / 64] };
        let w = w >> (i % 64);
        if w != 0 {
            return (i + w.trailing_zeros() as usize).min(len);
        }
        i = (i / 64 + 1) * 64;
    }
    len
}

fn page_idx(addr: u64) -> usize {
    (addr >> PAGE_SHIFT) as usize
}

fn page_addr(idx: usize) -> u64 {
    (idx as u64) << PAGE_SHIFT
}

/// A plain first-fit allocator over a bitmap with one bit per page (set = free).
///
/// The reference model's free bitmap, and the "linear first-fit bitmap" baseline of the
/// benchmarks: `alloc` walks the bitmap from address 0, skipping words with no free
/// page, and takes the first run that is long enough.
#[derive(Clone, Debug)]
pub struct FirstFitBitmap {
    free: Vec<u64>,
    /// Pages the bitmap covers.
    npages: usize,
    free_pages: usize,
}

impl FirstFitBitmap {
    /// A bitmap over `[0, limit)` (rounded up to a page) with no free page.
    pub fn new(limit: u64) -> FirstFitBitmap {
        let npages = limit.div_ceil(PAGE_SIZE) as usize;
        FirstFitBitmap {
            free: vec![0; npages.div_ceil(64)],
            npages,
            free_pages: 0,
        }
    }

    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Pages the bitmap covers.
    pub fn capacity_pages(&self) -> usize {
        self.npages
    }

    /// Whether the page at `addr` is free (pages beyond the bitmap are not).
    pub fn is_free(&self, addr: u64) -> bool {
        addr >> PAGE_SHIFT < self.npages as u64 && get_bit(&self.free, page_idx(addr))
    }

    /// Free pages in `[base, base + npages pages)`, which must lie inside the bitmap.
    pub fn count_free(&self, base: u64, npages: usize) -> usize {
        count_bits(&self.free, page_idx(base), npages)
    }

    /// Makes `[base, base + npages pages)` free; none of it may be free already.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is already free.
    pub fn add_free(&mut self, base: u64, npages: usize) {
        let i = page_idx(base);
        assert!(
            i + npages <= self.npages,
            "first fit: range beyond the bitmap"
        );
        assert_eq!(
            count_bits(&self.free, i, npages),
            0,
            "first fit: page already free"
        );
        put_bits(&mut self.free, i, npages, true);
        self.free_pages += npages;
    }

    /// Marks `[base, base + npages pages)` allocated; all of it must be free.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is not free.
    pub fn take(&mut self, base: u64, npages: usize) {
        let i = page_idx(base);
        assert!(
            i + npages <= self.npages,
            "first fit: range beyond the bitmap"
        );
        assert_eq!(
            count_bits(&self.free, i, npages),
            npages,
            "first fit: page not free"
        );
        put_bits(&mut self.free, i, npages, false);
        self.free_pages -= npages;
    }

    /// The first maximal run of free pages that ends above `from`, clipped to start at
    /// `from`, as `(base, npages)`.
    pub fn next_run(&self, from: u64) -> Option<(u64, usize)> {
        let from = page_idx(from);
        if from >= self.npages {
            return None;
        }
        let start = find_bit(&self.free, from, self.npages, true);
        if start == self.npages {
            return None;
        }
        let end = find_bit(&self.free, start, self.npages, false);
        Some((page_addr(start), end - start))
    }

    /// The lowest address where `npages` free pages follow each other.
    pub fn first_fit(&self, npages: usize) -> Option<u64> {
        let mut from = 0;
        while let Some((base, n)) = self.next_run(from) {
            if n >= npages {
                return Some(base);
            }
            from = base + page_addr(n);
        }
        None
    }

    /// Allocates `npages` pages at the lowest address where they fit.
    pub fn alloc(&mut self, npages: usize) -> Option<u64> {
        if npages == 0 {
            return None;
        }
        let base = self.first_fit(npages)?;
        self.take(base, npages);
        Some(base)
    }

    /// Frees `[base, base + npages pages)`, which must be allocated.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is already free.
    pub fn free(&mut self, base: u64, npages: usize) {
        self.add_free(base, npages);
    }
}

/// What the model knows about one page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageState {
    /// Not covered by any grow (or beyond the span).
    NotGrown,
    /// Grown and free; `zeroed` if known to be zero.
    Free {
        /// The page is known to hold zeros.
        zeroed: bool,
    },
    /// Grown, allocated and handed out to a caller.
    HandedOut,
    /// Grown, allocated and held by a page cache or a free batch.
    Held,
}

/// The model's page cache: the same three words as [`PageCache`].
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct ModelCache {
    /// First page of the 64-page block.
    pub base: u64,
    /// Bit `i`: page `i` of the block is free in the cache.
    pub cache: u64,
    /// Bit `i`: page `i` is in the cache and known to be zero.
    pub scav: u64,
}

impl ModelCache {
    /// The same cache as `c`.
    pub fn of(c: &PageCache) -> ModelCache {
        ModelCache {
            base: c.base(),
            cache: c.cache(),
            scav: c.scav(),
        }
    }

    /// Whether the cache holds no page.
    pub fn is_empty(&self) -> bool {
        self.cache == 0
    }

    /// Takes the lowest run of `npages` pages of the cache: tries every start in turn.
    /// Returns its address and how many of its pages were known to be zero.
    pub fn alloc(&mut self, npages: usize) -> Option<(u64, usize)> {
        if npages == 0 || npages > PAGE_CACHE_PAGES {
            return None;
        }
        let start = (0..=PAGE_CACHE_PAGES - npages)
            .find(|&s| (s..s + npages).all(|i| self.cache >> i & 1 != 0))?;
        let mask = low_mask(npages) << start;
        let zeroed = (self.scav & mask).count_ones() as usize;
        self.cache &= !mask;
        self.scav &= !mask;
        Some((self.base + page_addr(start), zeroed))
    }
}

/// A slow, obviously correct model of [`PageAlloc`] with the same results and errors.
///
/// Pages are tracked over `[0, span_limit)`, the span rounded up to a chunk as
/// [`MetadataLayout`] does. The model also tracks which blocks of
/// [`PALLOC_CHUNKS_L2_ENTRIES`] chunks have bitmaps, to predict
/// [`GrowError::OutOfMetadata`] and what [`PageCache::flush`] sees.
#[derive(Clone, Debug)]
pub struct FlatModel {
    span_limit: u64,
    /// Blocks of chunk bitmaps the allocator's pool holds.
    l2_blocks: usize,
    block_used: Vec<bool>,
    grown: Vec<u64>,
    /// Set bits of `grown`.
    grown_pages: usize,
    free: FirstFitBitmap,
    zeroed: Vec<u64>,
    /// Allocated pages held by a cache or batch (the rest of the allocated are handed
    /// out).
    held: Vec<u64>,
}

impl FlatModel {
    /// A model of `PageAlloc::new(MetadataLayout::new(span_limit, l2_blocks)?, ..)`.
    pub fn new(span_limit: u64, l2_blocks: usize) -> FlatModel {
        let span_limit = span_limit.next_multiple_of(PALLOC_CHUNK_BYTES);
        let span_chunks = (span_limit / PALLOC_CHUNK_BYTES) as usize;
        let blocks = span_chunks.div_ceil(PALLOC_CHUNKS_L2_ENTRIES);
        let words = page_idx(span_limit).div_ceil(64);
        FlatModel {
            span_limit,
            l2_blocks: l2_blocks.min(blocks),
            block_used: vec![false; blocks],
            grown: vec![0; words],
            grown_pages: 0,
            free: FirstFitBitmap::new(span_limit),
            zeroed: vec![0; words],
            held: vec![0; words],
        }
    }

    /// One past the highest address the model covers (a chunk multiple).
    pub fn span_limit(&self) -> u64 {
        self.span_limit
    }

    fn span_pages(&self) -> usize {
        page_idx(self.span_limit)
    }

    /// The state of the page that holds `addr`.
    pub fn state(&self, addr: u64) -> PageState {
        if addr >= self.span_limit || !get_bit(&self.grown, page_idx(addr)) {
            PageState::NotGrown
        } else if self.free.is_free(addr) {
            PageState::Free {
                zeroed: get_bit(&self.zeroed, page_idx(addr)),
            }
        } else if get_bit(&self.held, page_idx(addr)) {
            PageState::Held
        } else {
            PageState::HandedOut
        }
    }

    /// The free bitmap.
    pub fn first_fit(&self) -> &FirstFitBitmap {
        &self.free
    }

    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free.free_pages()
    }

    /// Grown pages.
    pub fn total_pages(&self) -> usize {
        self.grown_pages
    }

    /// The grown memory as maximal runs of grown pages: the coalesced ranges
    /// [`PageAlloc::in_use`] reports.
    pub fn grown_ranges(&self) -> Vec<AddrRange> {
        let (mut out, mut i, n) = (Vec::new(), 0, self.span_pages());
        loop {
            let start = find_bit(&self.grown, i, n, true);
            if start == n {
                return out;
            }
            let end = find_bit(&self.grown, start, n, false);
            out.push(AddrRange::new(page_addr(start), page_addr(end)));
            i = end;
        }
    }

    /// Whether chunk `ci` has a bitmap: its block was touched by a grow.
    pub fn has_bitmap(&self, ci: ChunkIdx) -> bool {
        self.block_used.get(ci.l1()).copied().unwrap_or(false)
    }

    /// The bitmaps [`PageAlloc::chunk_data`] should hold for chunk `ci`, as
    /// `(alloc, zeroed)` words, or `None` if it should have none. Pages that are not free
    /// (allocated, or never grown) have their alloc bit set.
    pub fn chunk_words(&self, ci: ChunkIdx) -> Option<([u64; CHUNK_WORDS], [u64; CHUNK_WORDS])> {
        if !self.has_bitmap(ci) {
            return None;
        }
        let w0 = ci.0 * CHUNK_WORDS;
        let alloc = core::array::from_fn(|k| !self.free.free.get(w0 + k).copied().unwrap_or(0));
        let zeroed = core::array::from_fn(|k| self.zeroed.get(w0 + k).copied().unwrap_or(0));
        Some((alloc, zeroed))
    }

    /// Makes `[base, base + size_bytes)` available. Same checks, in the same order, as
    /// [`PageAlloc::grow`].
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
        let limit = base.saturating_add(size_bytes);
        let region = AddrRange::new(base, limit);
        if limit > self.span_limit {
            return Err(GrowError::BeyondSpan {
                region,
                span_limit: self.span_limit,
            });
        }
        let ranges = self.grown_ranges();
        if let Some(existing) = ranges.iter().find(|r| r.overlaps(region)) {
            return Err(GrowError::Overlap {
                region,
                existing: *existing,
            });
        }
        let (b0, b1) = (ChunkIdx::of(base).l1(), ChunkIdx::of(limit - 1).l1());
        let needed_blocks = (b0..=b1).filter(|&b| !self.block_used[b]).count();
        let free_blocks = self.l2_blocks - self.block_used.iter().filter(|&&u| u).count();
        if needed_blocks > free_blocks {
            return Err(GrowError::OutOfMetadata {
                region,
                needed_blocks,
                free_blocks,
            });
        }
        let touches = ranges.iter().any(|r| r.limit == base || r.base == limit);
        if !touches && ranges.len() == MAX_ADDR_RANGES {
            return Err(GrowError::TooManyRanges {
                region,
                capacity: MAX_ADDR_RANGES,
            });
        }
        self.block_used[b0..=b1].fill(true);
        let npages = page_idx(size_bytes);
        put_bits(&mut self.grown, page_idx(base), npages, true);
        self.grown_pages += npages;
        self.free.add_free(base, npages);
        put_bits(
            &mut self.zeroed,
            page_idx(base),
            npages,
            contents == Contents::Zeroed,
        );
        Ok(())
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

    /// Marks a free range allocated and returns how many of its pages were zero.
    fn take(&mut self, base: u64, npages: usize) -> usize {
        let zeroed = count_bits(&self.zeroed, page_idx(base), npages);
        self.free.take(base, npages);
        put_bits(&mut self.zeroed, page_idx(base), npages, false);
        zeroed
    }

    /// Lowest-address first fit. Same results as [`PageAlloc::alloc`].
    pub fn alloc(&mut self, npages: usize) -> Result<Allocation, AllocError> {
        Self::check_npages(npages)?;
        let Some(base) = self.free.first_fit(npages) else {
            return Err(AllocError::OutOfMemory {
                npages,
                constraints: Constraints::NONE,
            });
        };
        let zeroed_pages = self.take(base, npages);
        Ok(Allocation {
            base,
            npages,
            zeroed_pages,
        })
    }

    /// The lowest address `a` with `a % (align_pages pages) == 0`, `a >= min_addr`,
    /// `a + npages pages <= max_addr` and every page free. Same results as
    /// [`PageAlloc::alloc_constrained`].
    pub fn alloc_constrained(
        &mut self,
        npages: usize,
        c: Constraints,
    ) -> Result<Allocation, AllocError> {
        Self::check_npages(npages)?;
        if !c.align_pages.is_power_of_two() || c.align_pages > MAX_NPAGES {
            return Err(AllocError::BadAlignment {
                align_pages: c.align_pages,
            });
        }
        if c == Constraints::NONE {
            return self.alloc(npages);
        }
        let align = u128::from(PAGE_SIZE) * c.align_pages as u128;
        let need = u128::from(PAGE_SIZE) * npages as u128;
        let mut from = 0;
        // Runs are maximal and in address order, so the first run with a fit holds the
        // lowest one.
        while let Some((run_base, run_pages)) = self.free.next_run(from) {
            let run_end = u128::from(run_base) + u128::from(page_addr(run_pages));
            let a = u128::from(run_base.max(c.min_addr)).next_multiple_of(align);
            if a >= u128::from(c.max_addr) {
                break;
            }
            if a + need <= run_end && a + need <= u128::from(c.max_addr) {
                let base = a as u64;
                let zeroed_pages = self.take(base, npages);
                return Ok(Allocation {
                    base,
                    npages,
                    zeroed_pages,
                });
            }
            from = run_end as u64;
        }
        Err(AllocError::OutOfMemory {
            npages,
            constraints: c,
        })
    }

    /// The checks every range operation starts with: non-empty, page aligned, grown.
    fn check_range(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        if npages == 0 {
            return Err(RangeOpError::ZeroPages { base });
        }
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(RangeOpError::Unaligned { base });
        }
        let limit = u128::from(base) + u128::from(PAGE_SIZE) * npages as u128;
        let mut p = base;
        while u128::from(p) < limit {
            if self.state(p) == PageState::NotGrown {
                return Err(RangeOpError::NotGrown {
                    base,
                    npages,
                    page: p,
                });
            }
            p += PAGE_SIZE;
        }
        Ok(())
    }

    /// The first page of a grown range that is free (`free`) or allocated (`!free`).
    fn first_page(&self, base: u64, npages: usize, free: bool) -> Option<u64> {
        (0..npages)
            .map(|k| base + page_addr(k))
            .find(|&p| matches!(self.state(p), PageState::Free { .. }) == free)
    }

    /// What [`FlatModel::alloc_range`] would return, without changing anything.
    pub fn check_alloc_range(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.check_range(base, npages)?;
        match self.first_page(base, npages, false) {
            Some(page) => Err(RangeOpError::NotFree { base, npages, page }),
            None => Ok(()),
        }
    }

    /// Reserves a grown, free range. Same results as [`PageAlloc::alloc_range`].
    pub fn alloc_range(&mut self, base: u64, npages: usize) -> Result<usize, RangeOpError> {
        self.check_alloc_range(base, npages)?;
        Ok(self.take(base, npages))
    }

    /// What [`FlatModel::free`] would return, without changing anything.
    ///
    /// The first page that is not handed out decides: free is
    /// [`RangeOpError::NotAllocated`], held is [`RangeOpError::Held`].
    pub fn check_free(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.check_range(base, npages)?;
        let first = (0..npages)
            .map(|k| base + page_addr(k))
            .find(|&p| self.state(p) != PageState::HandedOut);
        match first.map(|p| (p, self.state(p))) {
            Some((page, PageState::Held)) => Err(RangeOpError::Held { base, npages, page }),
            Some((page, _)) => Err(RangeOpError::NotAllocated { base, npages, page }),
            None => Ok(()),
        }
    }

    /// What [`crate::FreeBatch::free`] of `addr` into a batch that is not full and of
    /// the same allocator would return.
    pub fn check_batch_free(&self, addr: u64) -> Result<(), RangeOpError> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(RangeOpError::Unaligned { base: addr });
        }
        if !self.has_bitmap(ChunkIdx::of(addr)) {
            return Err(RangeOpError::NotGrown {
                base: addr,
                npages: 1,
                page: addr,
            });
        }
        if self.state(addr) != PageState::HandedOut {
            return Err(RangeOpError::NotHandedOut { page: addr });
        }
        Ok(())
    }

    /// A handed-out page goes to a free batch (is held).
    pub fn batch_free(&mut self, addr: u64) -> Result<(), RangeOpError> {
        self.check_batch_free(addr)?;
        put_bits(&mut self.held, page_idx(addr), 1, true);
        Ok(())
    }

    /// Held pages are handed out (from a cache or batch).
    ///
    /// # Panics
    /// If a page is not held.
    pub fn hand_out(&mut self, base: u64, npages: usize) {
        for k in 0..npages {
            let p = base + page_addr(k);
            assert_eq!(self.state(p), PageState::Held, "model: hand out {p:#x}");
        }
        put_bits(&mut self.held, page_idx(base), npages, false);
    }

    /// What returning these held single pages of a batch would say: the first page
    /// that is not grown, else the first that is free, else the first handed out.
    pub fn check_return(&self, pages: &[u64]) -> Result<(), RangeOpError> {
        let (base, npages) = (pages.first().copied().unwrap_or(0), pages.len());
        for &page in pages {
            match self.state(page) {
                PageState::NotGrown => return Err(RangeOpError::NotGrown { base, npages, page }),
                PageState::Free { .. } => {
                    return Err(RangeOpError::NotAllocated { base, npages, page });
                }
                PageState::HandedOut => return Err(RangeOpError::NotHeld { base, npages, page }),
                PageState::Held => {}
            }
        }
        Ok(())
    }

    /// Frees held single pages returned by a batch.
    pub fn return_pages(&mut self, pages: &[u64]) -> Result<(), RangeOpError> {
        self.check_return(pages)?;
        for &p in pages {
            put_bits(&mut self.held, page_idx(p), 1, false);
            self.free.free(p, 1);
        }
        Ok(())
    }

    /// Pages held by caches and batches.
    pub fn held_pages(&self) -> usize {
        self.held.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The handed-out bits [`PageAlloc`] should hold for chunk `ci`.
    pub fn handed_out_words(&self, ci: ChunkIdx) -> [u64; CHUNK_WORDS] {
        let w0 = ci.0 * CHUNK_WORDS;
        core::array::from_fn(|k| {
            let alloc = !self.free.free.get(w0 + k).copied().unwrap_or(!0);
            let grown = self.grown.get(w0 + k).copied().unwrap_or(0);
            let held = self.held.get(w0 + k).copied().unwrap_or(0);
            alloc & grown & !held
        })
    }

    /// Frees a grown, allocated range; freed pages are not known to be zero. Same
    /// results as [`PageAlloc::free`].
    pub fn free(&mut self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.check_free(base, npages)?;
        self.free.free(base, npages);
        Ok(())
    }

    /// Maximal free runs in address order, as `(base, npages)`.
    pub fn free_runs(&self) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((base, n)) = self.free.next_run(from) {
            out.push((base, n));
            from = base + page_addr(n);
        }
        out
    }

    /// The longest free run.
    pub fn largest_free_run(&self) -> usize {
        self.free_runs().iter().map(|&(_, n)| n).max().unwrap_or(0)
    }

    /// Moves the free pages of the 64-page block that holds the lowest free page into a
    /// cache; they count as allocated. An empty cache if nothing is free. Same result as
    /// [`PageAlloc::alloc_to_cache`].
    pub fn alloc_to_cache(&mut self) -> ModelCache {
        let Some((first, _)) = self.free.next_run(0) else {
            return ModelCache::default();
        };
        let base = first & !(page_addr(PAGE_CACHE_PAGES) - 1);
        let (mut cache, mut scav) = (0, 0);
        for i in 0..PAGE_CACHE_PAGES {
            let page = base + page_addr(i);
            if let PageState::Free { zeroed } = self.state(page) {
                cache |= 1 << i;
                scav |= u64::from(zeroed) << i;
                self.take(page, 1);
                put_bits(&mut self.held, page_idx(page), 1, true);
            }
        }
        ModelCache { base, cache, scav }
    }

    /// What [`FlatModel::flush`] would return, without changing anything.
    pub fn check_flush(&self, c: &ModelCache) -> Result<(), RangeOpError> {
        if c.is_empty() {
            return Ok(());
        }
        let (base, npages) = (c.base, PAGE_CACHE_PAGES);
        if !self.has_bitmap(ChunkIdx::of(base)) {
            return Err(RangeOpError::NotGrown {
                base,
                npages,
                page: base,
            });
        }
        let cached = (0..PAGE_CACHE_PAGES)
            .filter(|&i| c.cache >> i & 1 != 0)
            .map(|i| base + page_addr(i));
        if let Some(page) = cached
            .clone()
            .find(|&p| self.state(p) == PageState::NotGrown)
        {
            return Err(RangeOpError::NotGrown { base, npages, page });
        }
        if let Some(page) = cached
            .clone()
            .find(|&p| matches!(self.state(p), PageState::Free { .. }))
        {
            return Err(RangeOpError::NotAllocated { base, npages, page });
        }
        if let Some(page) = cached
            .clone()
            .find(|&p| self.state(p) == PageState::HandedOut)
        {
            return Err(RangeOpError::NotHeld { base, npages, page });
        }
        Ok(())
    }

    /// Returns a cache's pages with their zeroed bits and empties it. Same results as
    /// [`PageCache::flush`].
    pub fn flush(&mut self, c: &mut ModelCache) -> Result<(), RangeOpError> {
        self.check_flush(c)?;
        for i in 0..PAGE_CACHE_PAGES {
            if c.cache >> i & 1 != 0 {
                let page = base_page(c.base, i);
                put_bits(&mut self.held, page_idx(page), 1, false);
                self.free.free(page, 1);
                put_bits(&mut self.zeroed, page_idx(page), 1, c.scav >> i & 1 != 0);
            }
        }
        *c = ModelCache::default();
        Ok(())
    }

    /// Differences between `pa` and the model: counts, grown ranges, every chunk bitmap,
    /// free runs and the largest free run.
    pub fn diff(&self, pa: &PageAlloc<'_>) -> Option<String> {
        let mut out = String::new();
        if pa.free_pages() != self.free_pages() {
            out += &format!(
                "free pages: model {}, allocator {}\n",
                self.free_pages(),
                pa.free_pages()
            );
        }
        if pa.total_pages() != self.total_pages() {
            out += &format!(
                "total pages: model {}, allocator {}\n",
                self.total_pages(),
                pa.total_pages()
            );
        }
        let ranges = self.grown_ranges();
        if pa.in_use() != ranges.as_slice() {
            out += &format!(
                "grown ranges: model {ranges:?}, allocator {:?}\n",
                pa.in_use()
            );
        }
        for c in 0..self.block_used.len() * PALLOC_CHUNKS_L2_ENTRIES {
            let ci = ChunkIdx(c);
            let got = pa
                .chunk_data(ci)
                .map(|d| (*d.alloc.words(), *d.scavenged.words()));
            let want = self.chunk_words(ci);
            if got != want {
                out += &format!("{ci}: model (alloc, zeroed) {want:x?}, allocator {got:x?}\n");
            }
            let got = crate::testutil::handed_out_words(pa, ci);
            let want = self.handed_out_words(ci);
            if got != want {
                out += &format!("{ci}: model handed-out bits {want:x?}, allocator {got:x?}\n");
            }
        }
        let runs: Vec<(u64, usize)> = pa.free_runs().collect();
        let want_runs = self.free_runs();
        if runs != want_runs {
            out += &format!("free runs: model {want_runs:x?}, allocator {runs:x?}\n");
        }
        if pa.largest_free_run() != self.largest_free_run() {
            out += &format!(
                "largest free run: model {}, allocator {}\n",
                self.largest_free_run(),
                pa.largest_free_run()
            );
        }
        (!out.is_empty()).then_some(out)
    }
}

fn base_page(base: u64, i: usize) -> u64 {
    base + page_addr(i)
}

/// Page caches in a run of [`run_ops`], as if that many CPUs each kept one.
pub const CPUS: usize = 4;

/// The kinds of deliberately bad frees [`Op::BadFree`] makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BadFree {
    /// A range freed before (and not reallocated since, else the op is skipped).
    Double,
    /// A live allocation's base plus a sub-page offset.
    Unaligned,
    /// A live allocation's base with zero pages.
    ZeroPages,
    /// A live allocation extended down by some pages.
    OverlapBelow,
    /// A live allocation extended up by some pages.
    OverlapAbove,
    /// An arbitrary page in or just beyond the span: free, not grown or in a cache.
    Foreign,
}

/// One step of a [`run_ops`] sequence. Indices select among remembered state modulo its
/// length, so any value is meaningful; an op that has nothing to act on is skipped.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Op {
    /// Grow `[base_page, base_page + npages)` pages.
    Grow {
        /// First page (address / 4096).
        base_page: u64,
        /// Pages.
        npages: u64,
        /// [`Contents::Zeroed`] if set, else [`Contents::Unknown`].
        zeroed: bool,
    },
    /// Grow with raw byte values, to exercise the refusals.
    GrowBytes {
        /// Base address.
        base: u64,
        /// Size in bytes.
        size_bytes: u64,
        /// [`Contents::Zeroed`] if set.
        zeroed: bool,
    },
    /// [`PageAlloc::alloc`].
    Alloc {
        /// Pages.
        npages: usize,
    },
    /// [`PageAlloc::alloc_constrained`].
    AllocConstrained {
        /// Pages.
        npages: usize,
        /// Alignment in pages (not necessarily a power of two).
        align_pages: usize,
        /// Lowest address.
        min_addr: u64,
        /// Exclusive limit.
        max_addr: u64,
    },
    /// [`PageAlloc::alloc_constrained`] with a window placed on the model's free run
    /// number `run`: from `offset` pages in, `npages + slack` pages long, so that tight
    /// and exact fits (and near misses) are common.
    AllocConstrainedInFree {
        /// Free run (modulo their number).
        run: usize,
        /// Pages into the run (modulo its length).
        offset: usize,
        /// Pages.
        npages: usize,
        /// Alignment in pages.
        align_pages: usize,
        /// Window pages beyond `npages`.
        slack: usize,
    },
    /// [`PageAlloc::alloc_range`] of part of the model's free run number `run`: from
    /// `offset` pages in, at most `npages` pages.
    AllocRangeInFree {
        /// Free run (modulo their number).
        run: usize,
        /// Pages into the run (modulo its length).
        offset: usize,
        /// Pages, clipped to the run.
        npages: usize,
    },
    /// [`PageAlloc::alloc_range`] of an arbitrary range.
    AllocRange {
        /// Base address.
        base: u64,
        /// Pages.
        npages: usize,
    },
    /// Frees live allocation `index`.
    Free {
        /// Live allocation (modulo their number).
        index: usize,
    },
    /// Frees part of live allocation `index`: `npages` pages from `skip` pages in.
    FreePart {
        /// Live allocation (modulo their number).
        index: usize,
        /// Pages skipped (modulo the allocation's length).
        skip: usize,
        /// Pages freed (clipped to what is left, at least 1).
        npages: usize,
    },
    /// A free that must be refused; skipped when the model says it would succeed.
    BadFree {
        /// How the range is made.
        kind: BadFree,
        /// Live or freed allocation the range derives from.
        index: usize,
        /// Extra pages, offset or address the kind uses.
        delta: u64,
    },
    /// [`PageAlloc::free`] of an arbitrary range; skipped when the model says it would
    /// succeed (that would free pages the run still tracks as live).
    FreeRange {
        /// Base address.
        base: u64,
        /// Pages.
        npages: usize,
    },
    /// Flushes CPU `cpu`'s cache if it holds pages, then refills it with
    /// [`PageAlloc::alloc_to_cache`].
    CacheFill {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// [`PageCache::alloc`] from CPU `cpu`'s cache.
    CacheAlloc {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Pages.
        npages: usize,
    },
    /// [`PageCache::flush`] of CPU `cpu`'s cache.
    CacheFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// Flushes again a copy of the cache CPU `cpu` flushed last; skipped unless the model
    /// says it is refused.
    StaleFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// Flushes a made-up cache; skipped unless the model says it is refused.
    ForgedFlush {
        /// Any page of the block (rounded down to 64 pages).
        base_page: u64,
        /// Cache bits (0 becomes 1).
        cache: u64,
        /// Zeroed bits (masked by `cache`).
        scav: u64,
    },
    /// [`FreeBatch::free`] into CPU `cpu`'s batch of one page of live allocation `index`
    /// (`skip` pages in). A full batch must refuse it first; then half is returned.
    BatchFree {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Live allocation (modulo their number).
        index: usize,
        /// Pages into it (modulo its length).
        skip: usize,
    },
    /// [`FreeBatch::alloc`] from CPU `cpu`'s batch.
    BatchAlloc {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// [`FreeBatch::return_half`] (`half`) or [`FreeBatch::flush`] of CPU `cpu`'s batch.
    BatchFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Return only the older half.
        half: bool,
    },
    /// [`FreeBatch::free`] of a page that is not handed out: held by a cache or batch
    /// (`kind` 0), freed before (1), anywhere (2), or unaligned (3); skipped when the
    /// model says it would succeed.
    BadBatchFree {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Which page (modulo 4).
        kind: u8,
        /// Selects among the candidates.
        index: usize,
        /// Address or offset.
        delta: u64,
    },
    /// [`PageAlloc::free`] (`how` 0), [`PageAlloc::free_zeroed`] (1) or
    /// [`PageAlloc::alloc_range`] (2) of `npages` from a page a cache or batch holds:
    /// refused.
    HeldFree {
        /// Held page (modulo their number).
        index: usize,
        /// Pages.
        npages: usize,
        /// Which entry point (modulo 3).
        how: u8,
    },
    /// CPU `cpu`'s cache and batch flushed into another allocator, and a page of that
    /// allocator freed into the batch: refused while they hold pages.
    ForeignFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
}

/// How a [`run_ops_with`] run is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunConfig {
    /// The allocator's span limit.
    pub span_limit: u64,
    /// Blocks of chunk bitmaps in the pool; `usize::MAX` for every block of the span.
    pub l2_blocks: usize,
    /// Compare the full state (every bitmap, the free runs, held pages) every this many
    /// ops, and always after a refused op and at the end; 0: only at the end, for big
    /// spans where one full check costs as much as thousands of ops. The free and total
    /// counts are compared after every op, the invariants checked after every op when
    /// this is 1 and with each full comparison otherwise.
    pub full_check_every: usize,
}

impl RunConfig {
    /// Every block of the span, full comparison after every op.
    pub const fn new(span_limit: u64) -> RunConfig {
        RunConfig {
            span_limit,
            l2_blocks: usize::MAX,
            full_check_every: 1,
        }
    }
}

/// What happened in a run, for tests that check their ops do something.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RunStats {
    /// Ops applied (not skipped).
    pub applied: usize,
    /// Ops skipped (nothing to act on, or a "bad" op the model says would succeed).
    pub skipped: usize,
    /// Successful grows.
    pub grows: usize,
    /// Refused grows.
    pub grow_errors: usize,
    /// Successful `alloc`/`alloc_constrained`.
    pub allocs: usize,
    /// Failed `alloc`/`alloc_constrained` (any error).
    pub alloc_errors: usize,
    /// Of the successful allocations, those with `align_pages > 1` or a window.
    pub constrained_allocs: usize,
    /// Successful `alloc_range`.
    pub range_allocs: usize,
    /// Refused `alloc_range`.
    pub range_alloc_errors: usize,
    /// Valid frees (whole or partial).
    pub frees: usize,
    /// Refused frees.
    pub free_errors: usize,
    /// Caches filled with at least one page.
    pub cache_fills: usize,
    /// Successful cache allocations.
    pub cache_allocs: usize,
    /// Flushes of non-empty caches.
    pub flushes: usize,
    /// Refused flushes.
    pub flush_errors: usize,
    /// Pages freed into batches.
    pub batch_frees: usize,
    /// Pages allocated from batches.
    pub batch_allocs: usize,
    /// Refused frees into batches (not counting full batches).
    pub batch_free_errors: usize,
    /// Frees refused because a cache or batch holds the page.
    pub held_refusals: usize,
    /// Refused flushes into another allocator.
    pub foreign_refusals: usize,
    /// Pages known to be zero that allocations reported.
    pub zeroed_pages: usize,
}

/// Runs `ops` on a [`PageAlloc`] over `span_limit` and on a [`FlatModel`]; see
/// [`run_ops_with`].
pub fn run_ops(span_limit: u64, ops: &[Op]) -> Result<RunStats, String> {
    run_ops_with(RunConfig::new(span_limit), ops)
}

/// Runs `ops` on a [`PageAlloc`] (with [`HeapMetadata`]) and on a [`FlatModel`] and
/// demands the same result from both for every op. After every op the allocator's
/// invariants are checked and its counts compared; the full state is compared as
/// `config` says. At the end every cache is flushed and every live allocation freed,
/// which must leave all grown memory free.
///
/// Returns a description of the first difference, with the op's index.
///
/// # Panics
/// If the allocator panics, or `config.span_limit` is beyond the address space.
pub fn run_ops_with(config: RunConfig, ops: &[Op]) -> Result<RunStats, String> {
    let layout = MetadataLayout::new(config.span_limit, config.l2_blocks)
        .unwrap_or_else(|e| panic!("model run: {e}"));
    let mut md = HeapMetadata::new(&layout);
    let pa = PageAlloc::new(layout, md.metadata()).map_err(|e| format!("PageAlloc::new: {e}"))?;
    // Another allocator, for foreign flushes, with one page handed out.
    let other_layout = MetadataLayout::new(PALLOC_CHUNK_BYTES, 1).expect("one chunk");
    let mut other_md = HeapMetadata::new(&other_layout);
    let mut other =
        PageAlloc::new(other_layout, other_md.metadata()).expect("metadata sized from layout");
    other
        .grow(0, PALLOC_CHUNK_BYTES, Contents::Unknown)
        .expect("one chunk");
    let other_page = other.alloc(1).expect("a free page").base;
    let mut h = Harness {
        pa,
        model: FlatModel::new(config.span_limit, config.l2_blocks),
        other,
        other_page,
        live: Vec::new(),
        freed: Vec::new(),
        caches: core::array::from_fn(|_| (PageCache::empty(), ModelCache::default())),
        batches: core::array::from_fn(|_| (FreeBatch::new(), Vec::new())),
        flushed: [None; CPUS],
        stats: RunStats::default(),
        refused: false,
        full: config.full_check_every == 1,
    };
    for (k, op) in ops.iter().enumerate() {
        let at = |e: String| format!("op #{k} {op:?}: {e}");
        h.refused = false;
        h.step(op).map_err(at)?;
        let every = config.full_check_every;
        let full = every != 0 && (k % every == 0 || h.refused);
        h.check(full).map_err(at)?;
    }
    h.drain()
        .map_err(|e| format!("draining after {} ops: {e}", ops.len()))?;
    Ok(h.stats)
}

/// Both allocators and what the run remembers about them.
struct Harness<'m> {
    pa: PageAlloc<'m>,
    model: FlatModel,
    /// Another allocator, for foreign flushes, and a page it handed out.
    other: PageAlloc<'m>,
    other_page: u64,
    /// Allocations the caller holds, `(base, npages)`.
    live: Vec<(u64, usize)>,
    /// Recently freed ranges, for double frees.
    freed: Vec<(u64, usize)>,
    caches: [(PageCache<'m>, ModelCache); CPUS],
    /// Each CPU's free batch and the pages the model says it holds, oldest first.
    batches: [(FreeBatch<'m>, Vec<u64>); CPUS],
    /// Each CPU's last flushed cache.
    flushed: [Option<ModelCache>; CPUS],
    stats: RunStats,
    /// The current op was a refusal: compare everything afterwards.
    refused: bool,
    /// Check counts and invariants after every op, not only at full checks.
    full: bool,
}

/// `Ok(got)` if both sides agree.
fn same<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<T, String> {
    if got == want {
        Ok(got)
    } else {
        Err(format!("{what}: allocator {got:?}, model {want:?}"))
    }
}

/// Keeps the list of freed ranges short.
const FREED_MEMORY: usize = 32;

impl<'m> Harness<'m> {
    fn step(&mut self, op: &Op) -> Result<(), String> {
        self.stats.applied += 1;
        match *op {
            Op::Grow {
                base_page,
                npages,
                zeroed,
            } => {
                let base = base_page.saturating_mul(PAGE_SIZE);
                self.grow(base, npages.saturating_mul(PAGE_SIZE), zeroed)
            }
            Op::GrowBytes {
                base,
                size_bytes,
                zeroed,
            } => self.grow(base, size_bytes, zeroed),
            Op::Alloc { npages } => {
                let r = same("alloc", self.pa.alloc(npages), self.model.alloc(npages))?;
                self.allocated(r, false);
                Ok(())
            }
            Op::AllocConstrained {
                npages,
                align_pages,
                min_addr,
                max_addr,
            } => self.alloc_constrained(
                npages,
                Constraints {
                    align_pages,
                    min_addr,
                    max_addr,
                },
            ),
            Op::AllocConstrainedInFree {
                run,
                offset,
                npages,
                align_pages,
                slack,
            } => {
                let runs = self.model.free_runs();
                if runs.is_empty() {
                    return self.skip();
                }
                let (rb, rn) = runs[run % runs.len()];
                let min_addr = rb + page_addr(offset % rn);
                let len = (npages.saturating_add(slack) as u64).saturating_mul(PAGE_SIZE);
                let max_addr = min_addr.saturating_add(len);
                self.alloc_constrained(
                    npages,
                    Constraints {
                        align_pages,
                        min_addr,
                        max_addr,
                    },
                )
            }
            Op::AllocRangeInFree {
                run,
                offset,
                npages,
            } => {
                let runs = self.model.free_runs();
                if runs.is_empty() {
                    return self.skip();
                }
                let (rb, rn) = runs[run % runs.len()];
                let off = offset % rn;
                let n = npages.clamp(1, rn - off);
                self.alloc_range(rb + page_addr(off), n)
            }
            Op::AllocRange { base, npages } => self.alloc_range(base, npages),
            Op::Free { index } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let (base, npages) = self.live.swap_remove(index % self.live.len());
                self.valid_free(base, npages)
            }
            Op::FreePart {
                index,
                skip,
                npages,
            } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let i = index % self.live.len();
                let (base, n) = self.live[i];
                let s = skip % n;
                let k = npages.clamp(1, n - s);
                self.live.swap_remove(i);
                if s > 0 {
                    self.live.push((base, s));
                }
                if s + k < n {
                    self.live.push((base + page_addr(s + k), n - s - k));
                }
                self.valid_free(base + page_addr(s), k)
            }
            Op::BadFree { kind, index, delta } => {
                let Some((base, npages)) = self.bad_range(kind, index, delta) else {
                    return self.skip();
                };
                self.bad_free(base, npages)
            }
            Op::FreeRange { base, npages } => self.bad_free(base, npages),
            Op::CacheFill { cpu } => {
                let cpu = cpu % CPUS;
                if !self.caches[cpu].1.is_empty() {
                    self.flush(cpu)?;
                }
                let got = self.pa.alloc_to_cache();
                let want = self.model.alloc_to_cache();
                same("alloc_to_cache", ModelCache::of(&got), want)?;
                if !want.is_empty() {
                    self.stats.cache_fills += 1;
                }
                self.caches[cpu] = (got, want);
                Ok(())
            }
            Op::CacheAlloc { cpu, npages } => {
                let (pc, mc) = &mut self.caches[cpu % CPUS];
                let r = same("cache alloc", pc.alloc(npages), mc.alloc(npages))?;
                same("cache after alloc", ModelCache::of(pc), *mc)?;
                if let Some((addr, zeroed)) = r {
                    self.model.hand_out(addr, npages);
                    self.live.push((addr, npages));
                    self.stats.cache_allocs += 1;
                    self.stats.zeroed_pages += zeroed;
                }
                Ok(())
            }
            Op::CacheFlush { cpu } => self.flush(cpu % CPUS),
            // A stale copy a buggy caller kept (a `PageCache` cannot be cloned: only the
            // test support can make one).
            Op::StaleFlush { cpu } => match self.flushed[cpu % CPUS] {
                Some(mc) => self.bad_flush(mc),
                None => self.skip(),
            },
            Op::ForgedFlush {
                base_page,
                cache,
                scav,
            } => {
                let base = base_page.saturating_mul(PAGE_SIZE) & !(page_addr(PAGE_CACHE_PAGES) - 1);
                let cache = if cache == 0 { 1 } else { cache };
                let mc = ModelCache {
                    base,
                    cache,
                    scav: scav & cache,
                };
                self.bad_flush(mc)
            }
            Op::BatchFree { cpu, index, skip } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let i = index % self.live.len();
                let (base, n) = self.live.swap_remove(i);
                let s = skip % n;
                if s > 0 {
                    self.live.push((base, s));
                }
                if s + 1 < n {
                    self.live.push((base + page_addr(s + 1), n - s - 1));
                }
                self.batch_free(cpu % CPUS, base + page_addr(s))
            }
            Op::BatchAlloc { cpu } => {
                let (batch, held) = &mut self.batches[cpu % CPUS];
                let got = batch.alloc();
                same("batch alloc", got, held.pop())?;
                if let Some(addr) = got {
                    self.model.hand_out(addr, 1);
                    self.live.push((addr, 1));
                    self.stats.batch_allocs += 1;
                }
                Ok(())
            }
            Op::BatchFlush { cpu, half } => {
                if self.batches[cpu % CPUS].1.is_empty() {
                    return self.skip();
                }
                self.return_batch(cpu % CPUS, half)
            }
            Op::BadBatchFree {
                cpu,
                kind,
                index,
                delta,
            } => {
                let cpu = cpu % CPUS;
                let addr = match kind % 4 {
                    0 => {
                        let held = self.held_pages();
                        if held.is_empty() {
                            return self.skip();
                        }
                        held[index % held.len()]
                    }
                    1 => {
                        if self.freed.is_empty() {
                            return self.skip();
                        }
                        self.freed[index % self.freed.len()].0
                    }
                    2 => {
                        let span_pages = page_idx(self.model.span_limit()) as u64
                            + 2 * PALLOC_CHUNK_PAGES as u64;
                        page_addr((delta % span_pages) as usize)
                    }
                    _ => {
                        if self.live.is_empty() {
                            return self.skip();
                        }
                        self.live[index % self.live.len()].0 + 1 + delta % (PAGE_SIZE - 1)
                    }
                };
                let Err(want) = self.model.check_batch_free(addr) else {
                    return self.skip();
                };
                let (batch, held) = &mut self.batches[cpu];
                let unaligned = matches!(want, RangeOpError::Unaligned { .. });
                let want = if unaligned || !batch.is_full() {
                    want
                } else {
                    RangeOpError::BatchFull { page: addr }
                };
                same(
                    "refused batch free",
                    batch.free(self.pa.handed_out(), addr),
                    Err(want),
                )
                .map(drop)?;
                same(
                    "batch after refused free",
                    batch.pages().collect(),
                    held.clone(),
                )?;
                self.stats.batch_free_errors += 1;
                self.refused = true;
                Ok(())
            }
            Op::HeldFree { index, npages, how } => {
                let held = self.held_pages();
                if held.is_empty() {
                    return self.skip();
                }
                let base = held[index % held.len()];
                let npages = npages.max(1);
                match how % 3 {
                    0 | 1 => {
                        let want = self.model.check_free(base, npages);
                        let got = if how % 3 == 0 {
                            self.pa.free(base, npages)
                        } else {
                            self.pa.free_zeroed(base, npages)
                        };
                        let Err(want) = want else {
                            return Err(format!("the model accepts a free of held page {base:#x}"));
                        };
                        same("free of a held page", got, Err(want)).map(drop)?;
                        same("check_free", self.pa.check_free(base, npages), Err(want))
                            .map(drop)?;
                    }
                    _ => {
                        let want = self.model.check_alloc_range(base, npages);
                        same(
                            "alloc_range of a held page",
                            self.pa.alloc_range(base, npages).map(drop),
                            want,
                        )
                        .map(drop)?;
                        if want.is_ok() {
                            return Err(format!("the model accepts alloc_range of {base:#x}"));
                        }
                    }
                }
                self.stats.held_refusals += 1;
                self.refused = true;
                Ok(())
            }
            Op::ForeignFlush { cpu } => self.foreign_flush(cpu % CPUS),
        }
    }

    /// Pages held by caches and batches, in a fixed order.
    fn held_pages(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, mc) in &self.caches {
            out.extend(
                (0..PAGE_CACHE_PAGES)
                    .filter(|&i| mc.cache >> i & 1 != 0)
                    .map(|i| mc.base + page_addr(i)),
            );
        }
        for (_, held) in &self.batches {
            out.extend(held.iter().copied());
        }
        out
    }

    /// A valid free of a live page into CPU `cpu`'s batch.
    fn batch_free(&mut self, cpu: usize, addr: u64) -> Result<(), String> {
        if self.batches[cpu].0.is_full() {
            let (batch, _) = &mut self.batches[cpu];
            same(
                "free into a full batch",
                batch.free(self.pa.handed_out(), addr),
                Err(RangeOpError::BatchFull { page: addr }),
            )
            .map(drop)?;
            self.return_batch(cpu, true)?;
        }
        same(
            "batch free",
            self.batches[cpu].0.free(self.pa.handed_out(), addr),
            self.model.batch_free(addr),
        )?
        .map_err(|e| format!("free of a live page into a batch refused: {e}"))?;
        self.batches[cpu].1.push(addr);
        self.stats.batch_frees += 1;
        if self.freed.len() == FREED_MEMORY {
            self.freed.remove(0);
        }
        self.freed.push((addr, 1));
        Ok(())
    }

    /// Returns the older half or all of CPU `cpu`'s batch.
    fn return_batch(&mut self, cpu: usize, half: bool) -> Result<(), String> {
        let (batch, held) = &mut self.batches[cpu];
        let n = if half {
            held.len().div_ceil(2)
        } else {
            held.len()
        };
        let got = if half {
            batch.return_half(&mut self.pa)
        } else {
            batch.flush(&mut self.pa)
        };
        let want = self.model.return_pages(&held[..n]).map(|()| n);
        same("batch return", got, want)?.map_err(|e| format!("return of a batch refused: {e}"))?;
        held.drain(..n);
        same("batch after return", batch.pages().collect(), held.clone())?;
        self.stats.flushes += 1;
        Ok(())
    }

    /// Flushes of CPU `cpu`'s cache and batch into the other allocator.
    fn foreign_flush(&mut self, cpu: usize) -> Result<(), String> {
        let (mine, theirs) = (self.pa.handed_out().id(), self.other.handed_out().id());
        let other_free = self.other.free_pages();
        let (pc, mc) = &mut self.caches[cpu];
        let (batch, held) = &mut self.batches[cpu];
        if mc.is_empty() && held.is_empty() {
            return self.skip();
        }
        if !mc.is_empty() {
            let page = mc.base + page_addr(mc.cache.trailing_zeros() as usize);
            let want = RangeOpError::ForeignAllocator {
                page,
                owner: mine,
                other: theirs,
            };
            same("foreign cache flush", pc.flush(&mut self.other), Err(want)).map(drop)?;
            same("cache after foreign flush", ModelCache::of(pc), *mc)?;
        }
        if let Some(&page) = held.first() {
            let want = RangeOpError::ForeignAllocator {
                page,
                owner: mine,
                other: theirs,
            };
            same(
                "foreign batch flush",
                batch.flush(&mut self.other),
                Err(want),
            )
            .map(drop)?;
            same(
                "foreign batch return",
                batch.return_half(&mut self.other),
                Err(want),
            )
            .map(drop)?;
            let page = self.other_page;
            same(
                "foreign page into a batch",
                batch.free(self.other.handed_out(), page),
                Err(RangeOpError::ForeignAllocator {
                    page,
                    owner: mine,
                    other: theirs,
                }),
            )
            .map(drop)?;
            same(
                "batch after foreign flush",
                batch.pages().collect(),
                held.clone(),
            )?;
        }
        same(
            "other allocator's free pages",
            self.other.free_pages(),
            other_free,
        )?;
        self.other
            .check_invariants()
            .map_err(|e| format!("other allocator: {e}"))?;
        self.stats.foreign_refusals += 1;
        self.refused = true;
        Ok(())
    }

    fn skip(&mut self) -> Result<(), String> {
        self.stats.applied -= 1;
        self.stats.skipped += 1;
        Ok(())
    }

    fn grow(&mut self, base: u64, size_bytes: u64, zeroed: bool) -> Result<(), String> {
        let contents = if zeroed {
            Contents::Zeroed
        } else {
            Contents::Unknown
        };
        let r = same(
            "grow",
            self.pa.grow(base, size_bytes, contents),
            self.model.grow(base, size_bytes, contents),
        )?;
        if r.is_ok() {
            self.stats.grows += 1;
        } else {
            self.stats.grow_errors += 1;
            self.refused = true;
        }
        Ok(())
    }

    fn allocated(&mut self, r: Result<Allocation, AllocError>, constrained: bool) {
        match r {
            Ok(a) => {
                self.live.push((a.base, a.npages));
                self.stats.allocs += 1;
                self.stats.constrained_allocs += usize::from(constrained);
                self.stats.zeroed_pages += a.zeroed_pages;
            }
            Err(_) => self.stats.alloc_errors += 1,
        }
    }

    fn alloc_constrained(&mut self, npages: usize, c: Constraints) -> Result<(), String> {
        let r = same(
            "alloc_constrained",
            self.pa.alloc_constrained(npages, c),
            self.model.alloc_constrained(npages, c),
        )?;
        if let Ok(a) = r {
            let end = u128::from(a.base) + u128::from(PAGE_SIZE) * npages as u128;
            let aligned = u128::from(a.base) % (u128::from(PAGE_SIZE) * c.align_pages as u128) == 0;
            if a.base < c.min_addr || end > u128::from(c.max_addr) || !aligned {
                return Err(format!("{a:?} breaks the constraints"));
            }
        }
        self.allocated(r, c != Constraints::NONE);
        Ok(())
    }

    fn alloc_range(&mut self, base: u64, npages: usize) -> Result<(), String> {
        let r = same(
            "alloc_range",
            self.pa.alloc_range(base, npages),
            self.model.alloc_range(base, npages),
        )?;
        match r {
            Ok(zeroed) => {
                self.live.push((base, npages));
                self.stats.range_allocs += 1;
                self.stats.zeroed_pages += zeroed;
            }
            Err(_) => {
                self.stats.range_alloc_errors += 1;
                self.refused = true;
            }
        }
        Ok(())
    }

    /// A free of a range the run holds: both sides must accept it.
    fn valid_free(&mut self, base: u64, npages: usize) -> Result<(), String> {
        same(
            "free",
            self.pa.free(base, npages),
            self.model.free(base, npages),
        )?
        .map_err(|e| format!("free of a live allocation refused: {e}"))?;
        self.stats.frees += 1;
        if self.freed.len() == FREED_MEMORY {
            self.freed.remove(0);
        }
        self.freed.push((base, npages));
        Ok(())
    }

    /// The range a [`BadFree`] of this kind would free.
    fn bad_range(&self, kind: BadFree, index: usize, delta: u64) -> Option<(u64, usize)> {
        let live = (!self.live.is_empty()).then(|| self.live[index % self.live.len()]);
        let extra = 1 + (delta % 8) as usize;
        match kind {
            BadFree::Double => {
                (!self.freed.is_empty()).then(|| self.freed[index % self.freed.len()])
            }
            BadFree::Unaligned => live.map(|(b, n)| (b + 1 + delta % (PAGE_SIZE - 1), n)),
            BadFree::ZeroPages => live.map(|(b, _)| (b, 0)),
            BadFree::OverlapBelow => {
                live.and_then(|(b, n)| b.checked_sub(page_addr(extra)).map(|lo| (lo, n + extra)))
            }
            BadFree::OverlapAbove => live.map(|(b, n)| (b, n + extra)),
            BadFree::Foreign => {
                let span_pages =
                    page_idx(self.model.span_limit()) as u64 + 2 * PALLOC_CHUNK_PAGES as u64;
                Some((page_addr((delta % span_pages) as usize), 1 + index % 16))
            }
        }
    }

    /// A free the model refuses must be refused the same way and change nothing; one the
    /// model accepts is skipped, as it would free pages the run counts as live.
    fn bad_free(&mut self, base: u64, npages: usize) -> Result<(), String> {
        let Err(want) = self.model.check_free(base, npages) else {
            return self.skip();
        };
        same("refused free", self.pa.free(base, npages), Err(want)).map(drop)?;
        same("model free", self.model.free(base, npages), Err(want)).map(drop)?;
        self.stats.free_errors += 1;
        self.refused = true;
        Ok(())
    }

    fn flush(&mut self, cpu: usize) -> Result<(), String> {
        let (pc, mc) = &mut self.caches[cpu];
        if mc.is_empty() {
            same("flush of an empty cache", pc.flush(&mut self.pa), Ok(())).map(drop)?;
            return self.skip();
        }
        let copy = *mc;
        same("flush", pc.flush(&mut self.pa), self.model.flush(mc))?
            .map_err(|e| format!("flush of a live cache refused: {e}"))?;
        same(
            "cache after flush",
            ModelCache::of(pc),
            ModelCache::default(),
        )?;
        self.flushed[cpu] = Some(copy);
        self.stats.flushes += 1;
        Ok(())
    }

    /// Like [`Harness::bad_free`], for a flush.
    fn bad_flush(&mut self, mut mc: ModelCache) -> Result<(), String> {
        let Err(want) = self.model.check_flush(&mc) else {
            return self.skip();
        };
        let mut pc = PageCache::from_parts(Some(self.pa.handed_out()), mc.base, mc.cache, mc.scav)
            .map_err(|e| format!("forged cache {mc:?}: {e}"))?;
        same("refused flush", pc.flush(&mut self.pa), Err(want)).map(drop)?;
        same("model flush", self.model.flush(&mut mc), Err(want)).map(drop)?;
        same("cache after refused flush", ModelCache::of(&pc), mc)?;
        self.stats.flush_errors += 1;
        self.refused = true;
        Ok(())
    }

    fn check(&self, full: bool) -> Result<(), String> {
        if full || self.full {
            self.pa
                .check_invariants()
                .map_err(|e| format!("invariant broken: {e}"))?;
        }
        same("free_pages", self.pa.free_pages(), self.model.free_pages())?;
        same(
            "total_pages",
            self.pa.total_pages(),
            self.model.total_pages(),
        )?;
        if full {
            same("held pages", self.pa.held_pages(), self.model.held_pages())?;
            if let Some(d) = self.model.diff(&self.pa) {
                return Err(format!("state differs:\n{d}"));
            }
        }
        Ok(())
    }

    /// Returns everything and checks that all grown memory is free again.
    fn drain(&mut self) -> Result<(), String> {
        for cpu in 0..CPUS {
            if !self.caches[cpu].1.is_empty() {
                self.flush(cpu)?;
            }
            if !self.batches[cpu].1.is_empty() {
                self.return_batch(cpu, false)?;
            }
        }
        while let Some((base, npages)) = self.live.pop() {
            self.valid_free(base, npages)?;
        }
        self.check(true)?;
        same(
            "free pages after draining",
            self.pa.free_pages(),
            self.pa.total_pages(),
        )?;
        Ok(())
    }
}

/// Reads op parameters from fuzzer bytes; reads past the end give zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A page count weighted towards the sizes where the allocator changes paths.
    fn npages(&mut self) -> usize {
        let b = self.u8();
        match b % 8 {
            0 => [1, 2, 63, 64, 65, 511, 512, 513, 1024, 1100][usize::from(self.u8() % 10)],
            1..=4 => 1 + usize::from(b >> 3) % 16,
            5 | 6 => 1 + usize::from(self.u16()) % 1100,
            _ => match self.u8() % 4 {
                0 => 0,
                1 => MAX_NPAGES + 1,
                _ => 1 + self.u32() as usize % (4 * PALLOC_CHUNK_PAGES * PALLOC_CHUNKS_L2_ENTRIES),
            },
        }
    }

    /// An address in or a little beyond a span of `span_pages` pages: page aligned
    /// except now and then.
    fn addr(&mut self, span_pages: u64) -> u64 {
        let page = u64::from(self.u32()) % (span_pages + 2 * PALLOC_CHUNK_PAGES as u64);
        let a = page << PAGE_SHIFT;
        if self.u8() == 0xff {
            a + 1 + u64::from(self.u8())
        } else {
            a
        }
    }
}

/// Decodes fuzzer input into a run: the first bytes choose the span and the memory
/// grown at the start, the rest is a sequence of ops. Every input decodes to something.
pub fn decode_ops(data: &[u8]) -> (RunConfig, Vec<Op>) {
    let mut b = Bytes(data);
    // Small spans by default, so that thousands of inputs run a second; a big one
    // rarely, without full checks until the end.
    let span_chunks: u64 = match b.u8() {
        0..=159 => 1 + u64::from(b.u8() % 16),
        160..=253 => 1 + u64::from(b.u8() % 64),
        // Past the first root entry (8 GiB), where runs cross the root level.
        _ => 4096 - 4 + u64::from(b.u8() % 16),
    };
    let span_pages = span_chunks * PALLOC_CHUNK_PAGES as u64;
    let cfg = b.u8();
    let config = RunConfig {
        span_limit: span_chunks * PALLOC_CHUNK_BYTES,
        l2_blocks: if cfg & 0x7 == 0 {
            1 + usize::from(cfg >> 3) % 4
        } else {
            usize::MAX
        },
        // The full comparison walks every chunk of the span: every 8 ops (and after
        // refusals) on small ones, only at the end on big ones. Results, errors and
        // counts are compared after every op.
        full_check_every: if span_chunks > 1000 { 0 } else { 8 },
    };
    let mut ops = Vec::new();
    // Initial memory map: regions with holes between them, in address order.
    let nregions = 1 + b.u8() % 8;
    let mut page = if b.u8() % 4 == 0 {
        0
    } else {
        u64::from(b.u16()) % span_pages
    };
    for _ in 0..nregions {
        if page >= span_pages {
            break;
        }
        let len = 1 + u64::from(b.u32()) % (span_pages - page);
        ops.push(Op::Grow {
            base_page: page,
            npages: len,
            zeroed: b.u8() & 1 == 1,
        });
        page += len + u64::from(b.u16() % 1100);
    }
    let span_addr = |b: &mut Bytes<'_>| b.addr(span_pages);
    while !b.0.is_empty() {
        let op = match b.u8() % 28 {
            0 => Op::Grow {
                base_page: u64::from(b.u32()) % (span_pages + 4),
                npages: 1 + u64::from(b.u16()) % 2048,
                zeroed: b.u8() & 1 == 1,
            },
            1 => Op::GrowBytes {
                base: span_addr(&mut b),
                size_bytes: u64::from(b.u32()),
                zeroed: false,
            },
            2..=4 => Op::Alloc { npages: b.npages() },
            5 | 6 => {
                let npages = b.npages();
                let a = b.u8();
                let align_pages = if a == 0xff { 3 } else { 1 << (a % 11) };
                let w = b.u8();
                let span = span_pages << PAGE_SHIFT;
                let min_addr = if w & 1 == 0 { 0 } else { span_addr(&mut b) };
                let max_addr = match w >> 1 & 3 {
                    0 => u64::MAX,
                    1 => span / 16,
                    2 => span / 4,
                    _ => span_addr(&mut b),
                };
                Op::AllocConstrained {
                    npages,
                    align_pages,
                    min_addr,
                    max_addr,
                }
            }
            7 if b.0.first().is_some_and(|&x| x & 1 == 1) => {
                b.u8();
                Op::AllocConstrainedInFree {
                    run: usize::from(b.u8()),
                    offset: usize::from(b.u16()),
                    npages: b.npages(),
                    align_pages: 1 << (b.u8() % 11),
                    slack: usize::from(b.u8() % 8),
                }
            }
            7 => Op::AllocRangeInFree {
                run: usize::from(b.u8()),
                offset: usize::from(b.u16()),
                npages: b.npages(),
            },
            8 => Op::AllocRange {
                base: span_addr(&mut b),
                npages: b.npages(),
            },
            9 | 10 => Op::Free {
                index: usize::from(b.u8()),
            },
            11 => Op::FreePart {
                index: usize::from(b.u8()),
                skip: usize::from(b.u16()),
                npages: b.npages(),
            },
            12 => {
                let kinds = [
                    BadFree::Double,
                    BadFree::Unaligned,
                    BadFree::ZeroPages,
                    BadFree::OverlapBelow,
                    BadFree::OverlapAbove,
                    BadFree::Foreign,
                ];
                Op::BadFree {
                    kind: kinds[usize::from(b.u8()) % kinds.len()],
                    index: usize::from(b.u8()),
                    delta: b.u64(),
                }
            }
            13 => Op::FreeRange {
                base: span_addr(&mut b),
                npages: b.npages(),
            },
            14 => Op::CacheFill {
                cpu: usize::from(b.u8()),
            },
            15 | 16 => Op::CacheAlloc {
                cpu: usize::from(b.u8()),
                npages: 1 + usize::from(b.u8() % 70),
            },
            17 => Op::CacheFlush {
                cpu: usize::from(b.u8()),
            },
            18 => Op::StaleFlush {
                cpu: usize::from(b.u8()),
            },
            20..=22 => Op::BatchFree {
                cpu: usize::from(b.u8()),
                index: usize::from(b.u8()),
                skip: usize::from(b.u16()),
            },
            23 => Op::BatchAlloc {
                cpu: usize::from(b.u8()),
            },
            24 => {
                let x = b.u8();
                Op::BatchFlush {
                    cpu: usize::from(x >> 1),
                    half: x & 1 == 1,
                }
            }
            25 => Op::BadBatchFree {
                cpu: usize::from(b.u8()),
                kind: b.u8(),
                index: usize::from(b.u8()),
                delta: b.u64(),
            },
            26 => Op::HeldFree {
                index: usize::from(b.u8()),
                npages: 1 + usize::from(b.u8() % 80),
                how: b.u8(),
            },
            27 => Op::ForeignFlush {
                cpu: usize::from(b.u8()),
            },
            _ => Op::ForgedFlush {
                base_page: span_addr(&mut b) >> PAGE_SHIFT,
                cache: b.u64(),
                scav: b.u64(),
            },
        };
        ops.push(op);
    }
    (config, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn bit_helpers() {
        let mut w = vec![0u64; 3];
        put_bits(&mut w, 60, 70, true);
        assert_eq!(w, [0xf << 60, !0, 0x3]);
        assert_eq!(count_bits(&w, 0, 192), 70);
        assert_eq!(count_bits(&w, 62, 3), 3);
        assert_eq!(find_bit(&w, 0, 192, true), 60);
        assert_eq!(find_bit(&w, 60, 192, false), 130);
        assert_eq!(find_bit(&w, 131, 150, true), 150);
        put_bits(&mut w, 64, 64, false);
        assert_eq!(w, [0xf << 60, 0, 0x3]);
    }

    #[test]
    fn first_fit_bitmap() {
        let mut f = FirstFitBitmap::new(4 * MIB);
        assert_eq!(f.capacity_pages(), 1024);
        assert_eq!(f.alloc(1), None);
        f.add_free(0x1000, 10);
        f.add_free(0x10_0000, 200);
        assert_eq!(f.free_pages(), 210);
        assert_eq!(f.alloc(11), Some(0x10_0000));
        assert_eq!(f.alloc(10), Some(0x1000));
        assert_eq!(f.alloc(1), Some(0x10_0000 + 11 * PAGE_SIZE));
        f.free(0x1000 + 3 * PAGE_SIZE, 2);
        assert_eq!(f.alloc(1), Some(0x1000 + 3 * PAGE_SIZE));
        assert_eq!(f.next_run(0), Some((0x1000 + 4 * PAGE_SIZE, 1)));
        assert_eq!(f.alloc(0), None);
        assert_eq!(f.free_pages(), 210 - 21);
    }

    #[test]
    #[should_panic(expected = "page already free")]
    fn first_fit_rejects_double_free() {
        let mut f = FirstFitBitmap::new(MIB);
        f.add_free(0, 4);
        f.free(PAGE_SIZE, 1);
    }

    #[test]
    fn model_semantics() {
        let mut m = FlatModel::new(3 * MIB, usize::MAX);
        assert_eq!(m.span_limit(), 4 * MIB);
        assert_eq!(m.grow(0x2000, 0x3000, Contents::Zeroed), Ok(()));
        assert_eq!(m.grow(0x8000, 0x1000, Contents::Unknown), Ok(()));
        assert_eq!(
            m.grow(0x4000, 0x5000, Contents::Unknown),
            Err(GrowError::Overlap {
                region: AddrRange::new(0x4000, 0x9000),
                existing: AddrRange::new(0x2000, 0x5000),
            })
        );
        assert_eq!(m.state(0x1000), PageState::NotGrown);
        assert_eq!(m.state(0x2000), PageState::Free { zeroed: true });
        assert_eq!(m.free_runs(), [(0x2000, 3), (0x8000, 1)]);
        let a = m.alloc(2).unwrap();
        assert_eq!((a.base, a.zeroed_pages), (0x2000, 2));
        assert_eq!(
            m.free(0x1000, 2),
            Err(RangeOpError::NotGrown {
                base: 0x1000,
                npages: 2,
                page: 0x1000
            })
        );
        assert_eq!(
            m.free(0x3000, 3),
            Err(RangeOpError::NotGrown {
                base: 0x3000,
                npages: 3,
                page: 0x5000
            })
        );
        assert_eq!(
            m.free(0x3000, 2),
            Err(RangeOpError::NotAllocated {
                base: 0x3000,
                npages: 2,
                page: 0x4000
            })
        );
        assert_eq!(
            m.alloc_range(0x3000, 2),
            Err(RangeOpError::NotFree {
                base: 0x3000,
                npages: 2,
                page: 0x3000
            })
        );
        assert_eq!(m.free(0x2000, 2), Ok(()));
        assert_eq!(m.state(0x2000), PageState::Free { zeroed: false });
        let c = Constraints::aligned(8);
        assert_eq!(m.alloc_constrained(1, c).map(|a| a.base), Ok(0x8000));
        let w = Constraints::within(0x3000, 0x5000);
        assert_eq!(m.alloc_constrained(2, w).map(|a| a.base), Ok(0x3000));
        assert_eq!(
            m.alloc_constrained(1, w),
            Err(AllocError::OutOfMemory {
                npages: 1,
                constraints: w
            })
        );
        let mut cache = m.alloc_to_cache();
        assert_eq!(
            cache,
            ModelCache {
                base: 0,
                cache: 0b100,
                scav: 0
            }
        );
        assert_eq!(m.free_pages(), 0);
        assert!(m.alloc_to_cache().is_empty());
        assert_eq!(cache.alloc(1), Some((0x2000, 0)));
        let flush = |m: &FlatModel, base: u64, cache: u64| {
            m.check_flush(&ModelCache {
                base,
                cache,
                scav: 0,
            })
        };
        let not_grown = |base: u64, page: u64| RangeOpError::NotGrown {
            base,
            npages: 64,
            page,
        };
        // Pages 2 and 8 are grown and allocated, 2 held (the model was not told that
        // the cache handed it out) and 8 handed out; pages 0, 1 and 5 were never grown.
        assert_eq!(m.state(0x2000), PageState::Held);
        assert_eq!(flush(&m, 0, 1 << 2), Ok(()));
        assert_eq!(
            flush(&m, 0, 1 << 2 | 1 << 8),
            Err(RangeOpError::NotHeld {
                base: 0,
                npages: 64,
                page: 0x8000
            })
        );
        assert_eq!(flush(&m, 0, 1), Err(not_grown(0, 0)));
        assert_eq!(
            flush(&m, 0, 1 << 2 | 1 << 5 | 1 << 8),
            Err(not_grown(0, 0x5000))
        );
        // A chunk with a bitmap that no grow touched.
        assert_eq!(
            flush(&m, 2 * MIB, 0b10),
            Err(not_grown(2 * MIB, 2 * MIB + 0x1000))
        );
        assert_eq!(m.free(0x8000, 1), Ok(()));
        assert_eq!(
            flush(&m, 0, 1 << 2 | 1 << 8),
            Err(RangeOpError::NotAllocated {
                base: 0,
                npages: 64,
                page: 0x8000
            })
        );
        assert_eq!(
            m.check_flush(&ModelCache {
                base: 64 * MIB,
                cache: 1,
                scav: 0
            }),
            Err(RangeOpError::NotGrown {
                base: 64 * MIB,
                npages: 64,
                page: 64 * MIB
            })
        );
    }

    #[test]
    fn model_cache_alloc_is_lowest_run() {
        let mut c = ModelCache {
            base: 0x40_0000,
            cache: 0b1110_1101,
            scav: 0b1000_0001,
        };
        assert_eq!(c.alloc(3), Some((0x40_0000 + 5 * PAGE_SIZE, 1)));
        assert_eq!(c.alloc(2), Some((0x40_0000 + 2 * PAGE_SIZE, 0)));
        assert_eq!(c.alloc(2), None);
        assert_eq!(c.alloc(1), Some((0x40_0000, 1)));
        assert_eq!(c.alloc(65), None);
        assert!(c.is_empty());
    }

    #[test]
    fn run_ops_smoke() {
        let ops = [
            Op::Grow {
                base_page: 3,
                npages: 1000,
                zeroed: true,
            },
            Op::Grow {
                base_page: 1100,
                npages: 600,
                zeroed: false,
            },
            Op::Alloc { npages: 513 },
            Op::Alloc { npages: 1 },
            Op::AllocConstrained {
                npages: 64,
                align_pages: 64,
                min_addr: 0,
                max_addr: u64::MAX,
            },
            Op::CacheFill { cpu: 0 },
            Op::CacheAlloc { cpu: 0, npages: 3 },
            Op::BadFree {
                kind: BadFree::OverlapAbove,
                index: 0,
                delta: 0,
            },
            Op::Free { index: 0 },
            Op::BadFree {
                kind: BadFree::Double,
                index: 0,
                delta: 0,
            },
            Op::CacheFlush { cpu: 0 },
            Op::StaleFlush { cpu: 0 },
            Op::AllocRangeInFree {
                run: 1,
                offset: 7,
                npages: 9,
            },
        ];
        let s = run_ops(8 * MIB, &ops).unwrap();
        assert_eq!(
            (s.grows, s.allocs, s.cache_allocs, s.flushes, s.range_allocs),
            (2, 3, 1, 1, 1)
        );
        assert!(s.free_errors >= 1 && s.frees >= 1, "{s:?}");
    }

    #[test]
    fn decoded_byte_soup_agrees() {
        // A fixed xorshift stream as fuzzer input: the decoder and the run must cope.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..8 {
            let data: Vec<u8> = (0..1500)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let (config, ops) = decode_ops(&data);
            run_ops_with(config, &ops).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        }
    }
}
