//! Per-CPU page caches and free batches, which allocate and free without the allocator's
//! lock. Go: `mpagecache.go` for [`PageCache`]; [`FreeBatch`] is not in Go.
//!
//! # Who owns a page
//! Every grown page is in exactly one of three states:
//! * **free**: clear in the tree's bitmap; only the allocator can hand it out;
//! * **held**: allocated in the tree, its handed-out bit clear, and kept by one
//!   [`PageCache`] (after [`PageAlloc::alloc_to_cache`]) or one [`FreeBatch`] (after
//!   [`FreeBatch::free`]) for reuse by its CPU;
//! * **handed out**: allocated in the tree and its handed-out bit set: a caller owns it.
//!
//! Entry points that need `&mut PageAlloc` (the allocator's lock): every `PageAlloc`
//! method that changes it, [`PageAlloc::alloc_to_cache`], [`PageCache::flush`],
//! [`FreeBatch::return_half`] and [`FreeBatch::flush`]. Lock-free (a [`HandedOut`]
//! handle, or the cache's or batch's own copy of it): [`PageCache::alloc`],
//! [`FreeBatch::alloc`], [`FreeBatch::free`] and [`HandedOut::is_handed_out`].
//!
//! Every free, locked or not, first takes the handed-out bits of its pages with one
//! atomic read-modify-write per word (`fetch_and`): it is accepted only if every bit was
//! set, and otherwise puts back exactly the bits it cleared and is refused. So of two
//! racing frees of one page (two CPUs, or an interrupt and the code it interrupted)
//! exactly one sees the bit set: the other loses, with an error, whatever path each took.
//! Every path that hands a page out sets its bit (`fetch_or`); finding it already set
//! means the page was handed out twice, and panics. (A multi-page free that is refused
//! first looks at the bits without changing them; only if a page's bit is cleared
//! between that look and its own `fetch_and` does it clear bits it then restores, and a
//! lock-free free of one of those pages in that instant is refused too. That takes a
//! wrong multi-page free, one that covers a page its caller does not own.) Flushes refuse pages that are not
//! held, and caches and batches that belong to another allocator.
//!
//! [`PageCache`] follows the structure of Go's `src/runtime/mpagecache.go` (Copyright The
//! Go Authors, BSD-style licence; see the crate README).
//!
//! # Deviations from Go
//! Where the ported functions differ from Go's:
//! - `alloc`: Go reports the scavenged part in bytes and signals failure with address 0; here
//!   it is a page count and failure is `None`. Go gives `npages == 0` no meaning.
//! - `flush`: Go trusts the cache. Here a cache from another allocator is refused with
//!   [`RangeOpError::ForeignAllocator`], and one whose pages are not all held in `pa` with
//!   [`RangeOpError::NotGrown`], [`RangeOpError::NotAllocated`] (a page is free) or
//!   [`RangeOpError::NotHeld`] (a page is handed out), checked in that order over the whole
//!   block; nothing changes on error. The bits are returned a word at a time instead of one
//!   page at a time.

use crate::consts::{PAGE_CACHE_PAGES, PAGE_SHIFT, PAGE_SIZE};
use crate::errors::RangeOpError;
use crate::handedout::HandedOut;
use crate::index::{ChunkIdx, LEAF, MAX_SEARCH_ADDR, chunk_page_index};
use crate::pallocbits::{find_bit_range64, low_mask};
use crate::single::one_page_keeps_summary;
use crate::summary::PallocSum;
use crate::tree::PageAlloc;

/// Free pages of one 64-page-aligned block, held for one CPU. Go: `pageCache`.
///
/// Only [`PageAlloc::alloc_to_cache`] fills a cache, and the cache records the
/// allocator it came from: [`PageCache::alloc`] hands its pages out through that
/// allocator's [`HandedOut`] bits, and [`PageCache::flush`] refuses any other allocator.
/// Not `Clone`: a copy could be flushed after the original.
///
/// Invariants:
/// * `base` is a multiple of `PAGE_CACHE_PAGES * PAGE_SIZE` (256 KiB), so the block is one
///   word of a chunk bitmap;
/// * bit `i` of `cache` is set iff page `base + i * PAGE_SIZE` is held by this cache:
///   allocated in the tree, not handed out;
/// * `known_zero` is a subset of `cache`: bit `i` of `known_zero` set means that page is
///   known to be zero, so a caller that wants zeroed memory can
///   skip clearing it.
#[derive(PartialEq, Eq, Default, Debug)]
pub struct PageCache<'m> {
    base: u64,
    cache: u64,
    known_zero: u64,
    /// The allocator the pages came from; `None` only for an empty cache (or one built
    /// by the test support without an allocator).
    owner: Option<HandedOut<'m>>,
}

