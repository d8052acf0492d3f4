//! The memory the allocator keeps its state in: one slice of words that the caller
//! provides ([`MetadataLayout::words`] long) and that the crate splits itself, safely.
//!
//! # Why every word is an `AtomicU64`
//! The handed-out bits and the chunk map are read and written without the allocator's
//! lock (by [`HandedOut`](crate::HandedOut)), so they must be atomics. A `&mut [u64]` cannot
//! be turned into atomics in safe stable Rust (`AtomicU64::from_mut_slice` is unstable),
//! and the crate forbids `unsafe`; so the caller hands over `&mut [AtomicU64]` for all of
//! it (a kernel makes that slice from its frames with one `from_raw_parts_mut`, which
//! `AtomicU64`'s layout, equal to `u64`'s, allows). The summaries and chunk bitmaps,
//! which only `&mut PageAlloc` changes, are written through `AtomicU64::get_mut` (plain
//! stores) and read with relaxed loads (plain loads on x86_64); a chunk's bitmaps are
//! changed in place, word by word, or copied into a [`PallocData`] value to be searched
//! or changed, and written back. A chunk's record is 8 words of allocation bits and,
//! unless the layout turns known-zero tracking off, 8 words of known-zero bits, kept in
//! a second array (see [`Chunks`]).

use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::consts::{PALLOC_CHUNK_PAGES, SUMMARY_LEVELS};
use crate::errors::LayoutError;
use crate::layout::MetadataLayout;
use crate::pallocbits::{PallocBits, PallocData, for_each_word_in_range};
use crate::summary::PallocSum;

/// Words of one chunk's allocation bits (the whole record without known-zero bits).
pub(crate) const ALLOC_ONLY_CHUNK_WORDS: usize = 8;
/// Words of one chunk's record with known-zero bits: 8 of allocation bits and 8 of
/// known-zero bits.
pub(crate) const CHUNK_WORDS: usize = 16;

/// Word `w` of a chunk's record that holds allocation bit `i` (`w < 8`; see
/// [`Chunks::word`]).
pub(crate) const ALLOC_WORDS: usize = 0;
/// Word `8 + i / 64` holds the known-zero bit of page `i`.
pub(crate) const KNOWN_ZERO_WORDS: usize = 8;

/// The chunk-map entry of a block of chunks that has no bitmaps yet.
pub(crate) const NO_BLOCK: u64 = u64::MAX;

/// The raw word of a summary entry that is stale: some bitmap below it changed since it
/// was computed (see `stale.rs`). Not a valid packing: bit 63 alone means "all free".
pub(crate) const STALE: u64 = u64::MAX;

/// One level of the summary tree. An entry holds a packed [`PallocSum`] or [`STALE`].
#[derive(Default)]
pub(crate) struct Level<'m>(&'m mut [AtomicU64]);

impl Level<'_> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The entry as stored: `None` if it is stale.
    #[inline]
    pub(crate) fn cached(&self, i: usize) -> Option<PallocSum> {
        let raw = self.0[i].load(Relaxed);
        (raw != STALE).then_some(PallocSum::from_bits(raw))
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize, s: PallocSum) {
        *self.0[i].get_mut() = s.to_bits();
    }

    /// Stores a recomputed entry through a shared reference: a read that refreshes a
    /// stale entry caches what it computed. Bitmaps change only under `&mut`, so two
    /// readers refreshing the same entry store the same value.
    #[inline]
    pub(crate) fn refreshed(&self, i: usize, s: PallocSum) {
        self.0[i].store(s.to_bits(), Relaxed);
    }

    /// Marks entry `i` stale; false if it already was.
    #[inline]
    pub(crate) fn mark_stale(&mut self, i: usize) -> bool {
        let w = self.0[i].get_mut();
        let was_fresh = *w != STALE;
        *w = STALE;
        was_fresh
    }

    /// Sets entries `r` to `s` (fresh).
    pub(crate) fn fill(&mut self, r: Range<usize>, s: PallocSum) {
        for w in &mut self.0[r] {
            *w.get_mut() = s.to_bits();
        }
    }
}

