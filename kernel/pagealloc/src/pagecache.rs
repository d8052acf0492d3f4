//! A per-CPU cache of up to 64 free pages that allocates without the allocator's lock.
//! Go: `mpagecache.go`.
//!
//! The allocator hands a CPU one 64-page-aligned block at a time: the free pages of one
//! word of a chunk bitmap. While the cache holds them they are marked allocated in the
//! global bitmap, so only the owning CPU can hand them out, and it needs no lock to do so.
//!
//! Follows the structure of Go's `src/runtime/mpagecache.go` (Copyright The Go Authors,
//! BSD-style licence; see the crate README).

use crate::consts::{PAGE_CACHE_PAGES, PAGE_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES, SUMMARY_LEVELS};
use crate::pagealloc::{
    ChunkIdx, MAX_SEARCH_ADDR, PageAlloc, RangeOpError, chunk_page_index, one_page_keeps_summary,
};
use crate::pallocbits::{find_bit_range64, low_mask};
use crate::summary::PallocSum;

/// The leaf level of the summary tree.
const LEAF: usize = SUMMARY_LEVELS - 1;

/// Free pages of one 64-page-aligned block, owned by one CPU. Go: `pageCache`.
///
/// Invariants:
/// * `base` is a multiple of `PAGE_CACHE_PAGES * PAGE_SIZE` (256 KiB), so the block is one
///   word of a chunk bitmap;
/// * bit `i` of `cache` is set iff page `base + i * PAGE_SIZE` is free and owned by this
///   cache; the global bitmap shows every page of the block as allocated while the cache
///   holds it;
/// * `scav` is a subset of `cache`: bit `i` of `scav` set means that page is free and
///   scavenged. Go's scavenged pages have been returned to the OS; in this kernel
///   "scavenged" means the page is known to be zero, so a caller that wants zeroed memory
///   can skip clearing it.
///
/// The default value is an empty cache (`cache == 0`).
/// Not `Copy`: a copy could be flushed after the original, returning pages twice.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct PageCache {
    base: u64,
    cache: u64,
    scav: u64,
}

impl PageCache {
    /// A cache of the block at `base`, with free pages `cache` and of those the scavenged
    /// (known-zero) pages `scav`. Go: `NewPageCache` (export_test.go).
    ///
    /// `base` must be 64-page aligned and `scav` a subset of `cache`; debug builds check
    /// both.
    pub const fn new(base: u64, cache: u64, scav: u64) -> PageCache {
        debug_assert!(
            base.is_multiple_of(PAGE_CACHE_PAGES as u64 * PAGE_SIZE),
            "pagealloc: page cache base is not 64-page aligned"
        );
        debug_assert!(
            scav & !cache == 0,
            "pagealloc: page cache has scavenged pages it does not own"
        );
        PageCache { base, cache, scav }
    }

    /// The address of the block's first page. Go: `(*PageCache).Base` (export_test.go).
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Bit `i` set: page `i` of the block is free in the cache. Go: `(*PageCache).Cache`.
    pub const fn cache(&self) -> u64 {
        self.cache
    }

    /// Bit `i` set: page `i` of the block is free and scavenged. Go: `(*PageCache).Scav`.
    pub const fn scav(&self) -> u64 {
        self.scav
    }

    /// Whether the cache holds no free page. Go: `(*pageCache).empty`.
    pub const fn is_empty(&self) -> bool {
        self.cache == 0
    }

    /// The number of free pages the cache holds.
    pub const fn free_pages(&self) -> usize {
        self.cache.count_ones() as usize
    }

