//! Growth: making memory from a boot memory map free, page-granular. Go:
//! `(*pageAlloc).grow` (whole chunks there).

use core::sync::atomic::Ordering;

use crate::consts::*;
use crate::errors::GrowError;
use crate::handedout::WORDS_PER_CHUNK;
use crate::index::*;
use crate::layout::l2_blocks_of;
use crate::metadata::NO_BLOCK;
use crate::pallocbits::for_each_word_in_range;
use crate::ranges::{AddrRange, RangeError};
use crate::summary::FREE_CHUNK_SUM;
use crate::tree::{Contents, PageAlloc};

impl PageAlloc<'_> {
    /// Makes the pages of `region` free, page-granular. Pages of the chunks it
    /// touches that no grow covered stay allocated. Go: `(*pageAlloc).grow`.
    pub fn grow(&mut self, region: AddrRange, contents: Contents) -> Result<(), GrowError> {
        let AddrRange { base, limit } = region;
        if limit <= base {
            return Err(GrowError::Empty { region });
        }
        if !base.is_multiple_of(PAGE_SIZE) || !limit.is_multiple_of(PAGE_SIZE) {
            return Err(GrowError::Unaligned { region });
        }
        let size_bytes = limit - base;
        let span_limit = self.layout.span_limit();
        if limit > span_limit {
            return Err(GrowError::BeyondSpan { region, span_limit });
        }
        let i = self.grown.find_succ(base);
        let ranges = self.grown.ranges();
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
        match self.grown.add(region) {
            Ok(()) => {}
            Err(RangeError::Full { capacity }) => {
                return Err(GrowError::TooManyRanges { region, capacity });
            }
            Err(e) => panic!("pagealloc: grown ranges rejected a checked region: {e}"),
        }

        // One pass: each chunk's words are written once, and its leaf set (a wholly free
        // chunk) or marked stale (a part); then the levels above are marked stale.
        let (sc, ec) = (ChunkIdx::of(base).0, ChunkIdx::of(limit - 1).0);
        let (si, ei) = (chunk_page_index(base), chunk_page_index(limit - 1));
        let zeroed = contents == Contents::Zeroed;
        // Chunks seen for the first time start out allocated, so pages that no grow
        // covers are never handed out; chunks wholly inside the region are free.
        let (all_allocated, whole_free) = (
            ([!0; 8], [0; 8]),
            ([0; 8], [if zeroed { !0 } else { 0 }; 8]),
        );
        for b in b0..=b1 {
            let new = self.chunk_map[b].load(Ordering::Relaxed) == NO_BLOCK;
            if new {
                let first = self.l2_used * PALLOC_CHUNKS_L2_ENTRIES;
                let words =
                    first * WORDS_PER_CHUNK..(first + PALLOC_CHUNKS_L2_ENTRIES) * WORDS_PER_CHUNK;
                for w in &self.handed_out[words] {
                    w.store(0, Ordering::Relaxed);
                }
                // Release: a lock-free reader that finds the block sees its bits cleared.
                self.chunk_map[b].store(self.l2_used as u64, Ordering::Release);
                self.l2_used += 1;
            }
            // This block's chunks [c0, c1) and pool slots from `k0`; the region covers
            // [lo, hi) of them, wholly [whole_lo, whole_hi).
            let c0 = b * PALLOC_CHUNKS_L2_ENTRIES;
            let c1 = c0 + PALLOC_CHUNKS_L2_ENTRIES;
            let k0 = self.chunk_map[b].load(Ordering::Relaxed) as usize * PALLOC_CHUNKS_L2_ENTRIES;
            let (lo, hi) = (sc.max(c0), (ec + 1).min(c1));
            let whole_lo = if lo == sc && si != 0 { lo + 1 } else { lo };
            let whole_hi = if hi == ec + 1 && ei != PALLOC_CHUNK_PAGES - 1 {
                hi - 1
            } else {
                hi
            };
            if new {
                self.chunks.fill(k0..k0 + (lo - c0), all_allocated);
                self.chunks
                    .fill(k0 + (hi - c0)..k0 + PALLOC_CHUNKS_L2_ENTRIES, all_allocated);
            }
            if whole_lo < whole_hi {
                // None of these pages was free (or known zero) before.
                self.chunks
                    .fill(k0 + (whole_lo - c0)..k0 + (whole_hi - c0), whole_free);
                self.summary[LEAF].fill(whole_lo..whole_hi, FREE_CHUNK_SUM);
            }
            // At most two chunks, at the region's ends, are grown in part.
            for c in (lo..whole_lo).chain(whole_hi.max(whole_lo)..hi) {
                let i = if c == sc { si } else { 0 };
                let j = if c == ec { ei } else { PALLOC_CHUNK_PAGES - 1 };
                self.grow_part_of_chunk(c, k0 + (c - c0), new, i, j + 1 - i, zeroed);
            }
        }
        self.leaves_written(sc, ec);
        let npages = (size_bytes >> PAGE_SHIFT) as usize;

        self.start = self.start.min(ChunkIdx::of(base).0);
        self.end = self.end.max(ChunkIdx::of(limit - 1).0 + 1);
        // A grow is like a free: the new memory may lie below the search address.
        self.note_freed(base, npages);
        Ok(())
    }

    /// Frees pages `[i, i + n)` of chunk `c` (pool slot `k`, all allocated before if
    /// its block is `new`) for a grow, and marks its leaf stale.
    fn grow_part_of_chunk(
        &mut self,
        c: usize,
        k: usize,
        new: bool,
        i: usize,
        n: usize,
        zeroed: bool,
    ) {
        let (mut alloc, mut known_zero) = if new {
            ([!0; 8], [0; 8])
        } else {
            (self.chunks.alloc_words(k), self.chunks.known_zero_words(k))
        };
        for_each_word_in_range(i, n, |w, mask| {
            alloc[w] &= !mask;
            if zeroed {
                known_zero[w] |= mask;
            }
        });
        self.chunks.store(k, alloc, known_zero);
        // The next read summarizes it (`stale.rs`).
        self.summary[LEAF].mark_stale(c);
    }
}