/// The pool of chunk bitmaps: entry `k`'s allocation words, and (with known-zero
/// tracking on) its known-zero words in a second array of the same length. Apart, each
/// part of an entry is one fixed-size array (one bounds check to reach it, the cost it had
/// when the entry was 16 interleaved words), and the allocation bits that searches read
/// lie densely, one cache line per chunk.
pub(crate) struct Chunks<'m> {
    alloc: &'m mut [[AtomicU64; 8]],
    /// Empty without known-zero tracking.
    known_zero: &'m mut [[AtomicU64; 8]],
}

impl Chunks<'_> {
    /// A copy of entry `k` (known-zero bits all clear without tracking).
    #[inline]
    pub(crate) fn load(&self, k: usize) -> PallocData {
        PallocData::from_parts(self.alloc_words(k), self.known_zero_words(k))
    }

    /// Word `w` of entry `k` (see [`ALLOC_WORDS`], [`KNOWN_ZERO_WORDS`]); a known-zero
    /// word is 0 without tracking.
    #[inline]
    pub(crate) fn word(&self, k: usize, w: usize) -> u64 {
        if w < KNOWN_ZERO_WORDS {
            self.alloc[k][w - ALLOC_WORDS].load(Relaxed)
        } else {
            self.known_zero
                .get(k)
                .map_or(0, |z| z[w - KNOWN_ZERO_WORDS].load(Relaxed))
        }
    }

    /// A copy of the allocation bits of entry `k` (half the words of [`Chunks::load`]).
    #[inline]
    pub(crate) fn load_alloc(&self, k: usize) -> PallocBits {
        PallocBits::from_words(self.alloc_words(k))
    }

    /// The allocation words of entry `k`.
    #[inline]
    pub(crate) fn alloc_words(&self, k: usize) -> [u64; 8] {
        self.alloc[k].each_ref().map(|w| w.load(Relaxed))
    }

    /// The known-zero words of entry `k` (all 0 without tracking).
    #[inline]
    pub(crate) fn known_zero_words(&self, k: usize) -> [u64; 8] {
        self.known_zero
            .get(k)
            .map_or([0; 8], |z| z.each_ref().map(|w| w.load(Relaxed)))
    }

    /// Sets (`allocated`) or clears the allocation bit of page `i` of entry `k`; an
    /// allocation also clears the page's known-zero bit, and says whether it was set.
    /// The single-page paths use this instead of [`Chunks::with`], which copies the whole
    /// entry both ways.
    #[inline]
    pub(crate) fn flip_one(&mut self, k: usize, i: usize, allocated: bool) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let alloc = &mut self.alloc[k];
        let mut zeroed = false;
        if allocated {
            if let Some(z) = self.known_zero.get_mut(k) {
                let z = z[word].get_mut();
                zeroed = *z & bit != 0;
                *z &= !bit;
            }
            *alloc[word].get_mut() |= bit;
        } else {
            *alloc[word].get_mut() &= !bit;
        }
        zeroed
    }

    /// Marks pages `[i, i + n)` of entry `k` allocated and not zero, touching only the
    /// words the range covers; returns how many of them were known to be zero.
    #[inline]
    pub(crate) fn alloc_range(&mut self, k: usize, i: usize, n: usize) -> usize {
        let alloc = &mut self.alloc[k];
        let mut known_zero = self.known_zero.get_mut(k);
        let mut zeroed = 0;
        for_each_word_in_range(i, n, |j, mask| {
            // `count_ones` is a long sequence without a `popcnt` target feature; most
            // words have no known-zero bit.
            if let Some(z) = known_zero.as_mut()
                && *z[j].get_mut() & mask != 0
            {
                let z = z[j].get_mut();
                zeroed += (*z & mask).count_ones() as usize;
                *z &= !mask;
            }
            *alloc[j].get_mut() |= mask;
        });
        zeroed
    }

    /// Marks every page of entry `k` allocated and not zero (a 2 MiB allocation); returns
    /// how many were known to be zero. Straight stores, no per-word masks.
    #[inline]
    pub(crate) fn alloc_whole(&mut self, k: usize) -> usize {
        let mut zeroed = 0;
        if let Some(z) = self.known_zero.get_mut(k) {
            let words = z.each_mut().map(|w| core::mem::take(w.get_mut()));
            // All or none is the common case; `count_ones` is long without `popcnt`.
            // (Folds, not `==` on arrays, which calls `memcmp`.)
            zeroed = if words.iter().fold(0, |a, w| a | w) == 0 {
                0
            } else if words.iter().fold(u64::MAX, |a, w| a & w) == u64::MAX {
                PALLOC_CHUNK_PAGES
            } else {
                words.iter().map(|w| w.count_ones() as usize).sum()
            };
        }
        store_words(&mut self.alloc[k], [u64::MAX; 8]);
        zeroed
    }

    /// Marks every page of entry `k` free (a 2 MiB free); known-zero bits stay clear.
    #[inline]
    pub(crate) fn free_whole(&mut self, k: usize) {
        store_words(&mut self.alloc[k], [0; 8]);
    }

    /// Marks pages `[i, i + n)` of entry `k` free, touching only the words the range
    /// covers; their known-zero bits are left alone (a freed page is dirty).
    #[inline]
    pub(crate) fn free_range(&mut self, k: usize, i: usize, n: usize) {
        let alloc = &mut self.alloc[k];
        for_each_word_in_range(i, n, |j, mask| *alloc[j].get_mut() &= !mask);
    }

    /// Sets the known-zero bits of pages `[i, i + n)` of entry `k` (nothing without
    /// tracking).
    #[inline]
    pub(crate) fn set_known_zero(&mut self, k: usize, i: usize, n: usize) {
        if let Some(z) = self.known_zero.get_mut(k) {
            for_each_word_in_range(i, n, |j, mask| *z[j].get_mut() |= mask);
        }
    }

    /// Stores entry `k`'s allocation and known-zero words (the latter dropped without
    /// tracking).
    #[inline]
    pub(crate) fn store(&mut self, k: usize, alloc: [u64; 8], known_zero: [u64; 8]) {
        store_words(&mut self.alloc[k], alloc);
        if let Some(z) = self.known_zero.get_mut(k) {
            store_words(z, known_zero);
        }
    }

    /// Sets entries `r` to `(alloc, known_zero)` words, as [`Chunks::store`] does each.
    pub(crate) fn fill(&mut self, r: Range<usize>, (alloc, known_zero): ([u64; 8], [u64; 8])) {
        for e in &mut self.alloc[r.clone()] {
            store_words(e, alloc);
        }
        if let Some(zs) = self.known_zero.get_mut(r) {
            for e in zs {
                store_words(e, known_zero);
            }
        }
    }

    /// Runs `f` on entry `k` and stores what it leaves (without tracking, `f` sees no
    /// known-zero bits and what it sets there is dropped).
    #[inline]
    pub(crate) fn with<R>(&mut self, k: usize, f: impl FnOnce(&mut PallocData) -> R) -> R {
        let mut data = self.load(k);
        let r = f(&mut data);
        self.store(k, *data.alloc.words(), *data.known_zero.words());
        r
    }
}