    /// Takes the lowest run of `npages` free pages out of the cache. Go:
    /// `(*pageCache).alloc`.
    ///
    /// Returns the address of the run's first page and how many of its pages were
    /// scavenged (known to be zero), or `None` if the cache holds no such run, or if
    /// `npages` is 0 or more than 64.
    ///
    /// # Deviation from Go
    /// Go reports the scavenged part in bytes and signals failure with address 0; here it
    /// is a page count and failure is `None`. Go gives `npages == 0` no meaning.
    pub fn alloc(&mut self, npages: usize) -> Option<(u64, usize)> {
        if npages == 0 || npages > PAGE_CACHE_PAGES || self.cache == 0 {
            return None;
        }
        if npages == 1 {
            // Most requests are for one page; the lowest free one needs no search.
            let i = self.cache.trailing_zeros();
            let scav_pages = ((self.scav >> i) & 1) as usize;
            self.cache &= !(1 << i);
            self.scav &= !(1 << i);
            return Some((self.base + u64::from(i) * PAGE_SIZE, scav_pages));
        }
        self.alloc_n(npages)
    }

    /// The general case of [`alloc`](Self::alloc), for `npages` in `2..=64`. Go:
    /// `(*pageCache).allocN`.
    fn alloc_n(&mut self, npages: usize) -> Option<(u64, usize)> {
        let i = find_bit_range64(self.cache, npages);
        if i >= PAGE_CACHE_PAGES {
            return None;
        }
        // `low_mask` because `npages` may be 64, where the run is the whole block.
        let mask = low_mask(npages) << i;
        let scav_pages = (self.scav & mask).count_ones() as usize;
        self.cache &= !mask;
        self.scav &= !mask;
        Some((self.base + i as u64 * PAGE_SIZE, scav_pages))
    }
}

impl PageAlloc<'_> {
    /// Takes the 64-page-aligned block that holds the first free page and hands its free
    /// pages to a new cache; they count as allocated until the cache is flushed. An empty
    /// cache means no page is free. Go: `(*pageAlloc).allocToCache`.
    pub fn alloc_to_cache(&mut self) -> PageCache {
        let (_, end) = self.chunk_bounds();
        if ChunkIdx::of(self.search_addr()).0 >= end {
            return PageCache::default();
        }
        let ci = ChunkIdx::of(self.search_addr());
        // Fast path: the chunk under the search address has a free page.
        let page = if self.summary_level(LEAF)[ci.0] != PallocSum::EMPTY {
            let from = chunk_page_index(self.search_addr());
            let Some((j, _)) = self.chunk_data(ci).and_then(|c| c.alloc.find(1, from)) else {
                panic!("pagealloc: bad summary data: {ci} promised a free page from page {from}");
            };
            ci.base() + ((j as u64) << PAGE_SHIFT)
        } else {
            match self.find(1) {
                Some((addr, _)) => addr,
                None => {
                    self.set_search_addr(MAX_SEARCH_ADDR);
                    return PageCache::default();
                }
            }
        };
        let ci = ChunkIdx::of(page);
        let base = page & !((PAGE_CACHE_PAGES as u64 * PAGE_SIZE) - 1);
        let cpi = chunk_page_index(base);
        let chunk = self.chunk_of_mut(ci);
        let cache = !chunk.alloc.pages64(cpi);
        let scav = chunk.scavenged.block64(cpi);
        chunk.alloc.alloc_pages64(cpi, cache);
        chunk.scavenged.clear_block64(cpi, cache & scav);
        self.add_free_pages(-(cache.count_ones() as isize));
        self.update(base, PAGE_CACHE_PAGES, false, true);
        // The last page of the block, not the one after it: the search address must stay
        // inside grown memory.
        self.set_search_addr(base + (PAGE_CACHE_PAGES as u64 - 1) * PAGE_SIZE);
        PageCache::new(base, cache, scav)
    }
}

