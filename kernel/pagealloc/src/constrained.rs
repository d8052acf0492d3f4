//! Aligned and address-limited allocation (not in Go): an exact depth-first search of
//! the tree in address order.

use crate::consts::*;
use crate::errors::AllocError;
use crate::index::*;
use crate::summary::{FREE_CHUNK_SUM, PallocSum};
use crate::tree::{Allocation, PageAlloc, check_npages};

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

impl PageAlloc<'_> {
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
        self.alloc_constrained_reporting(npages, c, None)
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
        self.alloc_constrained_reporting(npages, c, Some(dirty))
    }

    fn alloc_constrained_reporting(
        &mut self,
        npages: usize,
        c: Constraints,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Result<Allocation, AllocError> {
        check_npages(npages)?;
        // (Not `is_power_of_two`: without a `popcnt` target feature it is a long sequence.)
        if c.align_pages == 0
            || c.align_pages & (c.align_pages - 1) != 0
            || c.align_pages > MAX_NPAGES
        {
            return Err(AllocError::BadAlignment {
                align_pages: c.align_pages,
            });
        }
        if c == Constraints::NONE {
            return self.alloc_first_fit(npages, dirty);
        }
        let oom = AllocError::OutOfMemory {
            npages,
            constraints: c,
        };
        // Nothing below the search address is free, so start there. A request at least
        // as large as an unconstrained one that failed cannot succeed either.
        let lo = align_up(c.min_addr.min(MAX_SEARCH_ADDR), PAGE_SIZE).max(self.search_addr);
        let hi = (c.max_addr & !(PAGE_SIZE - 1)).min(self.layout.span_limit());
        if lo >= hi || ChunkIdx::of(lo).0 >= self.end || npages >= self.doomed {
            return Err(oom);
        }
        if npages == PALLOC_CHUNK_PAGES && c.align_pages == PALLOC_CHUNK_PAGES {
            let ci = self.find_free_chunk(lo, hi).ok_or(oom)?;
            return Ok(self.hand_out_chunk(ci, dirty));
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
                return Ok(self.alloc_found(addr, npages, dirty));
            }
        }
        if raise && to_end {
            self.search_addr = self.search_addr.max(st.first_free);
        }
        Err(oom)
    }

    /// The lowest wholly free chunk inside `[lo, hi)`: the lowest 2 MiB-aligned run of
    /// 512 pages, found without the depth-first search. It scans the leaves from the
    /// free-chunk hint, skipping every fresh entry (at any level) whose longest run is
    /// shorter than a chunk, and reads no stale inner entry (recomputing them would cost
    /// what the fast path saves). Not in Go.
    fn find_free_chunk(&mut self, lo: u64, hi: u64) -> Option<ChunkIdx> {
        let first = ChunkIdx::of(align_up(lo, PALLOC_CHUNK_BYTES)).0;
        let last = ((hi >> LOG_PALLOC_CHUNK_BYTES) as usize).min(self.end);
        // The hint may move only if the scan covers everything from it on.
        let from_hint = first <= self.free_chunk_hint;
        let mut c = first.max(self.free_chunk_hint).max(self.start);
        while c < last {
            // The leaf first: after a run of 2 MiB allocations the hint is a free chunk.
            let free = match self.summary[LEAF].cached(c) {
                Some(s) => s == FREE_CHUNK_SUM,
                None => self.alloc_bits_of(ChunkIdx(c)).words() == &[0; 8],
            };
            if free {
                if from_hint {
                    self.free_chunk_hint = c + 1;
                }
                return Some(ChunkIdx(c));
            }
            c += 1;
            // Skip the entries that begin at `c` and cannot hold a chunk.
            'skip: while c < last {
                for l in 0..LEAF {
                    let log_chunks = LEVEL_LOG_PAGES[l] - LOG_PALLOC_CHUNK_PAGES;
                    if c & ((1 << log_chunks) - 1) == 0
                        && self.summary[l]
                            .cached(c >> log_chunks)
                            .is_some_and(|s| s.max() < PALLOC_CHUNK_PAGES)
                    {
                        c += 1 << log_chunks;
                        continue 'skip;
                    }
                }
                break;
            }
        }
        if from_hint && last == self.end {
            self.free_chunk_hint = self.end;
        }
        None
    }

    /// Visits entry `i` of level `l` for [`PageAlloc::alloc_constrained`]: returns the
    /// lowest fit that begins in or before it, and leaves the run of free pages that
    /// reaches its end in `st`.
    fn visit(&self, st: &mut Dfs, l: usize, i: usize) -> Option<u64> {
        let entry_pages = 1usize << LEVEL_LOG_PAGES[l];
        let entry_base = level_index_to_addr(l, i);
        let entry_limit = entry_base + ((entry_pages as u64) << PAGE_SHIFT);
        let sum = self.sum(l, i);
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
        let bits = &self.alloc_bits_of(ci);

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