impl<'m> PageCache<'m> {
    /// An empty cache, belonging to no allocator.
    pub const fn empty() -> PageCache<'m> {
        PageCache {
            base: 0,
            cache: 0,
            known_zero: 0,
            owner: None,
        }
    }

    /// A cache of the block at `base` holding `cache` with known-zero pages `known_zero`, checked in
    /// every build. For the test support (Go: `NewPageCache`).
    #[cfg(any(test, feature = "testutil"))]
    pub(crate) fn from_parts(
        owner: Option<HandedOut<'m>>,
        base: u64,
        cache: u64,
        known_zero: u64,
    ) -> Result<PageCache<'m>, &'static str> {
        if !base.is_multiple_of(PAGE_CACHE_PAGES as u64 * PAGE_SIZE) {
            return Err("page cache base is not 64-page aligned");
        }
        if known_zero & !cache != 0 {
            return Err("page cache has zeroed pages it does not hold");
        }
        Ok(PageCache {
            base,
            cache,
            known_zero,
            owner,
        })
    }

    /// The address of the block's first page. Go: `(*PageCache).Base` (export_test.go).
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// Bit `i` set: page `i` of the block is free in the cache. Go: `(*PageCache).Cache`.
    pub const fn cache(&self) -> u64 {
        self.cache
    }

    /// Bit `i` set: page `i` of the block is free and known to be zero. Go:
    /// `(*PageCache).Scav`.
    pub const fn known_zero(&self) -> u64 {
        self.known_zero
    }

    /// The allocator the cache's pages belong to (`None` for an empty cache).
    pub const fn owner(&self) -> Option<HandedOut<'m>> {
        self.owner
    }

    /// Whether the cache holds no free page. Go: `(*pageCache).empty`.
    pub const fn is_empty(&self) -> bool {
        self.cache == 0
    }

    /// The number of free pages the cache holds.
    pub const fn free_pages(&self) -> usize {
        self.cache.count_ones() as usize
    }

    /// Takes the lowest run of `npages` free pages out of the cache and hands them out
    /// (sets their handed-out bits), without the allocator's lock. Go:
    /// `(*pageCache).alloc`.
    ///
    /// Returns the address of the run's first page and how many of its pages were
    /// scavenged (known to be zero), or `None` if the cache holds no such run, or if
    /// `npages` is 0 or more than 64.
    ///
    /// # Panics
    /// If a page was already handed out: the allocator's state is corrupt.
    pub fn alloc(&mut self, npages: usize) -> Option<(u64, usize)> {
        if npages == 0 || npages > PAGE_CACHE_PAGES || self.cache == 0 {
            return None;
        }
        let got = if npages == 1 {
            // Most requests are for one page; the lowest free one needs no search.
            let i = self.cache.trailing_zeros();
            let known_zero_pages = ((self.known_zero >> i) & 1) as usize;
            self.cache &= !(1 << i);
            self.known_zero &= !(1 << i);
            (self.base + u64::from(i) * PAGE_SIZE, known_zero_pages)
        } else {
            self.alloc_n(npages)?
        };
        if let Some(owner) = self.owner {
            owner.set(got.0, npages);
        }
        Some(got)
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
        let known_zero_pages = (self.known_zero & mask).count_ones() as usize;
        self.cache &= !mask;
        self.known_zero &= !mask;
        Some((self.base + i as u64 * PAGE_SIZE, known_zero_pages))
    }
}

