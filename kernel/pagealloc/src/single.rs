//! Single pages: the paths that hand out or take back one page without reading the tree
//! above its chunk (not in Go, whose every change recomputes the summaries). They look
//! the chunk up once, change one bit in place and leave the summaries to `stale.rs`:
//! nothing at all if a fresh leaf provably keeps its value, else one mark.
//!
//! The entry points are `#[inline(always)]`: with `#[inline]` the compiler kept them
//! calls, which cost a fifth of a single-page allocation (callgrind, fill at 256 MiB:
//! 159 -> 127 instructions per allocation, 101 -> 92 per free, bench loop included).

use crate::consts::*;
use crate::handedout::take_one;
use crate::index::{ChunkIdx, LEAF, chunk_page_index};
use crate::metadata::ALLOC_WORDS;
use crate::summary::PallocSum;
use crate::tree::{Allocation, PageAlloc};

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

impl<'m> PageAlloc<'m> {
    /// Page `i` of chunk `ci` (pool entry `k`) alone was flipped (freed if `freed`). A
    /// fresh leaf that the flip leaves as it was stays fresh; otherwise the path to the
    /// root goes stale. A stale leaf costs nothing more.
    ///
    /// The stale test is inlined into the fast paths (most flips in a run of changes find
    /// the leaf stale already); the rest is a call.
    #[inline(always)]
    pub(crate) fn one_page_flipped(&mut self, ci: ChunkIdx, k: usize, i: usize, freed: bool) {
        if let Some(old) = self.summary[LEAF].cached(ci.0) {
            self.fresh_leaf_flipped(ci, k, i, freed, old);
        }
    }

    /// [`PageAlloc::one_page_flipped`] when the leaf was fresh, holding `old`.
    #[inline(never)]
    fn fresh_leaf_flipped(
        &mut self,
        ci: ChunkIdx,
        k: usize,
        i: usize,
        freed: bool,
        old: PallocSum,
    ) {
        if !one_page_keeps_summary(self.chunks.load_alloc(k).words(), i, old, freed) {
            self.mark_chunk_stale(ci);
        }
    }

    /// `alloc(1)` when the page is in the search address's chunk: the path that page
    /// cache misses and uncached single pages take. Scans the allocation words from the
    /// search address on, so the page is the one `find` would return; sets one bit in
    /// place; the summaries are only marked (`stale.rs`). Returns the page and whether it
    /// was known to be zero; `None` sends the request to the general path. (Scanning the
    /// next few chunks too saved a tenth of an uncached churn pair but cost fill a
    /// tenth: not kept.)
    #[inline(always)]
    pub(crate) fn alloc_one_at_search_addr(&mut self) -> Option<Allocation> {
        let ci = ChunkIdx::of(self.search_addr);
        // Beyond every grown chunk (the search address may be `MAX_SEARCH_ADDR`), or no
        // free page in the chunk.
        if ci.0 >= self.end || self.summary[LEAF].cached(ci.0) == Some(PallocSum::EMPTY) {
            return None;
        }
        let k = self.chunk_slot(ci)?;
        let i = self.first_free_from(k, chunk_page_index(self.search_addr))?;
        Some(self.hand_out_one(ci, k, i))
    }

    /// The first free page at or after page `from` of pool entry `k`.
    #[inline]
    pub(crate) fn first_free_from(&self, k: usize, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut word = self.chunks.word(k, ALLOC_WORDS + w) | ((1u64 << (from % 64)) - 1);
        while word == !0 {
            w += 1;
            if w == PALLOC_CHUNK_PAGES / 64 {
                return None;
            }
            word = self.chunks.word(k, ALLOC_WORDS + w);
        }
        Some(w * 64 + (!word).trailing_zeros() as usize)
    }

    /// Hands out free page `i` of chunk `ci` (pool entry `k`), the first free page at or
    /// after the search address, and moves the search address to it.
    #[inline(always)]
    pub(crate) fn hand_out_one(&mut self, ci: ChunkIdx, k: usize, i: usize) -> Allocation {
        let zeroed = self.chunks.flip_one(k, i, true);
        self.free_pages -= 1;
        self.one_page_flipped(ci, k, i, false);
        let page = ci.base() + ((i as u64) << PAGE_SHIFT);
        let handed_out = self.handed_out();
        handed_out.set_one(handed_out.slot_word(k, i), page);
        self.search_addr = page;
        Allocation {
            base: page,
            npages: 1,
            zeroed_pages: usize::from(zeroed),
        }
    }

    /// `free(base, 1)` of a page that is handed out: its handed-out bit, taken with one
    /// atomic `fetch_and`, proves the page grown and allocated, so the grown-range
    /// search is skipped. False (and nothing changed) if the bit was not set: the caller
    /// then finds the error the general path reports.
    #[inline(always)]
    pub(crate) fn free_one_handed_out(&mut self, base: u64) -> bool {
        let ci = ChunkIdx::of(base);
        let Some(k) = self.chunk_slot(ci) else {
            return false;
        };
        let i = chunk_page_index(base);
        if !take_one(self.handed_out().slot_word(k, i), base) {
            return false;
        }
        self.chunks.flip_one(k, i, false);
        self.one_page_flipped(ci, k, i, true);
        self.note_freed(base, 1);
        true
    }
}
