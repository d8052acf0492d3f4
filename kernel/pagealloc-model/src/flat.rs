//! The flat model: one bit per page in three bitmaps, every answer by a scan in address
//! order.

use std::fmt::Debug;

use pagealloc::testutil::{
    ChunkIdx, MAX_ADDR_RANGES, MAX_NPAGES, PAGE_CACHE_PAGES, PAGE_SIZE, PALLOC_CHUNK_BYTES,
    PALLOC_CHUNKS_L2_ENTRIES,
};
use pagealloc::{
    AddrRange, AllocError, Allocation, Constraints, Contents, GrowError, PageAlloc, PageCache,
    RangeOpError,
};

use crate::bits::*;

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
    pub known_zero: u64,
}

impl ModelCache {
    /// The same cache as `c`.
    pub fn of(c: &PageCache) -> ModelCache {
        ModelCache {
            base: c.base(),
            cache: c.cache(),
            known_zero: c.known_zero(),
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
        let zeroed = (self.known_zero & mask).count_ones() as usize;
        self.cache &= !mask;
        self.known_zero &= !mask;
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
    /// Whether known-zero bits are kept (see [`FlatModel::without_known_zero`]).
    known_zero: bool,
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
            known_zero: true,
            held: vec![0; words],
        }
    }

    /// The model of an allocator whose layout is `without_known_zero()`: no page is
    /// ever known to be zero.
    pub fn without_known_zero(self) -> FlatModel {
        FlatModel {
            known_zero: false,
            ..self
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
        self.block_used
            .get(ci.index() / PALLOC_CHUNKS_L2_ENTRIES)
            .copied()
            .unwrap_or(false)
    }

    /// The bitmaps [`PageAlloc::chunk_data`] should hold for chunk `ci`, as
    /// `(alloc, zeroed)` words, or `None` if it should have none. Pages that are not free
    /// (allocated, or never grown) have their alloc bit set.
    pub fn chunk_words(&self, ci: ChunkIdx) -> Option<([u64; CHUNK_WORDS], [u64; CHUNK_WORDS])> {
        if !self.has_bitmap(ci) {
            return None;
        }
        let w0 = ci.index() * CHUNK_WORDS;
        let alloc = core::array::from_fn(|k| !self.free.free.get(w0 + k).copied().unwrap_or(0));
        let zeroed = core::array::from_fn(|k| self.zeroed.get(w0 + k).copied().unwrap_or(0));
        Some((alloc, zeroed))
    }

    /// Makes the pages of `region` free. Same checks, in the same order, as
    /// [`PageAlloc::grow`].
    pub fn grow(&mut self, region: AddrRange, contents: Contents) -> Result<(), GrowError> {
        let AddrRange { base, limit } = region;
        if limit <= base {
            return Err(GrowError::Empty { region });
        }
        if !base.is_multiple_of(PAGE_SIZE) || !limit.is_multiple_of(PAGE_SIZE) {
            return Err(GrowError::Unaligned { region });
        }
        let size_bytes = limit - base;
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
        let (b0, b1) = (
            ChunkIdx::of(base).index() / PALLOC_CHUNKS_L2_ENTRIES,
            ChunkIdx::of(limit - 1).index() / PALLOC_CHUNKS_L2_ENTRIES,
        );
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
            self.known_zero && contents == Contents::Zeroed,
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
    pub fn alloc_range(&mut self, base: u64, npages: usize) -> Result<Allocation, RangeOpError> {
        self.check_alloc_range(base, npages)?;
        let zeroed_pages = self.take(base, npages);
        Ok(Allocation {
            base,
            npages,
            zeroed_pages,
        })
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

    /// What [`FreeBatch::free`] of `addr` into a batch that is not full and of
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
        let w0 = ci.index() * CHUNK_WORDS;
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
        let (mut cache, mut known_zero) = (0, 0);
        for i in 0..PAGE_CACHE_PAGES {
            let page = base + page_addr(i);
            if let PageState::Free { zeroed } = self.state(page) {
                cache |= 1 << i;
                known_zero |= u64::from(zeroed) << i;
                self.take(page, 1);
                put_bits(&mut self.held, page_idx(page), 1, true);
            }
        }
        ModelCache {
            base,
            cache,
            known_zero,
        }
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
                put_bits(
                    &mut self.zeroed,
                    page_idx(page),
                    1,
                    self.known_zero && c.known_zero >> i & 1 != 0,
                );
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
        if pa.inspect().grown() != ranges.as_slice() {
            out += &format!(
                "grown ranges: model {ranges:?}, allocator {:?}\n",
                pa.inspect().grown()
            );
        }
        for c in 0..self.block_used.len() * PALLOC_CHUNKS_L2_ENTRIES {
            let ci = ChunkIdx::new(c);
            let got = pa
                .inspect()
                .chunk_data(ci)
                .map(|d| (*d.alloc_bits().words(), *d.known_zero_bits().words()));
            let want = self.chunk_words(ci);
            if got != want {
                out += &format!("{ci}: model (alloc, zeroed) {want:x?}, allocator {got:x?}\n");
            }
            let got = pagealloc::testutil::handed_out_words(pa, ci);
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

pub(crate) fn base_page(base: u64, i: usize) -> u64 {
    base + page_addr(i)
}
