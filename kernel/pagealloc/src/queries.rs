//! What an allocator can say about itself without changing: counts, the longest free
//! run, the free runs in address order, the held pages.

use crate::consts::*;
use crate::index::*;
use crate::summary::FREE_CHUNK_SUM;
use crate::summary::PallocSum;
use crate::tree::PageAlloc;

impl PageAlloc<'_> {
    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Pages that were grown, free or not.
    pub fn total_pages(&self) -> usize {
        (self.grown.total_bytes() >> PAGE_SHIFT) as usize
    }

    /// Pages that are allocated in the tree but held by a page cache or free batch (not
    /// handed out). Counted from the bitmaps, in time proportional to grown memory; exact
    /// only while no lock-free operation runs.
    pub fn held_pages(&self) -> usize {
        let h = self.handed_out();
        let mut held = 0;
        for r in self.grown.ranges() {
            let npages = (r.size() >> PAGE_SHIFT) as usize;
            let mut addr = r.base;
            let mut left = npages;
            while left > 0 {
                let b = chunk_page_index(addr) % 64;
                let k = (64 - b).min(left);
                let mask = if k == 64 { !0 } else { ((1u64 << k) - 1) << b };
                let ci = ChunkIdx::of(addr);
                let w = chunk_page_index(addr) / 64;
                let alloc = self.alloc_word(ci, w);
                let out = h.chunk_word(ci, w).unwrap_or(0);
                held += (alloc & !out & mask).count_ones() as usize;
                addr += (k as u64) << PAGE_SHIFT;
                left -= k;
            }
        }
        held
    }

    /// The longest run of free pages, from the root summaries alone.
    pub fn largest_free_run(&self) -> usize {
        let full = 1usize << LEVEL_LOG_PAGES[0];
        let (mut most, mut run) = (0, 0);
        for i in 0..self.summary[0].len() {
            let (start, max, end) = self.sum(0, i).unpack();
            most = most.max(run + start).max(max);
            run = if start == full { run + full } else { end };
        }
        most.max(run)
    }

    /// The free runs in address order, as `(base, npages)`.
    pub fn free_runs(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
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
            if self.sum(LEAF, ci) != PallocSum::EMPTY
                && let Some((s, n)) = self.alloc_bits_of(ChunkIdx(ci)).next_free_run(idx)
            {
                {
                    let base = ChunkIdx(ci).base() + ((s as u64) << PAGE_SHIFT);
                    let mut npages = n;
                    if s + n == PALLOC_CHUNK_PAGES {
                        // The run may continue into the following chunks.
                        let mut c = ci + 1;
                        while c < self.end && self.sum(LEAF, c) == FREE_CHUNK_SUM {
                            npages += PALLOC_CHUNK_PAGES;
                            c += 1;
                        }
                        if c < self.end {
                            npages += self.sum(LEAF, c).start();
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
}

/// The iterator behind [`PageAlloc::free_runs`].
struct FreeRuns<'a, 'm> {
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
