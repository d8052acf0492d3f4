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
//! copied into a [`PallocData`] value to be searched or changed, and written back.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::consts::SUMMARY_LEVELS;
use crate::errors::LayoutError;
use crate::layout::MetadataLayout;
use crate::pallocbits::{PallocBits, PallocData};
use crate::summary::PallocSum;

/// Words of one chunk's bitmaps: 8 of allocation bits, then 8 of known-zero bits.
pub(crate) const CHUNK_WORDS: usize = 16;

/// Word `w` of a chunk's bitmaps that holds allocation bit `i` (`w < 8`).
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
}

/// The pool of chunk bitmaps.
pub(crate) struct Chunks<'m>(&'m mut [[AtomicU64; CHUNK_WORDS]]);

impl Chunks<'_> {
    /// A copy of entry `k`.
    #[inline]
    pub(crate) fn load(&self, k: usize) -> PallocData {
        let w = &self.0[k];
        PallocData::from_words(core::array::from_fn(|i| w[i].load(Relaxed)))
    }

    /// Word `w` of entry `k` (see [`ALLOC_WORDS`], [`KNOWN_ZERO_WORDS`]).
    #[inline]
    pub(crate) fn word(&self, k: usize, w: usize) -> u64 {
        self.0[k][w].load(Relaxed)
    }

    /// A copy of the allocation bits of entry `k` (half the words of [`Chunks::load`]).
    #[inline]
    pub(crate) fn load_alloc(&self, k: usize) -> PallocBits {
        let w = &self.0[k];
        PallocBits::from_words(core::array::from_fn(|i| w[ALLOC_WORDS + i].load(Relaxed)))
    }

    /// Sets (`allocated`) or clears the allocation bit of page `i` of entry `k`; an
    /// allocation also clears the page's known-zero bit, and says whether it was set.
    /// Returns that and the allocation words after the change. The single-page paths use
    /// this instead of [`Chunks::with`], which copies all 16 words both ways.
    #[inline]
    pub(crate) fn flip_one(&mut self, k: usize, i: usize, allocated: bool) -> (bool, [u64; 8]) {
        let w = &mut self.0[k];
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let mut zeroed = false;
        if allocated {
            let z = w[KNOWN_ZERO_WORDS + word].get_mut();
            zeroed = *z & bit != 0;
            *z &= !bit;
            *w[ALLOC_WORDS + word].get_mut() |= bit;
        } else {
            *w[ALLOC_WORDS + word].get_mut() &= !bit;
        }
        (
            zeroed,
            core::array::from_fn(|j| *w[ALLOC_WORDS + j].get_mut()),
        )
    }

    /// Runs `f` on entry `k` and stores what it leaves.
    #[inline]
    pub(crate) fn with<R>(&mut self, k: usize, f: impl FnOnce(&mut PallocData) -> R) -> R {
        let words = &mut self.0[k];
        let mut data = PallocData::from_words(words.each_mut().map(|w| *w.get_mut()));
        let r = f(&mut data);
        for (w, v) in words.iter_mut().zip(data.words()) {
            *w.get_mut() = v;
        }
        r
    }

    /// Sets entries `r` to `data`.
    pub(crate) fn fill(&mut self, r: Range<usize>, data: PallocData) {
        let words = data.words();
        for e in &mut self.0[r] {
            for (w, v) in e.iter_mut().zip(words) {
                *w.get_mut() = v;
            }
        }
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
    let (chunks, _) = take(layout.chunk_entries() * CHUNK_WORDS).as_chunks_mut::<CHUNK_WORDS>();
    let handed_out = take(layout.handed_out_words());
    Ok(Parts {
        summary,
        chunk_map,
        chunks: Chunks(chunks),
        handed_out,
    })
}
