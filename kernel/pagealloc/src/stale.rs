//! Lazy summaries: a change marks the summaries above it stale, and a read recomputes
//! what it needs. Not in Go, whose `update` re-merges every level on every change.
//!
//! Why: most operations never read the inner levels. An allocation at the search
//! address reads only its chunk's bitmap, and a single-page free reads nothing; yet Go
//! pays a chunk `summarize` and four 8-way merges for each of them. Here they mark their
//! chunk's leaf stale (`metadata::STALE`) and climb only until they meet an entry that is already stale,
//! so a run of changes in one chunk costs one load each after the first. A search
//! (`find`, the constrained search, the queries, [`Inspect`](crate::inspect::Inspect))
//! reads entries through [`PageAlloc::sum`], which recomputes a stale entry from its
//! children, recursively, and stores the result.
//!
//! Invariants (checked by `check_invariants`):
//! - the parent of a stale entry is stale (so a fresh entry's whole subtree is fresh);
//! - a fresh entry equals the summary recomputed from the bitmaps below it.

use crate::consts::*;
use crate::index::{ChunkIdx, LEAF};
use crate::summary::{PallocSum, merge_summaries};
use crate::tree::PageAlloc;

impl PageAlloc<'_> {
    /// Entry `i` of level `l`, recomputed first if it is stale.
    #[inline]
    pub(crate) fn sum(&self, l: usize, i: usize) -> PallocSum {
        match self.summary[l].cached(i) {
            Some(s) => s,
            None => self.refresh(l, i),
        }
    }

    /// The 8 entries of level `l` from `first`, a multiple of 8, each fresh.
    #[inline]
    pub(crate) fn block(&self, l: usize, first: usize) -> [PallocSum; SUMMARY_BLOCK_ENTRIES] {
        core::array::from_fn(|k| self.sum(l, first + k))
    }

    /// Recomputes a stale entry from the bitmaps or its children and caches it.
    fn refresh(&self, l: usize, i: usize) -> PallocSum {
        let s = if l == LEAF {
            match self.chunk_slot(ChunkIdx(i)) {
                Some(k) => self.chunks.load_alloc(k).summarize(),
                None => PallocSum::EMPTY,
            }
        } else {
            let first = i << LEVEL_BITS[l + 1];
            merge_summaries(&self.block(l + 1, first), LEVEL_LOG_PAGES[l + 1])
        };
        self.summary[l].refreshed(i, s);
        s
    }

    /// The bitmap of chunk `ci` changed: marks its leaf and the entries above it stale.
    #[inline]
    pub(crate) fn mark_chunk_stale(&mut self, ci: ChunkIdx) {
        if self.summary[LEAF].mark_stale(ci.0) {
            self.mark_parents_stale(ci.0);
        }
    }

    /// Marks the ancestors of leaf `ci` stale, stopping at the first one that already is
    /// (everything above it is then stale too).
    #[inline]
    pub(crate) fn mark_parents_stale(&mut self, ci: usize) {
        let mut i = ci;
        for l in (0..LEAF).rev() {
            i >>= LEVEL_BITS[l + 1];
            if !self.summary[l].mark_stale(i) {
                return;
            }
        }
    }

    /// The leaf summaries of chunks `first_chunk..=last_chunk` were written directly (or
    /// marked stale): marks every entry above them stale.
    pub(crate) fn leaves_written(&mut self, first_chunk: usize, last_chunk: usize) {
        let (mut lo, mut hi) = (first_chunk, last_chunk);
        for l in (0..LEAF).rev() {
            lo >>= LEVEL_BITS[l + 1];
            hi >>= LEVEL_BITS[l + 1];
            let mut any = false;
            for i in lo..=hi {
                any |= self.summary[l].mark_stale(i);
            }
            // All of them were stale already, and so is everything above them.
            if !any {
                return;
            }
        }
    }

    #[cfg(test)]
    fn is_stale(&self, l: usize, i: usize) -> bool {
        self.summary[l].cached(i).is_none()
    }

    #[cfg(test)]
    fn refresh_all(&self) {
        for i in 0..self.summary[0].len() {
            self.sum(0, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::HeapMetadata;
    use crate::{AddrRange, Contents, MetadataLayout};

    fn metadata(chunks: u64) -> HeapMetadata {
        let region = AddrRange::new(0, chunks * PALLOC_CHUNK_BYTES);
        HeapMetadata::new(&MetadataLayout::for_regions(&[region]).unwrap())
    }

    /// An allocator over `chunks` wholly free chunks from address 0.
    fn grown(md: &mut HeapMetadata, chunks: u64) -> PageAlloc<'_> {
        let region = AddrRange::new(0, chunks * PALLOC_CHUNK_BYTES);
        let layout = MetadataLayout::for_regions(&[region]).unwrap();
        let mut pa = PageAlloc::new(layout, md.metadata()).unwrap();
        pa.grow(region, Contents::Unknown).unwrap();
        pa
    }

    #[test]
    fn a_change_marks_up_to_the_first_stale_ancestor_and_a_read_refreshes() {
        let mut md = metadata(64);
        let mut pa = grown(&mut md, 64);
        pa.refresh_all();
        assert!((0..=LEAF).all(|l| !pa.is_stale(l, 0)));

        let a = pa.alloc(1).unwrap();
        // The allocation came from the search address's chunk: its leaf and every
        // ancestor are stale, nothing else.
        assert!((0..=LEAF).all(|l| pa.is_stale(l, 0)));
        assert!(!pa.is_stale(LEAF, 1));
        pa.check_invariants().unwrap();

        // A read of the root refreshes the path and sees the change.
        let root = pa.sum(0, 0);
        assert_eq!(root.start(), 0);
        assert_eq!(root.max(), 64 * PALLOC_CHUNK_PAGES - 1);
        assert!((0..=LEAF).all(|l| !pa.is_stale(l, 0)));
        pa.free(a.base, 1).unwrap();
        pa.check_invariants().unwrap();
        assert_eq!(pa.largest_free_run(), 64 * PALLOC_CHUNK_PAGES);
    }

    #[test]
    fn a_repeated_doomed_request_reads_nothing_until_a_free() {
        let mut md = metadata(16);
        let mut pa = grown(&mut md, 16);
        let a = pa.alloc(8 * PALLOC_CHUNK_PAGES).unwrap();
        let too_big = 8 * PALLOC_CHUNK_PAGES + 1;
        assert!(pa.alloc(too_big).is_err());
        // Change something (stale path), then fail again: the memo answers without
        // reading the tree, so the path stays stale.
        let b = pa.alloc(1).unwrap();
        assert!(pa.is_stale(0, 0));
        assert!(pa.alloc(too_big + 5).is_err());
        assert!(
            pa.alloc_constrained(too_big, crate::Constraints::aligned(1))
                .is_err()
        );
        assert!(pa.is_stale(0, 0));
        // A free forgets the memo: the same request is searched for again and succeeds.
        pa.free(a.base, 8 * PALLOC_CHUNK_PAGES).unwrap();
        pa.free(b.base, 1).unwrap();
        assert!(pa.alloc(too_big).is_ok());
        pa.check_invariants().unwrap();
    }

    #[test]
    fn whole_chunks_come_from_the_hint_and_a_scan_that_skips_fresh_entries() {
        let mut md = metadata(64);
        let mut pa = grown(&mut md, 64);
        let two_mib = crate::Constraints::aligned(PALLOC_CHUNK_PAGES);
        // One page in each of the first 40 chunks: no whole chunk below chunk 40.
        for c in 0..40 {
            pa.alloc_range(c * PALLOC_CHUNK_BYTES, 1).unwrap();
        }
        pa.refresh_all();
        let a = pa.alloc_constrained(PALLOC_CHUNK_PAGES, two_mib).unwrap();
        assert_eq!(a.base, 40 * PALLOC_CHUNK_BYTES);
        assert_eq!(pa.free_chunk_hint, 41);
        let b = pa.alloc_constrained(PALLOC_CHUNK_PAGES, two_mib).unwrap();
        assert_eq!(b.base, 41 * PALLOC_CHUNK_BYTES);
        // Freeing a whole chunk sets its leaf directly and lowers the hint.
        pa.free(a.base, PALLOC_CHUNK_PAGES).unwrap();
        assert!(!pa.is_stale(LEAF, 40));
        assert_eq!(pa.free_chunk_hint, 40);
        pa.check_invariants().unwrap();
        assert_eq!(
            pa.alloc_constrained(PALLOC_CHUNK_PAGES, two_mib)
                .unwrap()
                .base,
            a.base
        );
        // Full: the scan runs to the end once, then the hint says so.
        while pa.alloc_constrained(PALLOC_CHUNK_PAGES, two_mib).is_ok() {}
        assert_eq!(pa.free_chunk_hint, 64);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn the_check_finds_a_missing_mark_and_a_wrong_fresh_entry() {
        let mut md = metadata(16);
        let mut pa = grown(&mut md, 16);
        pa.refresh_all();
        pa.check_invariants().unwrap();
        // A change marked only at the leaf: its parent is fresh but no longer right.
        pa.summary[LEAF].mark_stale(3);
        assert_eq!(
            pa.check_invariants(),
            Err(crate::InvariantError::StaleBelowFresh {
                level: LEAF - 1,
                index: 0,
                child: 3
            })
        );
        // A read from the root does not reach it (everything above is fresh); a read of
        // the leaf itself does.
        pa.refresh_all();
        assert!(pa.is_stale(LEAF, 3));
        pa.sum(LEAF, 3);
        pa.check_invariants().unwrap();
        // A fresh leaf that disagrees with its bitmap.
        pa.summary[LEAF].set(5, PallocSum::EMPTY);
        assert!(matches!(
            pa.check_invariants(),
            Err(crate::InvariantError::Summary {
                level: LEAF,
                index: 5,
                ..
            })
        ));
    }
}