/// Plain stores of `v` into `w` (only `&mut PageAlloc` changes the bitmaps).
#[inline]
fn store_words(w: &mut [AtomicU64; 8], v: [u64; 8]) {
    for (x, v) in w.iter_mut().zip(v) {
        *x.get_mut() = v;
    }
}

/// The metadata split into its parts.
pub(crate) struct Parts<'m> {
    pub(crate) summary: [Level<'m>; SUMMARY_LEVELS],
    pub(crate) chunk_map: &'m [AtomicU64],
    pub(crate) chunks: Chunks<'m>,
    pub(crate) handed_out: &'m [AtomicU64],
}

/// Splits `words` as `layout` says: every summary level (root first), the chunk map, the
/// chunk bitmaps, the handed-out bits. Initialises the summaries and the chunk map; the
/// bitmaps and handed-out bits are set when `grow` first touches their block.
pub(crate) fn split<'m>(
    layout: &MetadataLayout,
    words: &'m mut [AtomicU64],
) -> Result<Parts<'m>, LayoutError> {
    let needed = layout.words();
    if words.len() < needed {
        return Err(LayoutError::TooSmall {
            needed_words: needed,
            provided_words: words.len(),
        });
    }
    let mut rest = &mut words[..needed];
    let mut take = |n: usize| {
        let (this, tail) = core::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        this
    };
    let mut summary: [Level<'m>; SUMMARY_LEVELS] = Default::default();
    for (l, level) in summary.iter_mut().enumerate() {
        let this = take(layout.level_len()[l]);
        for w in this.iter_mut() {
            *w.get_mut() = PallocSum::EMPTY.to_bits();
        }
        *level = Level(this);
    }
    let chunk_map = take(layout.chunk_map_entries());
    for w in chunk_map.iter_mut() {
        *w.get_mut() = NO_BLOCK;
    }
    // The chunk bitmaps: every entry's allocation words, then (with tracking) every
    // entry's known-zero words.
    let entries = layout.chunk_entries();
    let (alloc, _) = take(entries * ALLOC_ONLY_CHUNK_WORDS).as_chunks_mut();
    let (known_zero, _) =
        take(entries * (layout.chunk_words() - ALLOC_ONLY_CHUNK_WORDS)).as_chunks_mut();
    let chunks = Chunks { alloc, known_zero };
    let handed_out = take(layout.handed_out_words());
    Ok(Parts {
        summary,
        chunk_map,
        chunks,
        handed_out,
    })
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::testutil::Rng;

    /// The in-place range operations against [`PallocData`]'s, with and without
    /// known-zero words; neighbouring entries never change.
    #[test]
    fn in_place_changes_match_palloc_data() {
        for known_zero in [true, false] {
            let new = || core::array::from_fn(|_| AtomicU64::new(0));
            let mut alloc: Vec<[AtomicU64; 8]> = (0..3).map(|_| new()).collect();
            let n = if known_zero { 3 } else { 0 };
            let mut zero: Vec<[AtomicU64; 8]> = (0..n).map(|_| new()).collect();
            let mut chunks = Chunks {
                alloc: &mut alloc,
                known_zero: &mut zero,
            };
            let mut r = Rng(0x1234_5678_9abc_def1);
            let mut want = [PallocData::default(); 3];
            for (k, w) in want.iter_mut().enumerate() {
                let alloc = core::array::from_fn(|_| r.next());
                let zero: [u64; 8] = core::array::from_fn(|j| r.next() & !alloc[j]);
                chunks.store(k, alloc, zero);
                *w = PallocData::from_parts(alloc, if known_zero { zero } else { [0; 8] });
            }
            for step in 0..2000 {
                let k = r.below(3) as usize;
                let i = r.below(PALLOC_CHUNK_PAGES as u64) as usize;
                let n = match r.below(4) {
                    0 => PALLOC_CHUNK_PAGES - i,
                    1 => 1,
                    _ => 1 + r.below((PALLOC_CHUNK_PAGES - i) as u64) as usize,
                };
                let w = &mut want[k];
                match r.below(4) {
                    0 => {
                        let zeroed = w.known_zero.popcnt_range(i, n);
                        w.alloc_range(i, n);
                        assert_eq!(chunks.alloc_range(k, i, n), zeroed, "step {step}");
                    }
                    1 => {
                        w.free(i, n);
                        chunks.free_range(k, i, n);
                    }
                    2 => {
                        // Only free pages become known zero, as the callers ensure.
                        w.free(i, n);
                        if known_zero {
                            w.known_zero.set_range(i, n);
                        }
                        chunks.free_range(k, i, n);
                        chunks.set_known_zero(k, i, n);
                    }
                    _ => {
                        let allocated = r.below(2) == 0;
                        let zeroed = allocated && w.known_zero.get(i);
                        if allocated {
                            w.alloc_range(i, 1);
                        } else {
                            w.free(i, 1);
                        }
                        // The words after the flip are compared below, with every entry.
                        let z = chunks.flip_one(k, i, allocated);
                        assert_eq!(z, zeroed, "step {step}");
                    }
                }
                for (k, w) in want.iter().enumerate() {
                    assert_eq!(chunks.load(k), *w, "step {step}, entry {k}");
                }
            }
        }
    }
}
