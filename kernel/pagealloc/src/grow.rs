//! Growth: making memory from a boot memory map free, page-granular. Go:
//! `(*pageAlloc).grow` (whole chunks there).

use core::sync::atomic::Ordering;

use crate::consts::*;
use crate::errors::GrowError;
use crate::handedout::WORDS_PER_CHUNK;
use crate::index::*;
use crate::layout::l2_blocks_of;
use crate::metadata::NO_BLOCK;
use crate::pallocbits::PallocData;
use crate::ranges::{AddrRange, RangeError};
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

        // Chunks seen for the first time start out allocated, so pages that no grow
        // covers are never handed out.
        for b in b0..=b1 {
            if self.chunk_map[b].load(Ordering::Relaxed) == NO_BLOCK {
                let first = self.l2_used * PALLOC_CHUNKS_L2_ENTRIES;
                let mut all_allocated = PallocData::default();
                all_allocated.alloc_all();
                self.chunks
                    .fill(first..first + PALLOC_CHUNKS_L2_ENTRIES, all_allocated);
                let words =
                    first * WORDS_PER_CHUNK..(first + PALLOC_CHUNKS_L2_ENTRIES) * WORDS_PER_CHUNK;
                for w in &self.handed_out[words] {
                    w.store(0, Ordering::Relaxed);
                }
                // Release: a lock-free reader that finds the block sees its bits cleared.
                self.chunk_map[b].store(self.l2_used as u64, Ordering::Release);
                self.l2_used += 1;
            }
        }
        let npages = (size_bytes >> PAGE_SHIFT) as usize;
        self.for_each_chunk_piece(base, npages, |chunk, i, n| {
            chunk.free(i, n);
            if contents == Contents::Zeroed {
                chunk.known_zero.set_range(i, n);
            }
        });

        self.start = self.start.min(ChunkIdx::of(base).0);
        self.end = self.end.max(ChunkIdx::of(limit - 1).0 + 1);
        self.update(base, npages, true, false);
        // A grow is like a free: the new memory may lie below the search address.
        self.note_freed(base, npages);
        Ok(())
    }
}