impl PageCache {
    /// Returns the cache's pages to `pa` (with their zeroed bits) and empties the cache.
    /// Go: `(*pageCache).flush`.
    ///
    /// # Deviation from Go
    /// Go trusts the cache. Here a cache whose pages are not all allocated in `pa` (a
    /// stale copy flushed twice, or a cache from another allocator) is refused with an
    /// error, and nothing changes. The bits are returned a word at a time instead of one
    /// page at a time.
    pub fn flush(&mut self, pa: &mut PageAlloc<'_>) -> Result<(), RangeOpError> {
        if self.is_empty() {
            return Ok(());
        }
        let base = self.base;
        let ci = ChunkIdx::of(base);
        let cpi = chunk_page_index(base);
        let Some(chunk) = pa.chunk_data(ci) else {
            return Err(RangeOpError::NotGrown {
                base,
                npages: PAGE_CACHE_PAGES,
                page: base,
            });
        };
        // Pages never grown also read as allocated: each run of cached pages must lie in
        // grown memory too.
        let mut rest = self.cache;
        while rest != 0 {
            let i = rest.trailing_zeros();
            let n = (!(rest >> i)).trailing_zeros();
            let run_base = base + u64::from(i) * PAGE_SIZE;
            if let Err(RangeOpError::NotGrown { page, .. }) = pa.check_range(run_base, n as usize) {
                return Err(RangeOpError::NotGrown {
                    base,
                    npages: PAGE_CACHE_PAGES,
                    page,
                });
            }
            rest &= !(low_mask(n as usize) << i);
        }
        let not_allocated = self.cache & !chunk.alloc.pages64(cpi);
        if not_allocated != 0 {
            let page = base + u64::from(not_allocated.trailing_zeros()) * PAGE_SIZE;
            return Err(RangeOpError::NotAllocated {
                base,
                npages: PAGE_CACHE_PAGES,
                page,
            });
        }
        let chunk = pa.chunk_of_mut(ci);
        chunk.alloc.clear_block64(cpi, self.cache);
        chunk.scavenged.set_block64(cpi, self.scav);
        pa.add_free_pages(self.cache.count_ones() as isize);
        if base < pa.search_addr() {
            pa.set_search_addr(base);
        }
        pa.update(base, PAGE_CACHE_PAGES, false, false);
        *self = PageCache::default();
        Ok(())
    }
}

/// Single pages a batch holds before it returns the older half to the allocator.
pub const FREE_BATCH_PAGES: usize = 64;

/// Single pages freed on one CPU, kept for reuse and returned to the allocator in
/// batches (not in Go, whose page cache only allocates; Linux's per-CPU page lists do
/// this).
///
/// A free costs a check and a push instead of a bitmap change and a climb of the tree,
/// and the next single-page allocation on that CPU takes the most recently freed page
/// (still warm in the CPU's caches). The pages stay allocated in the tree while the batch
/// holds them, so the tree's invariants hold throughout; they are returned sorted, with
/// one summary update per chunk. The price: pages in a batch are not handed out in
/// address order, and look allocated to other CPUs until the batch is flushed.
#[derive(Debug)]
pub struct FreeBatch {
    pages: [u64; FREE_BATCH_PAGES],
    len: usize,
    /// How many pages held have each hash: a page whose count is zero is not in the
    /// batch, which spares most frees the scan for a double free.
    held_by_hash: [u8; 256],
}

impl Default for FreeBatch {
    fn default() -> Self {
        FreeBatch::new()
    }
}

impl FreeBatch {
    /// An empty batch.
    pub const fn new() -> FreeBatch {
        FreeBatch {
            pages: [0; FREE_BATCH_PAGES],
            len: 0,
            held_by_hash: [0; 256],
        }
    }

