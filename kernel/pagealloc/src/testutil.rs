//! Test support, the counterpart of Go's `runtime/export_test.go`: build an allocator
//! from a description of its chunks, read its state back, and compare two allocators
//! bitmap by bitmap and summary by summary.
//!
//! Enabled by the `testutil` feature (hidden from the docs, not part of the API, may
//! change in any release); the crate's own integration tests, the benchmarks and the fuzz
//! target use it. The internals they test are re-exported here, nowhere else.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;

pub use crate::consts::*;
use crate::errors::RangeOpError;
use crate::handedout::HandedOut;
pub use crate::index::{ChunkIdx, MAX_NPAGES, MAX_SEARCH_ADDR, chunk_page_index};
use crate::layout::MetadataLayout;
pub use crate::pagecache::FREE_BATCH_PAGES;
use crate::pagecache::PageCache;
pub use crate::pallocbits::{
    BitRange, PageBits, PallocBits, find_bit_range64, make_palloc_bits, summarize_slow,
};
use crate::ranges::AddrRange;
pub use crate::ranges::MAX_ADDR_RANGES;
use crate::summary::PallocSum;
pub use crate::summary::{FREE_CHUNK_SUM, merge_summaries};
use crate::tree::{Contents, PageAlloc};

/// The chunk every Go test case is relative to: non-zero and 512-aligned, so that no
/// case touches chunk 0 by accident. Go: `BaseChunkIdx` (0xc000 chunks from the arena
/// base on 64-bit platforms). Here it is 96 GiB.
pub const BASE_CHUNK_IDX: ChunkIdx = ChunkIdx(0xc000);

/// The address of page `page` of chunk `c`. Go: `PageBase`.
pub const fn page_base(c: ChunkIdx, page: usize) -> u64 {
    c.base() + ((page as u64) << PAGE_SHIFT)
}

/// Allocator metadata on the heap, for tests and benchmarks.
#[derive(Default)]
pub struct HeapMetadata {
    words: Vec<AtomicU64>,
}

impl HeapMetadata {
    /// Metadata sized for `layout`.
    pub fn new(layout: &MetadataLayout) -> HeapMetadata {
        HeapMetadata {
            words: (0..layout.words()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Borrows the words for [`PageAlloc::new`].
    pub fn metadata(&mut self) -> &mut [AtomicU64] {
        &mut self.words
    }

    /// Resizes the arrays for `layout` and builds an empty allocator in them.
    pub fn page_alloc(&mut self, layout: MetadataLayout) -> PageAlloc<'_> {
        *self = HeapMetadata::new(&layout);
        PageAlloc::new(layout, self.metadata()).expect("metadata sized from its own layout")
    }
}

/// Builds an allocator whose grown memory is exactly the listed chunks. In each chunk,
/// the `scav` ranges are marked zeroed first and then the `chunks` ranges allocated,
/// so a page in both ends up allocated and not zeroed. Without `scav`, no page is
/// zeroed. Allocated pages are handed out (to the test). Go: `NewPageAlloc`.
pub fn new_page_alloc<'m>(
    md: &'m mut HeapMetadata,
    chunks: &[(ChunkIdx, &[BitRange])],
    known_zero: Option<&[(ChunkIdx, &[BitRange])]>,
) -> PageAlloc<'m> {
    let limit = chunks
        .iter()
        .map(|(c, _)| c.base() + PALLOC_CHUNK_BYTES)
        .max()
        .unwrap_or(0);
    let mut l1s: Vec<usize> = chunks.iter().map(|(c, _)| c.map_block()).collect();
    l1s.sort_unstable();
    l1s.dedup();
    let layout = MetadataLayout::new(limit, l1s.len()).expect("test layout");
    let mut pa = md.page_alloc(layout);
    for &(ci, _) in chunks {
        pa.grow(
            AddrRange::new(ci.base(), ci.base() + PALLOC_CHUNK_BYTES),
            Contents::Unknown,
        )
        .unwrap_or_else(|e| panic!("test grow of {ci}: {e}"));
    }
    for &(ci, allocs) in chunks {
        let zeroed = known_zero
            .and_then(|s| s.iter().find(|(c, _)| *c == ci))
            .map(|(_, r)| *r);
        let newly_allocated = pa.with_chunk(ci, |chunk| {
            for r in zeroed.unwrap_or(&[]).iter().filter(|r| r.n != 0) {
                chunk.known_zero.set_range(r.i, r.n);
            }
            let mut newly_allocated = 0;
            for r in allocs.iter().filter(|r| r.n != 0) {
                newly_allocated += r.n - chunk.alloc.popcnt_range(r.i, r.n);
                chunk.alloc_range(r.i, r.n);
            }
            newly_allocated
        });
        pa.add_free_pages(-(newly_allocated as isize));
        pa.update(ci.base(), PALLOC_CHUNK_PAGES, false, false);
        let words = pa.with_chunk(ci, |chunk| *chunk.alloc.words());
        let h = pa.handed_out();
        for (w, &bits) in words.iter().enumerate() {
            let mut rest = bits;
            while rest != 0 {
                let i = rest.trailing_zeros() as usize;
                h.set(page_base(ci, w * 64 + i), 1);
                rest &= rest - 1;
            }
        }
    }
    pa
}

/// Moves pages from handed out to held, as a [`PageCache`] or [`crate::FreeBatch`] holds
/// them, so tests can build a cache by hand; refused (nothing changed) unless every page
/// is handed out.
pub fn hold(pa: &PageAlloc<'_>, base: u64, npages: usize) -> Result<(), RangeOpError> {
    pa.check_free(base, npages)?;
    pa.handed_out()
        .take(base, npages)
        .map_err(|page| RangeOpError::NotHandedOut { page })
}