impl<'m> PageAlloc<'m> {
    /// Takes the 64-page-aligned block that holds the first free page and gives its free
    /// pages to a new cache: allocated in the tree, held by the cache (not handed out)
    /// until [`PageCache::alloc`] hands them out or [`PageCache::flush`] returns them. An
    /// empty cache means no page is free. Go: `(*pageAlloc).allocToCache`.
    pub fn alloc_to_cache(&mut self) -> PageCache<'m> {
        let (_, end) = self.chunk_bounds();
        if ChunkIdx::of(self.search_addr()).0 >= end {
            return PageCache::empty();
        }
        let ci = ChunkIdx::of(self.search_addr());
        // Fast path: the chunk under the search address has a free page.
        let page = if self.sum(LEAF, ci.0) != PallocSum::EMPTY {
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
                    return PageCache::empty();
                }
            }
        };
        let ci = ChunkIdx::of(page);
        let base = page & !((PAGE_CACHE_PAGES as u64 * PAGE_SIZE) - 1);
        let cpi = chunk_page_index(base);
        let (cache, known_zero) = self.with_chunk(ci, |chunk| {
            let cache = !chunk.alloc.pages64(cpi);
            let known_zero = chunk.known_zero.block64(cpi);
            chunk.alloc.alloc_pages64(cpi, cache);
            chunk.known_zero.clear_block64(cpi, cache & known_zero);
            (cache, known_zero)
        });
        self.add_free_pages(-(cache.count_ones() as isize));
        self.update(base, PAGE_CACHE_PAGES, false, true);
        // The last page of the block, not the one after it: the search address must stay
        // inside grown memory.
        self.set_search_addr(base + (PAGE_CACHE_PAGES as u64 - 1) * PAGE_SIZE);
        PageCache {
            base,
            cache,
            known_zero,
            owner: Some(self.handed_out()),
        }
    }

    /// Checks that `owner` is this allocator; `page` names the cache or batch.
    fn check_owner(&self, owner: Option<HandedOut<'_>>, page: u64) -> Result<(), RangeOpError> {
        let mine = self.handed_out();
        match owner {
            Some(o) if o == mine => Ok(()),
            o => Err(RangeOpError::ForeignAllocator {
                page,
                owner: o.map_or(0, |o| o.id()),
                other: mine.id(),
            }),
        }
    }

    /// Checks that every page of `pages` (single pages) is held: grown, allocated in the
    /// tree and not handed out. `base` and `npages` name the batch in errors.
    fn check_held(&self, pages: &[u64], base: u64, npages: usize) -> Result<(), RangeOpError> {
        let h = self.handed_out();
        for &page in pages {
            if self.check_range(page, 1).is_err() {
                return Err(RangeOpError::NotGrown { base, npages, page });
            }
            if !self.is_allocated(page) {
                return Err(RangeOpError::NotAllocated { base, npages, page });
            }
            if h.is_handed_out(page) {
                return Err(RangeOpError::NotHeld { base, npages, page });
            }
        }
        Ok(())
    }
}

impl PageCache<'_> {
    /// Returns the cache's pages to `pa` (with their zeroed bits) and empties the cache.
    /// Go: `(*pageCache).flush`.
    pub fn flush(&mut self, pa: &mut PageAlloc<'_>) -> Result<(), RangeOpError> {
        if self.is_empty() {
            return Ok(());
        }
        let base = self.base;
        let first = base + u64::from(self.cache.trailing_zeros()) * PAGE_SIZE;
        pa.check_owner(self.owner, first)?;
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
        let handed_out = self.cache & pa.handed_out().chunk_word(ci, cpi / 64).unwrap_or(0);
        if handed_out != 0 {
            let page = base + u64::from(handed_out.trailing_zeros()) * PAGE_SIZE;
            return Err(RangeOpError::NotHeld {
                base,
                npages: PAGE_CACHE_PAGES,
                page,
            });
        }
        pa.with_chunk(ci, |chunk| {
            chunk.alloc.clear_block64(cpi, self.cache);
            chunk.known_zero.set_block64(cpi, self.known_zero);
        });
        pa.update(base, PAGE_CACHE_PAGES, false, false);
        pa.note_freed(base, self.cache.count_ones() as usize);
        *self = PageCache::empty();
        Ok(())
    }
}

/// Single pages a batch holds at most.
pub const FREE_BATCH_PAGES: usize = 64;

/// Single pages freed on one CPU, held for reuse and returned to the allocator in
/// batches (not in Go, whose page cache only allocates; Linux's per-CPU page lists do
/// this).
///
/// [`free`](Self::free) and [`alloc`](Self::alloc) need no lock: a free takes the page's
/// handed-out bit (refusing a page that is not handed out) and pushes it, and the next
/// single-page allocation on that CPU takes the most recently freed page (still warm in
/// the CPU's caches) and sets the bit again. The pages stay allocated in the tree while
/// the batch holds them, so the tree's invariants hold throughout; returning them
/// ([`return_half`](Self::return_half), [`flush`](Self::flush)) needs the lock and frees
/// them sorted, with one summary update per chunk. The price: batched pages are not
/// handed out in address order, and look allocated to other CPUs until returned.
///
/// A batch belongs to the allocator of the pages it holds; an empty batch to none.
#[derive(Debug)]
pub struct FreeBatch<'m> {
    pages: [u64; FREE_BATCH_PAGES],
    len: usize,
    owner: Option<HandedOut<'m>>,
}