    /// Pages held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no page.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pages held, oldest first.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages[..self.len].iter().copied()
    }

    /// The most recently freed page, now allocated to the caller.
    pub fn alloc(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        let addr = self.pages[self.len];
        self.held_by_hash[hash(addr)] -= 1;
        Some(addr)
    }

    /// Takes the single page at `addr`, which `pa` must have handed out and not yet got
    /// back; a double free (also of a page the batch already holds) or a foreign page is
    /// refused with the error `pa.free` would give, and nothing changes. A full batch
    /// first returns its older half to `pa`.
    pub fn free(&mut self, pa: &mut PageAlloc<'_>, addr: u64) -> Result<(), RangeOpError> {
        pa.check_range(addr, 1)?;
        let allocated = pa
            .chunk_data(ChunkIdx::of(addr))
            .is_some_and(|c| c.alloc.get(chunk_page_index(addr)));
        let h = hash(addr);
        let maybe_held = self.held_by_hash[h] != 0;
        if !allocated || (maybe_held && self.pages[..self.len].contains(&addr)) {
            return Err(RangeOpError::NotAllocated {
                base: addr,
                npages: 1,
                page: addr,
            });
        }
        if self.len == FREE_BATCH_PAGES {
            let half = FREE_BATCH_PAGES / 2;
            for &p in &self.pages[..half] {
                self.held_by_hash[hash(p)] -= 1;
            }
            pa.free_sorted_unchecked(sort(&mut self.pages[..half]));
            self.pages.copy_within(half.., 0);
            self.len -= half;
        }
        self.pages[self.len] = addr;
        self.len += 1;
        self.held_by_hash[h] += 1;
        Ok(())
    }

    /// Returns every page to `pa`.
    pub fn flush(&mut self, pa: &mut PageAlloc<'_>) {
        pa.free_sorted_unchecked(sort(&mut self.pages[..self.len]));
        self.len = 0;
        self.held_by_hash = [0; 256];
    }
}