/// A page cache of the block at `base` holding the pages `cache`, of which `scav` are
/// known to be zero, belonging to `owner` (if any): for tests that need a particular
/// cache. Go: `NewPageCache`. An unaligned `base` or a `scav` bit outside `cache` is an
/// error in every build. The pages are not checked: a flush checks them.
#[doc(hidden)]
pub fn new_page_cache<'m>(
    owner: Option<HandedOut<'m>>,
    base: u64,
    cache: u64,
    known_zero: u64,
) -> Result<PageCache<'m>, String> {
    PageCache::from_parts(owner, base, cache, known_zero).map_err(|e| {
        format!("{e} (base {base:#x}, cache {cache:#018x}, known_zero {known_zero:#018x})")
    })
}

/// Sets the search address, for tests that start from a particular one.
pub fn set_search_addr(pa: &mut PageAlloc<'_>, addr: u64) {
    pa.set_search_addr(addr);
}

/// Compares two allocators: chunk bounds, every chunk's alloc and zeroed bitmaps, and
/// every summary level. Returns a description of the first differences.
/// Go: `checkPageAlloc` (which does not compare summaries).
pub fn diff_page_alloc(want: &PageAlloc<'_>, got: &PageAlloc<'_>) -> Option<String> {
    let mut out = String::new();
    if want.inspect().chunk_bounds() != got.inspect().chunk_bounds() {
        out += &format!(
            "bounds: want {:?}, got {:?}\n",
            want.inspect().chunk_bounds(),
            got.inspect().chunk_bounds()
        );
    }
    if let Some((start, end)) = want.inspect().chunk_bounds() {
        for c in start.0..end.0 {
            let ci = ChunkIdx(c);
            match (want.chunk_data(ci), got.chunk_data(ci)) {
                (None, None) => {}
                (Some(w), Some(g)) => {
                    if w.alloc != g.alloc {
                        out += &format!("{ci} alloc bits: want {:?}, got {:?}\n", w.alloc, g.alloc);
                    }
                    if w.known_zero != g.known_zero {
                        out += &format!(
                            "{ci} zeroed bits: want {:?}, got {:?}\n",
                            w.known_zero, g.known_zero
                        );
                    }
                    // `want` stands for pages `got` never grew with allocated ones, which
                    // it hands out; only `got`'s grown pages can be handed out.
                    let grown = grown_words(got, ci);
                    let hw = handed_out_words(want, ci).map(|_| 0);
                    let hw = core::array::from_fn::<u64, 8, _>(|w| {
                        hw[w] | handed_out_words(want, ci)[w] & grown[w]
                    });
                    let hg = handed_out_words(got, ci);
                    if hw != hg {
                        out += &format!("{ci} handed-out bits: want {hw:x?}, got {hg:x?}\n");
                    }
                }
                (w, g) => {
                    out += &format!("{ci}: want bitmap {}, got {}\n", w.is_some(), g.is_some());
                }
            }
        }
    }
    for l in 0..SUMMARY_LEVELS {
        let (wl, gl) = (want.summary[l].len(), got.summary[l].len());
        for i in 0..wl.max(gl) {
            let ws = if i < wl {
                want.sum(l, i)
            } else {
                PallocSum::EMPTY
            };
            let gs = if i < gl {
                got.sum(l, i)
            } else {
                PallocSum::EMPTY
            };
            if ws != gs {
                out += &format!("summary[{l}][{i}]: want {ws:?}, got {gs:?}\n");
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The handed-out bits of chunk `ci` (zero where it has none).
pub fn handed_out_words(pa: &PageAlloc<'_>, ci: ChunkIdx) -> [u64; PALLOC_CHUNK_PAGES / 64] {
    let h = pa.handed_out();
    core::array::from_fn(|w| h.chunk_word(ci, w).unwrap_or(0))
}

/// The pages of chunk `ci` that `pa` grew, as bitmap words.
pub fn grown_words(pa: &PageAlloc<'_>, ci: ChunkIdx) -> [u64; PALLOC_CHUNK_PAGES / 64] {
    let mut words = [0u64; PALLOC_CHUNK_PAGES / 64];
    let (cb, ce) = (ci.base(), ci.base() + PALLOC_CHUNK_BYTES);
    for r in pa.inspect().grown() {
        let (lo, hi) = (r.base.max(cb), r.limit.min(ce));
        let mut p = lo;
        while p < hi {
            let i = ((p - cb) >> PAGE_SHIFT) as usize;
            words[i / 64] |= 1 << (i % 64);
            p += 1 << PAGE_SHIFT;
        }
    }
    words
}

/// Panics with the differences if two allocators differ, and checks `got`'s
/// invariants.
#[track_caller]
pub fn assert_page_alloc_eq(want: &PageAlloc<'_>, got: &PageAlloc<'_>) {
    if let Some(d) = diff_page_alloc(want, got) {
        panic!("page allocators differ:\n{d}");
    }
    if let Err(e) = got.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// A tiny xorshift generator, so that randomized tests repeat exactly. Seed it with any
/// non-zero value.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    // A generator, not an iterator: it never ends, so it does not implement `Iterator`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Blocks of 16 chunk bitmaps (32 MiB of memory each) that `layout` has room for.
pub fn bitmap_blocks(layout: &MetadataLayout) -> usize {
    layout.chunk_entries() / crate::consts::PALLOC_CHUNKS_L2_ENTRIES
}