impl Default for FreeBatch<'_> {
    fn default() -> Self {
        FreeBatch::new()
    }
}

impl<'m> FreeBatch<'m> {
    /// The most pages a batch holds.
    pub const CAPACITY: usize = FREE_BATCH_PAGES;

    /// An empty batch.
    pub const fn new() -> FreeBatch<'m> {
        FreeBatch {
            pages: [0; FREE_BATCH_PAGES],
            len: 0,
            owner: None,
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

    /// Whether the batch is full: [`free`](Self::free) refuses pages until
    /// [`return_half`](Self::return_half) or [`flush`](Self::flush).
    pub const fn is_full(&self) -> bool {
        self.len == FREE_BATCH_PAGES
    }

    /// The allocator the held pages belong to (`None` while empty).
    pub const fn owner(&self) -> Option<HandedOut<'m>> {
        self.owner
    }

    /// The pages held, oldest first.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages[..self.len].iter().copied()
    }

    /// Hands out the most recently freed page again, without the allocator's lock.
    ///
    /// # Panics
    /// If the page was already handed out: the allocator's state is corrupt.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        let owner = self.owner?;
        self.len = self.len.checked_sub(1)?;
        let addr = self.pages[self.len];
        if self.len == 0 {
            self.owner = None;
        }
        owner.set(addr, 1);
        Some(addr)
    }

    /// Takes back the single page at `addr` from its caller, without the allocator's lock:
    /// `owner` is the handle of the allocator the page came from
    /// ([`PageAlloc::handed_out`]).
    ///
    /// Refused, with nothing changed: an unaligned address
    /// ([`RangeOpError::Unaligned`]); a page of another allocator than the pages the
    /// batch holds ([`RangeOpError::ForeignAllocator`]); a full batch
    /// ([`RangeOpError::BatchFull`]: call [`return_half`](Self::return_half) under the
    /// lock and retry); a page in memory `owner` has no bitmap for
    /// ([`RangeOpError::NotGrown`]); and a page that is not handed out (free, held by a
    /// cache or batch, never grown: [`RangeOpError::NotHandedOut`];
    /// [`PageAlloc::check_free`] tells which, under the lock). Of two racing frees of one
    /// page, exactly one succeeds.
    #[inline]
    pub fn free(&mut self, owner: HandedOut<'m>, addr: u64) -> Result<(), RangeOpError> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(RangeOpError::Unaligned { base: addr });
        }
        if let Some(mine) = self.owner
            && mine != owner
        {
            return Err(RangeOpError::ForeignAllocator {
                page: addr,
                owner: mine.id(),
                other: owner.id(),
            });
        }
        if self.is_full() {
            return Err(RangeOpError::BatchFull { page: addr });
        }
        owner.take(addr, 1).map_err(|page| {
            if owner.covers(page) {
                RangeOpError::NotHandedOut { page }
            } else {
                RangeOpError::NotGrown {
                    base: page,
                    npages: 1,
                    page,
                }
            }
        })?;
        self.pages[self.len] = addr;
        self.len += 1;
        self.owner = Some(owner);
        Ok(())
    }

    /// Returns the older half of the held pages to `pa` (under its lock) and returns how
    /// many. Refused, with nothing changed, if `pa` is not the batch's allocator or a
    /// page is not held there (see [`flush`](Self::flush)).
    pub fn return_half(&mut self, pa: &mut PageAlloc<'_>) -> Result<usize, RangeOpError> {
        self.give_back(pa, self.len.div_ceil(2))
    }

    /// Returns every held page to `pa` (under its lock) and returns how many. Refused,
    /// with nothing changed, if the batch holds pages of another allocator
    /// ([`RangeOpError::ForeignAllocator`]) or a page is not held in `pa`
    /// ([`RangeOpError::NotGrown`], [`RangeOpError::NotAllocated`],
    /// [`RangeOpError::NotHeld`]).
    pub fn flush(&mut self, pa: &mut PageAlloc<'_>) -> Result<usize, RangeOpError> {
        self.give_back(pa, self.len)
    }

    /// Returns the oldest `n` pages.
    fn give_back(&mut self, pa: &mut PageAlloc<'_>, n: usize) -> Result<usize, RangeOpError> {
        if n == 0 {
            return Ok(0);
        }
        let first = self.pages[0];
        pa.check_owner(self.owner, first)?;
        pa.check_held(&self.pages[..n], first, n)?;
        let mut sorted = [0; FREE_BATCH_PAGES];
        sorted[..n].copy_from_slice(&self.pages[..n]);
        pa.free_sorted_unchecked(sort(&mut sorted[..n]));
        self.pages.copy_within(n..self.len, 0);
        self.len -= n;
        if self.len == 0 {
            self.owner = None;
        }
        Ok(n)
    }
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
    /// Frees single held pages given in ascending order, which must be allocated grown
    /// memory, with one summary update per chunk.
    pub(crate) fn free_sorted_unchecked(&mut self, pages: &[u64]) {
        let mut rest = pages;
        while let Some(&head) = rest.first() {
            let ci = ChunkIdx::of(head);
            let n = rest.iter().take_while(|&&p| ChunkIdx::of(p) == ci).count();
            let old = self.summary[LEAF].cached(ci.0);
            // If every single free leaves a fresh summary as it was, so do all of them
            // together, and nothing above the leaf changes either.
            let unchanged = self.with_chunk(ci, |chunk| {
                let mut unchanged = true;
                for &p in &rest[..n] {
                    let i = chunk_page_index(p);
                    chunk.free1(i);
                    unchanged = unchanged
                        && old.is_some_and(|o| {
                            one_page_keeps_summary(chunk.alloc.words(), i, o, true)
                        });
                }
                unchanged
            });
            if !unchanged {
                self.mark_chunk_stale(ci);
            }
            self.note_freed(head, n);
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

    /// A cache of no allocator, checked.
    fn pc(base: u64, cache: u64, known_zero: u64) -> PageCache<'static> {
        PageCache::from_parts(None, base, cache, known_zero).unwrap()
    }

    fn copy<'m>(c: &PageCache<'m>) -> PageCache<'m> {
        PageCache { ..*c }
    }

    fn page(i: u64) -> Option<u64> {
        Some(BASE + i * PAGE_SIZE)
    }

    #[test]
    fn accessors() {
        let c = pc(BASE, 0xf0f0, 0x3030);
        assert_eq!(
            (c.base(), c.cache(), c.known_zero()),
            (BASE, 0xf0f0, 0x3030)
        );
        assert_eq!(c.free_pages(), 8);
        assert!(!c.is_empty());
        assert!(pc(BASE, 0, 0).is_empty());
        assert_eq!(pc(BASE, !0, 0).free_pages(), 64);
        assert!(PageCache::default().is_empty());
    }

    /// In every build, not only with debug assertions.
    #[test]
    fn forged_caches_are_errors() {
        assert_eq!(
            PageCache::from_parts(None, BASE, 0x1, 0x3),
            Err("page cache has zeroed pages it does not hold")
        );
        assert_eq!(
            PageCache::from_parts(None, BASE + PAGE_SIZE, 0x1, 0),
            Err("page cache base is not 64-page aligned")
        );
        let e = crate::testutil::new_page_cache(None, BASE + PAGE_SIZE, 0x1, 0).unwrap_err();
        assert!(
            e.contains("not 64-page aligned") && e.contains("0x40001000"),
            "{e}"
        );
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
                pc(BASE, 0, 0),
                [1, 2, 3, 4, 5, 11, 12, 16, 27, 32, 43, 57, 64, 121]
                    .iter()
                    .map(|&n| (n, None, 0))
                    .collect(),
            ),
            (
                "Lo1",
                pc(BASE, 0x1, 0x1),
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
                    known_zero: 0x1,
                    owner: None,
                },
                Vec::from([(1, page(63), 0), (1, None, 0), (10, None, 0)]),
            ),
            (
                "Swiss1",
                pc(BASE, 0x2000_5555, 0x5505),
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
                    known_zero: 0x2 << 62,
                    owner: None,
                },
                Vec::from([(2, page(0), 0), (2, None, 0), (1, None, 0)]),
            ),
            (
                "Hi2",
                pc(BASE, 0x3 << 62, 0x3 << 62),
                Vec::from([(2, page(62), 2), (2, None, 0), (1, None, 0)]),
            ),
            (
                "Swiss2",
                pc(BASE, 0x3333 << 31, 0x3030 << 31),
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
                pc(BASE, low_mask(53) << 10, low_mask(16) << 10),
                Vec::from([(53, page(10), 16), (53, None, 0), (1, None, 0)]),
            ),
            (
                "Full53",
                pc(BASE, !0, low_mask(16) << 10),
                Vec::from([(53, page(0), 16), (53, None, 0), (1, page(53), 0)]),
            ),
            (
                "Full64",
                pc(BASE, !0, !0),
                Vec::from([(64, page(0), 64), (64, None, 0), (1, None, 0)]),
            ),
            (
                "FullMixed",
                pc(BASE, !0, !0),
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
        let mut c = pc(BASE, !0, 0x8000_0000_0000_0001);
        assert_eq!(c.alloc(64), Some((BASE, 2)));
        assert_eq!((c.cache(), c.known_zero()), (0, 0));
        assert!(c.is_empty());

        // One missing page anywhere makes 64 impossible and leaves the cache alone.
        for hole in [0, 31, 63] {
            let mut c = pc(BASE, !(1 << hole), 0);
            assert_eq!(c.alloc(64), None);
            assert_eq!(c, pc(BASE, !(1 << hole), 0));
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let full = pc(BASE, !0, 0x00ff);
        for npages in [0, 65, 121, usize::MAX] {
            let mut c = copy(&full);
            assert_eq!(c.alloc(npages), None, "alloc({npages})");
            assert_eq!(c, full);
        }
    }

    #[test]
    fn failed_alloc_changes_nothing() {
        let start = pc(BASE, 0x0f0f_0f0f, 0x0303_0303);
        let mut c = copy(&start);
        assert_eq!(c.alloc(5), None);
        assert_eq!(c, start);
        assert_eq!(c.alloc(4), Some((BASE, 2)));
        assert_eq!(c.cache(), 0x0f0f_0f00);
        assert_eq!(c.known_zero(), 0x0303_0300);
    }

    /// The model's `alloc`: scan every start for `npages` free pages, one bit at a time.
    fn model_alloc(
        free: &mut [bool; 64],
        known_zero: &mut [bool; 64],
        npages: usize,
    ) -> Option<(u64, usize)> {
        if npages == 0 || npages > 64 {
            return None;
        }
        let start = (0..=64 - npages).find(|&s| free[s..s + npages].iter().all(|&f| f))?;
        let known_zero_pages = known_zero[start..start + npages]
            .iter()
            .filter(|&&s| s)
            .count();
        free[start..start + npages].fill(false);
        known_zero[start..start + npages].fill(false);
        Some((BASE + start as u64 * PAGE_SIZE, known_zero_pages))
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
            let known_zero = r.next() & cache;
            let mut c = pc(BASE, cache, known_zero);
            let mut free: [bool; 64] = core::array::from_fn(|i| cache >> i & 1 != 0);
            let mut zeroed: [bool; 64] = core::array::from_fn(|i| known_zero >> i & 1 != 0);
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
                assert_eq!(c.known_zero(), bits(&zeroed));
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
        pa.grow(region, Contents::Zeroed).unwrap();
        let h = pa.handed_out();
        let total = pa.free_pages();
        let mut live: Vec<u64> = (0..300).map(|_| pa.alloc(1).unwrap().base).collect();
        let mut batch = FreeBatch::new();
        let mut r = Rng(0x1234_5678_9abc_def1);
        let mut halves = 0;
        for step in 0..3000 {
            let x = r.next();
            if !x.is_multiple_of(3) && !live.is_empty() {
                if batch.is_full() {
                    assert_eq!(batch.return_half(&mut pa), Ok(FREE_BATCH_PAGES / 2));
                    halves += 1;
                }
                let i = (x >> 8) as usize % live.len();
                let addr = live.swap_remove(i);
                batch.free(h, addr).unwrap();
                assert!(!h.is_handed_out(addr));
                // A second free is refused, in the batch or out of it.
                let want = if batch.is_full() {
                    RangeOpError::BatchFull { page: addr }
                } else {
                    RangeOpError::NotHandedOut { page: addr }
                };
                assert_eq!(batch.free(h, addr), Err(want), "step {step}");
                assert_eq!(
                    pa.free(addr, 1),
                    Err(RangeOpError::Held {
                        base: addr,
                        npages: 1,
                        page: addr
                    }),
                    "step {step}"
                );
            } else if let Some(addr) = batch.alloc() {
                assert!(h.is_handed_out(addr));
                live.push(addr);
            } else {
                live.push(pa.alloc(1).unwrap().base);
            }
            assert!(batch.len() <= FREE_BATCH_PAGES);
            // Batched pages count as allocated in the tree, and as held.
            assert_eq!(
                pa.free_pages() + live.len() + batch.len(),
                total,
                "step {step}"
            );
            assert_eq!(pa.held_pages(), batch.len(), "step {step}");
            pa.check_invariants().unwrap();
        }
        assert!(halves > 3, "{halves} halves returned");
        assert_eq!(
            batch.free(h, 0),
            Err(RangeOpError::NotHandedOut { page: 0 })
        );
        assert_eq!(
            batch.free(h, 1 << 40),
            Err(RangeOpError::NotGrown {
                base: 1 << 40,
                npages: 1,
                page: 1 << 40
            })
        );
        assert_eq!(
            batch.free(h, PAGE_SIZE * 9 + 5),
            Err(RangeOpError::Unaligned {
                base: PAGE_SIZE * 9 + 5
            })
        );
        let n = batch.len();
        assert_eq!(batch.flush(&mut pa), Ok(n));
        assert!(batch.is_empty() && batch.owner().is_none());
        for addr in live {
            pa.free(addr, 1).unwrap();
        }
        assert_eq!(pa.free_pages(), total);
        assert_eq!(pa.held_pages(), 0);
        pa.check_invariants().unwrap();
    }

    #[test]
    fn free_batch_is_last_in_first_out() {
        use crate::testutil::HeapMetadata;
        use crate::{AddrRange, Contents, MetadataLayout};

        let region = AddrRange::new(0, 4 << 20);
        let mut md = HeapMetadata::default();
        let mut pa = md.page_alloc(MetadataLayout::for_regions(&[region]).unwrap());
        pa.grow(AddrRange::new(0, region.size()), Contents::Unknown)
            .unwrap();
        let a = pa.alloc(1).unwrap().base;
        let b = pa.alloc(1).unwrap().base;
        let mut batch = FreeBatch::new();
        batch.free(pa.handed_out(), a).unwrap();
        batch.free(pa.handed_out(), b).unwrap();
        assert_eq!(batch.owner(), Some(pa.handed_out()));
        assert_eq!(batch.alloc(), Some(b));
        assert_eq!(batch.alloc(), Some(a));
        assert_eq!(batch.alloc(), None);
        assert_eq!(batch.owner(), None);
    }

    #[test]
    fn a_full_batch_refuses_until_half_is_returned() {
        use crate::testutil::HeapMetadata;
        use crate::{AddrRange, Contents, MetadataLayout};

        let region = AddrRange::new(0, 4 << 20);
        let mut md = HeapMetadata::default();
        let mut pa = md.page_alloc(MetadataLayout::for_regions(&[region]).unwrap());
        pa.grow(AddrRange::new(0, region.size()), Contents::Unknown)
            .unwrap();
        let h = pa.handed_out();
        let mut batch = FreeBatch::new();
        for _ in 0..FREE_BATCH_PAGES {
            let p = pa.alloc(1).unwrap().base;
            batch.free(h, p).unwrap();
        }
        assert!(batch.is_full());
        let p = pa.alloc(1).unwrap().base;
        assert_eq!(batch.free(h, p), Err(RangeOpError::BatchFull { page: p }));
        assert!(h.is_handed_out(p), "a refused free changes nothing");
        let oldest: std::vec::Vec<u64> = batch.pages().take(FREE_BATCH_PAGES / 2).collect();
        assert_eq!(batch.return_half(&mut pa), Ok(FREE_BATCH_PAGES / 2));
        for q in oldest {
            assert!(
                pa.check_free(q, 1)
                    .is_err_and(|e| matches!(e, RangeOpError::NotAllocated { .. }))
            );
        }
        batch.free(h, p).unwrap();
        assert_eq!(pa.held_pages(), FREE_BATCH_PAGES / 2 + 1);
        pa.check_invariants().unwrap();
    }
}