/// An 8-bit multiplicative hash of a page's frame number.
fn hash(addr: u64) -> usize {
    ((addr >> PAGE_SHIFT).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

/// Sorts a few addresses in place (insertion sort: the batch is small).
fn sort(pages: &mut [u64]) -> &[u64] {
    for i in 1..pages.len() {
        let mut j = i;
        while j > 0 && pages[j - 1] > pages[j] {
            pages.swap(j - 1, j);
            j -= 1;
        }
    }
    pages
}

impl PageAlloc<'_> {
    /// Frees single pages given in ascending order, which must be allocated grown memory,
    /// with one summary update per chunk.
    pub(crate) fn free_sorted_unchecked(&mut self, pages: &[u64]) {
        let Some(&first) = pages.first() else { return };
        if first < self.search_addr() {
            self.set_search_addr(first);
        }
        let mut rest = pages;
        while let Some(&head) = rest.first() {
            let ci = ChunkIdx::of(head);
            let n = rest.iter().take_while(|&&p| ChunkIdx::of(p) == ci).count();
            let old = self.summary_level(LEAF)[ci.0];
            let chunk = self.chunk_of_mut(ci);
            // If every single free leaves the chunk's summary as it was, so do all of them
            // together, and nothing above the leaf changes either.
            let mut unchanged = true;
            for &p in &rest[..n] {
                let i = chunk_page_index(p);
                chunk.free1(i);
                unchanged = unchanged && one_page_keeps_summary(chunk.alloc.words(), i, old, true);
            }
            self.add_free_pages(n as isize);
            if !unchanged {
                self.update(ci.base(), PALLOC_CHUNK_PAGES, false, false);
            }
            rest = &rest[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::Rng;
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::consts::PALLOC_CHUNK_BYTES;

    /// A 64-page-aligned, non-zero block (the first page of chunk 512).
    const BASE: u64 = 512 * PALLOC_CHUNK_BYTES;

    fn page(i: u64) -> Option<u64> {
        Some(BASE + i * PAGE_SIZE)
    }

    #[test]
    fn accessors() {
        let c = PageCache::new(BASE, 0xf0f0, 0x3030);
        assert_eq!((c.base(), c.cache(), c.scav()), (BASE, 0xf0f0, 0x3030));
        assert_eq!(c.free_pages(), 8);
        assert!(!c.is_empty());
        assert!(PageCache::new(BASE, 0, 0).is_empty());
        assert_eq!(PageCache::new(BASE, !0, 0).free_pages(), 64);
        assert!(PageCache::default().is_empty());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "scavenged pages it does not own")]
    fn new_rejects_scav_outside_cache() {
        let _ = PageCache::new(BASE, 0x1, 0x3);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not 64-page aligned")]
    fn new_rejects_unaligned_base() {
        let _ = PageCache::new(BASE + PAGE_SIZE, 0x1, 0);
    }

    /// Go: `TestPageCacheAlloc`, same case names. Each hit is `(npages, address, scavenged
    /// pages)`, with Go's failures (address 0) as `None` and Go's scavenged bytes divided
    /// by the page size.
    #[test]
    fn test_page_cache_alloc() {
        type Hit = (usize, Option<u64>, usize);
        let cases: Vec<(&str, PageCache, Vec<Hit>)> = Vec::from([
            (
                "Empty",
                PageCache::new(BASE, 0, 0),
                [1, 2, 3, 4, 5, 11, 12, 16, 27, 32, 43, 57, 64, 121]
                    .iter()
                    .map(|&n| (n, None, 0))
                    .collect(),
            ),
            (
                "Lo1",
                PageCache::new(BASE, 0x1, 0x1),
                Vec::from([(1, page(0), 1), (1, None, 0), (10, None, 0)]),
            ),
            (
                // Go gives this case a scavenged bit outside the cache, which `new`
                // rejects; build it directly to keep Go's check that the stray bit is
                // never counted.
                "Hi1",
                PageCache {
                    base: BASE,
                    cache: 1 << 63,
                    scav: 0x1,
                },
                Vec::from([(1, page(63), 0), (1, None, 0), (10, None, 0)]),
            ),
            (
                "Swiss1",
                PageCache::new(BASE, 0x2000_5555, 0x5505),
                Vec::from([
                    (2, None, 0),
                    (1, page(0), 1),
                    (1, page(2), 1),
                    (1, page(4), 0),
                    (1, page(6), 0),
                    (1, page(8), 1),
                    (1, page(10), 1),
                    (1, page(12), 1),
                    (1, page(14), 1),
                    (1, page(29), 0),
                    (1, None, 0),
                    (10, None, 0),
                ]),
            ),
            (
                // A stray scavenged bit again, as in "Hi1".
                "Lo2",
                PageCache {
                    base: BASE,
                    cache: 0x3,
                    scav: 0x2 << 62,
                },
                Vec::from([(2, page(0), 0), (2, None, 0), (1, None, 0)]),
            ),
            (
                "Hi2",
                PageCache::new(BASE, 0x3 << 62, 0x3 << 62),
                Vec::from([(2, page(62), 2), (2, None, 0), (1, None, 0)]),
            ),
            (
                "Swiss2",
                PageCache::new(BASE, 0x3333 << 31, 0x3030 << 31),
                Vec::from([
                    (2, page(31), 0),
                    (2, page(35), 2),
                    (2, page(39), 0),
                    (2, page(43), 2),
                    (2, None, 0),
                ]),
            ),
            (
                "Hi53",
                PageCache::new(BASE, low_mask(53) << 10, low_mask(16) << 10),
                Vec::from([(53, page(10), 16), (53, None, 0), (1, None, 0)]),
            ),
            (
                "Full53",
                PageCache::new(BASE, !0, low_mask(16) << 10),
                Vec::from([(53, page(0), 16), (53, None, 0), (1, page(53), 0)]),
            ),
            (
                "Full64",
                PageCache::new(BASE, !0, !0),
                Vec::from([(64, page(0), 64), (64, None, 0), (1, None, 0)]),
            ),
            (
                "FullMixed",
                PageCache::new(BASE, !0, !0),
                Vec::from([
                    (5, page(0), 5),
                    (7, page(5), 7),
                    (1, page(12), 1),
                    (23, page(13), 23),
                    (63, None, 0),
                    (3, page(36), 3),
                    (3, page(39), 3),
                    (3, page(42), 3),
                    (12, page(45), 12),
                    (11, None, 0),
                    (4, page(57), 4),
                    (4, None, 0),
                    (6, None, 0),
                    (36, None, 0),
                    (2, page(61), 2),
                    (3, None, 0),
                    (1, page(63), 1),
                    (4, None, 0),
                    (2, None, 0),
                    (62, None, 0),
                    (1, None, 0),
                ]),
            ),
        ]);
        for (name, mut c, hits) in cases {
            for (k, &(npages, want_addr, want_scav)) in hits.iter().enumerate() {
                let got = c.alloc(npages);
                let want = want_addr.map(|a| (a, want_scav));
                assert_eq!(got, want, "case {name}, hit #{k}: alloc({npages})");
            }
        }
    }

    /// `alloc(64)` needs the all-ones mask, which `(1 << 64) - 1` cannot express.
    #[test]
    fn alloc_64_takes_a_full_cache() {
        let mut c = PageCache::new(BASE, !0, 0x8000_0000_0000_0001);
        assert_eq!(c.alloc(64), Some((BASE, 2)));
        assert_eq!((c.cache(), c.scav()), (0, 0));
        assert!(c.is_empty());

        // One missing page anywhere makes 64 impossible and leaves the cache alone.
        for hole in [0, 31, 63] {
            let mut c = PageCache::new(BASE, !(1 << hole), 0);
            assert_eq!(c.alloc(64), None);
            assert_eq!(c, PageCache::new(BASE, !(1 << hole), 0));
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let full = PageCache::new(BASE, !0, 0x00ff);
        for npages in [0, 65, 121, usize::MAX] {
            let mut c = full.clone();
            assert_eq!(c.alloc(npages), None, "alloc({npages})");
            assert_eq!(c, full);
        }
    }

    #[test]
    fn failed_alloc_changes_nothing() {
        let start = PageCache::new(BASE, 0x0f0f_0f0f, 0x0303_0303);
        let mut c = start.clone();
        assert_eq!(c.alloc(5), None);
        assert_eq!(c, start);
        assert_eq!(c.alloc(4), Some((BASE, 2)));
        assert_eq!(c.cache(), 0x0f0f_0f00);
        assert_eq!(c.scav(), 0x0303_0300);
    }

    /// The model's `alloc`: scan every start for `npages` free pages, one bit at a time.
    fn model_alloc(
        free: &mut [bool; 64],
        scav: &mut [bool; 64],
        npages: usize,
    ) -> Option<(u64, usize)> {
        if npages == 0 || npages > 64 {
            return None;
        }
        let start = (0..=64 - npages).find(|&s| free[s..s + npages].iter().all(|&f| f))?;
        let scav_pages = scav[start..start + npages].iter().filter(|&&s| s).count();
        free[start..start + npages].fill(false);
        scav[start..start + npages].fill(false);
        Some((BASE + start as u64 * PAGE_SIZE, scav_pages))
    }

    fn bits(flags: &[bool; 64]) -> u64 {
        flags
            .iter()
            .enumerate()
            .fold(0, |w, (i, &f)| w | (u64::from(f) << i))
    }

    #[test]
    fn random_against_model() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let (mut hits, mut misses) = (0, 0);
        for _ in 0..2000 {
            // Dense, sparse and mixed caches.
            let cache = match r.next() % 3 {
                0 => r.next() | r.next(),
                1 => r.next() & r.next(),
                _ => r.next(),
            };
            let scav = r.next() & cache;
            let mut c = PageCache::new(BASE, cache, scav);
            let mut free: [bool; 64] = core::array::from_fn(|i| cache >> i & 1 != 0);
            let mut zeroed: [bool; 64] = core::array::from_fn(|i| scav >> i & 1 != 0);
            for _ in 0..40 {
                // Mostly small requests, as the allocator makes; sometimes any size,
                // including the invalid 0 and 65.
                let npages = match r.next() % 4 {
                    0 => (r.next() % 66) as usize,
                    _ => 1 + (r.next() % 8) as usize,
                };
                let got = c.alloc(npages);
                let want = model_alloc(&mut free, &mut zeroed, npages);
                assert_eq!(got, want, "alloc({npages}) from {cache:#x}");
                if got.is_some() {
                    hits += 1;
                } else {
                    misses += 1;
                }
                assert_eq!(c.cache(), bits(&free));
                assert_eq!(c.scav(), bits(&zeroed));
                assert_eq!(c.free_pages(), free.iter().filter(|&&f| f).count());
                assert_eq!(c.is_empty(), !free.contains(&true));
            }
        }
        assert!(
            hits > 10_000 && misses > 10_000,
            "{hits} hits, {misses} misses"
        );
    }

    #[test]
    fn free_batch_reuses_and_returns_pages() {
        use crate::testutil::HeapMetadata;
        use crate::{AddrRange, Contents, MetadataLayout};
        use std::vec::Vec;

        let region = AddrRange::new(PAGE_SIZE * 7, 8 << 20);
        let mut md = HeapMetadata::default();
        let mut pa = md.page_alloc(MetadataLayout::for_regions(&[region]).unwrap());
        pa.grow(region.base, region.size(), Contents::Zeroed)
            .unwrap();
        let total = pa.free_pages();
        let mut live: Vec<u64> = (0..300).map(|_| pa.alloc(1).unwrap().base).collect();
        let mut batch = FreeBatch::new();
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for step in 0..3000 {
            let r = next();
            if r % 3 != 0 && !live.is_empty() {
                let i = (r >> 8) as usize % live.len();
                let addr = live.swap_remove(i);
                batch.free(&mut pa, addr).unwrap();
                // A second free of the same page is refused, in the batch or out of it.
                assert_eq!(
                    batch.free(&mut pa, addr),
                    Err(RangeOpError::NotAllocated {
                        base: addr,
                        npages: 1,
                        page: addr
                    }),
                    "step {step}"
                );
            } else if let Some(addr) = batch.alloc() {
                live.push(addr);
            } else {
                live.push(pa.alloc(1).unwrap().base);
            }
            assert!(batch.len() <= FREE_BATCH_PAGES);
            // Batched pages count as allocated in the tree.
            assert_eq!(
                pa.free_pages() + live.len() + batch.len(),
                total,
                "step {step}"
            );
            pa.check_invariants().unwrap();
        }
        assert_eq!(
            batch.free(&mut pa, 0),
            Err(RangeOpError::NotGrown {
                base: 0,
                npages: 1,
                page: 0
            })
        );
        batch.flush(&mut pa);
        assert!(batch.is_empty());
        for addr in live {
            pa.free(addr, 1).unwrap();
        }
        assert_eq!(pa.free_pages(), total);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn free_batch_is_last_in_first_out() {
        use crate::testutil::HeapMetadata;
        use crate::{AddrRange, Contents, MetadataLayout};

        let region = AddrRange::new(0, 4 << 20);
        let mut md = HeapMetadata::default();
        let mut pa = md.page_alloc(MetadataLayout::for_regions(&[region]).unwrap());
        pa.grow(0, region.size(), Contents::Unknown).unwrap();
        let a = pa.alloc(1).unwrap().base;
        let b = pa.alloc(1).unwrap().base;
        let mut batch = FreeBatch::new();
        batch.free(&mut pa, a).unwrap();
        batch.free(&mut pa, b).unwrap();
        assert_eq!(batch.alloc(), Some(b));
        assert_eq!(batch.alloc(), Some(a));
        assert_eq!(batch.alloc(), None);
    }
}
