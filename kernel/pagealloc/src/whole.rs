//! Whole chunks: a 2 MiB aligned run of 512 pages is exactly one chunk, so its alloc and
//! free write the chunk's words straight (no per-word masks), set its leaf summary
//! directly and look the chunk up once (not in Go, whose huge pages take the general
//! paths). The constrained search finds such a chunk from the leaf summaries
//! (`find_free_chunk` in `constrained.rs`).

use crate::consts::*;
use crate::index::{ChunkIdx, LEAF};
use crate::summary::{FREE_CHUNK_SUM, PallocSum};
use crate::tree::{Allocation, PageAlloc};

/// Whether `[base, base + npages pages)` is exactly one chunk.
#[inline]
pub(crate) fn is_whole_chunk(base: u64, npages: usize) -> bool {
    npages == PALLOC_CHUNK_PAGES && base.is_multiple_of(PALLOC_CHUNK_BYTES)
}

impl PageAlloc<'_> {
    /// Marks chunk `ci`, which must be grown and wholly free, allocated; returns its pool
    /// entry and how many of its pages were known to be zero.
    pub(crate) fn alloc_chunk(&mut self, ci: ChunkIdx) -> (usize, usize) {
        let k = self.grown_slot(ci);
        let zeroed = self.chunks.alloc_whole(k);
        self.free_pages -= PALLOC_CHUNK_PAGES;
        self.summary[LEAF].set(ci.0, PallocSum::EMPTY);
        self.mark_parents_stale(ci.0);
        (k, zeroed)
    }

    /// Hands out chunk `ci`, grown and wholly free, first calling `dirty` for each run of
    /// its pages not known to be zero (as `alloc_found` does for any run).
    pub(crate) fn hand_out_chunk(
        &mut self,
        ci: ChunkIdx,
        dirty: Option<&mut dyn FnMut(u64, usize)>,
    ) -> Allocation {
        if let Some(f) = dirty {
            self.visit_dirty(ci.base(), PALLOC_CHUNK_PAGES, f);
        }
        let (k, zeroed_pages) = self.alloc_chunk(ci);
        self.handed_out().set_chunk(k, ci.base());
        Allocation {
            base: ci.base(),
            npages: PALLOC_CHUNK_PAGES,
            zeroed_pages,
        }
    }

    /// `free(base, 512)` of a chunk whose every page is handed out: as for a single page
    /// (`single.rs`), the handed-out bits prove the chunk grown and allocated, so the
    /// grown-range search is skipped. False (and nothing changed) if some bit was clear:
    /// the caller then finds the error the general path reports.
    pub(crate) fn free_chunk_handed_out(&mut self, base: u64) -> bool {
        let ci = ChunkIdx::of(base);
        let Some(k) = self.chunk_slot(ci) else {
            return false;
        };
        if self.handed_out().take_chunk(k, base).is_err() {
            return false;
        }
        self.chunks.free_whole(k);
        self.summary[LEAF].set(ci.0, FREE_CHUNK_SUM);
        self.mark_parents_stale(ci.0);
        self.note_freed(base, PALLOC_CHUNK_PAGES);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::errors::RangeOpError;
    use crate::testutil::{HeapMetadata, hold};
    use crate::{AddrRange, Constraints, Contents, MetadataLayout};

    const CHUNK: usize = PALLOC_CHUNK_PAGES;
    const TWO_MIB: Constraints = Constraints::aligned(CHUNK);

    /// Eight chunks from 16 MiB, grown as zero.
    fn zeroed(md: &mut HeapMetadata) -> PageAlloc<'_> {
        let r = AddrRange::new(8 * PALLOC_CHUNK_BYTES, 16 * PALLOC_CHUNK_BYTES);
        let mut pa = md.page_alloc(MetadataLayout::for_regions(&[r]).unwrap());
        pa.grow(r, Contents::Zeroed).unwrap();
        pa
    }

    #[test]
    fn a_chunk_round_trip_sets_its_leaf_and_keeps_known_zero_exact() {
        let mut md = HeapMetadata::default();
        let mut pa = zeroed(&mut md);
        let total = pa.free_pages();
        let a = pa.alloc_constrained(CHUNK, TWO_MIB).unwrap();
        assert_eq!(
            (a.base, a.npages, a.zeroed_pages),
            (8 * PALLOC_CHUNK_BYTES, CHUNK, CHUNK)
        );
        let ci = ChunkIdx::of(a.base);
        assert_eq!(pa.summary[LEAF].cached(ci.0), Some(PallocSum::EMPTY));
        assert!((0..CHUNK as u64).all(|p| pa.handed_out().is_handed_out(a.base + p * PAGE_SIZE)));
        pa.check_invariants().unwrap();
        pa.free(a.base, CHUNK).unwrap();
        assert_eq!(pa.summary[LEAF].cached(ci.0), Some(FREE_CHUNK_SUM));
        assert_eq!(pa.free_pages(), total);
        pa.check_invariants().unwrap();
        // A freed chunk is dirty; one page of it freed as zero is known zero again, and
        // the dirty callback sees the two runs around it.
        let b = pa.alloc_constrained(CHUNK, TWO_MIB).unwrap();
        assert_eq!((b.base, b.zeroed_pages), (a.base, 0));
        pa.free(b.base, CHUNK).unwrap();
        let zero_page = b.base + 100 * PAGE_SIZE;
        pa.alloc_range(zero_page, 1).unwrap();
        pa.free_zeroed(zero_page, 1).unwrap();
        let mut dirty = Vec::new();
        let c = pa
            .alloc_constrained_with(CHUNK, TWO_MIB, &mut |base, n| dirty.push((base, n)))
            .unwrap();
        assert_eq!((c.base, c.zeroed_pages), (a.base, 1));
        assert_eq!(dirty, [(a.base, 100), (zero_page + PAGE_SIZE, CHUNK - 101)]);
        pa.check_invariants().unwrap();
        // The same chunk through `alloc_range`, and its free.
        pa.free(c.base, CHUNK).unwrap();
        let d = pa.alloc_range(9 * PALLOC_CHUNK_BYTES, CHUNK).unwrap();
        assert_eq!(d.zeroed_pages, CHUNK);
        assert_eq!(pa.summary[LEAF].cached(9), Some(PallocSum::EMPTY));
        pa.check_invariants().unwrap();
        pa.free(d.base, CHUNK).unwrap();
        assert_eq!(pa.free_pages(), total);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn bad_chunk_frees_are_refused_and_change_nothing() {
        let mut md = HeapMetadata::default();
        let mut pa = zeroed(&mut md);
        let a = pa.alloc_constrained(CHUNK, TWO_MIB).unwrap();
        // One page of the chunk was freed already: the chunk free names it.
        let page = a.base + 37 * PAGE_SIZE;
        pa.free(page, 1).unwrap();
        let free = pa.free_pages();
        assert_eq!(
            pa.free(a.base, CHUNK),
            Err(RangeOpError::NotAllocated {
                base: a.base,
                npages: CHUNK,
                page
            })
        );
        assert_eq!(pa.free_pages(), free);
        pa.check_invariants().unwrap();
        // The rest is still handed out: the page comes back and the chunk can go.
        pa.alloc_range(page, 1).unwrap();
        // One page held by a cache or batch: refused as held.
        let held = a.base + 511 * PAGE_SIZE;
        hold(&pa, held, 1).unwrap();
        assert_eq!(
            pa.free(a.base, CHUNK),
            Err(RangeOpError::Held {
                base: a.base,
                npages: CHUNK,
                page: held
            })
        );
        assert!(pa.handed_out().is_handed_out(a.base));
        pa.check_invariants().unwrap();
        pa.handed_out().set(held, 1);
        pa.free(a.base, CHUNK).unwrap();
        // A double free, and a chunk never grown.
        assert_eq!(
            pa.free(a.base, CHUNK),
            Err(RangeOpError::NotAllocated {
                base: a.base,
                npages: CHUNK,
                page: a.base
            })
        );
        assert!(matches!(
            pa.free(0, CHUNK),
            Err(RangeOpError::NotGrown {
                base: 0,
                npages: CHUNK,
                ..
            })
        ));
        assert_eq!(pa.free_pages(), 8 * CHUNK);
        pa.check_invariants().unwrap();
    }
}
