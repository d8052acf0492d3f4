//! Go's page cache tests that need an allocator (`runtime/mpagecache_test.go`:
//! `TestPageAllocAllocToCache` and `TestPageCacheFlush`) with Go's names, followed by
//! tests of the checks this port adds to `flush`. Go's `TestPageCacheAlloc` needs no
//! allocator and lives with the unit tests in `src/pagecache.rs`.
//!
//! States are built with `new_page_alloc` (Go: `NewPageAlloc`) and compared with
//! `assert_page_alloc_eq`: bounds, every bitmap, every zeroed ("scavenged") bitmap, the
//! handed-out bits and every summary level, then the invariants. `new_page_alloc` hands
//! its allocated pages out; pages a cache holds are moved to held with `hold`, and caches
//! that Go builds by hand come from `new_page_cache`, which checks them.

use pagealloc::inspect::PallocSum;
use pagealloc::testutil::{
    BASE_CHUNK_IDX, BitRange, ChunkIdx, HeapMetadata, Rng, hold, new_page_cache, page_base,
};
use pagealloc::testutil::{PAGE_CACHE_PAGES, PAGE_SIZE};
use pagealloc::{AddrRange, Contents, MetadataLayout, PageAlloc, PageCache, RangeOpError};

#[macro_use]
mod common;
use common::{Chunks, P, build, c, check, run_cases};

/// Ones in the low `n` bits, for `n < 64`.
const fn mask(n: u32) -> u64 {
    (1 << n) - 1
}

/// Go: `TestPageAllocAllocToCache`. Each hit is the cache the next `alloc_to_cache`
/// returns; Go's `NewPageCache(0, 0, 0)` (nothing free) is `None`, and only emptiness is
/// checked for it: an empty cache's base means nothing.
#[test]
fn test_page_alloc_alloc_to_cache() {
    struct Case {
        before_alloc: Chunks,
        before_scav: Option<Chunks>,
        /// `(base, cache, scav)`.
        hits: Vec<Option<(u64, u64, u64)>>,
        after_alloc: Chunks,
        after_scav: Option<Chunks>,
    }
    let cache = |ci: ChunkIdx, page: usize, bits: u64, known_zero: u64| {
        Some((page_base(ci, page), bits, known_zero))
    };
    // Go aligns its base chunk to a page of summaries (see `DiscontiguousMappedSumBoundary`
    // in go_pagealloc.rs); our summaries are not mapped page by page, but the case keeps
    // Go's layout.
    let sums_per_phys_page = PAGE_SIZE as usize / size_of::<PallocSum>();
    let bc = |off: usize| ChunkIdx::new((BASE_CHUNK_IDX.index() & !(sums_per_phys_page - 1)) + off);
    const BIG_JUMP: usize = 0x100000;

    let cases = [
        (
            "ManyArena",
            Case {
                before_alloc: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P - 64)]],
                before_scav: Some(chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => []]),
                hits: vec![cache(c(2), P - 64, !0, 0)],
                after_alloc: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
                after_scav: None,
            },
        ),
        (
            "Fail",
            Case {
                before_alloc: chunks![c(0) => [(0, P)]],
                before_scav: None,
                hits: vec![None, None, None],
                after_alloc: chunks![c(0) => [(0, P)]],
                after_scav: None,
            },
        ),
        (
            "RetainScavBits",
            Case {
                before_alloc: chunks![c(0) => [(0, 1), (10, 2)]],
                before_scav: Some(chunks![c(0) => [(0, 4), (11, 1)]]),
                hits: vec![cache(c(0), 0, !(0x1 | (0x3 << 10)), 0x7 << 1)],
                after_alloc: chunks![c(0) => [(0, 64)]],
                after_scav: Some(chunks![c(0) => [(0, 1), (11, 1)]]),
            },
        ),
        // Go adds the following cases when PallocChunkPages >= 512, as it is here.
        (
            "AllFree",
            Case {
                before_alloc: chunks![c(0) => []],
                before_scav: Some(chunks![c(0) => [(1, 1), (64, 64)]]),
                hits: vec![
                    cache(c(0), 0, !0, 0x2),
                    cache(c(0), 64, !0, !0),
                    cache(c(0), 128, !0, 0),
                    cache(c(0), 192, !0, 0),
                ],
                after_alloc: chunks![c(0) => [(0, 256)]],
                after_scav: None,
            },
        ),
        (
            "NotContiguous",
            Case {
                before_alloc: chunks![c(0) => [(0, P)], c(0xff) => [(0, 0)]],
                before_scav: Some(chunks![c(0) => [(0, P)], c(0xff) => [(31, 67)]]),
                hits: vec![cache(c(0xff), 0, !0, mask(33) << 31)],
                after_alloc: chunks![c(0) => [(0, P)], c(0xff) => [(0, 64)]],
                after_scav: Some(chunks![c(0) => [(0, P)], c(0xff) => [(64, 34)]]),
            },
        ),
        (
            "First",
            Case {
                before_alloc: chunks![c(0) => [(0, 32), (33, 31), (96, 32)]],
                before_scav: Some(chunks![c(0) => [(1, 4), (31, 5), (66, 2)]]),
                hits: vec![
                    cache(c(0), 0, 1 << 32, 1 << 32),
                    cache(c(0), 64, mask(32), 0x3 << 2),
                ],
                after_alloc: chunks![c(0) => [(0, 128)]],
                after_scav: None,
            },
        ),
        // Go adds this case on 64-bit platforms; our summaries are materialised up to
        // the highest grown chunk (~8 MiB of heap here).
        (
            "DiscontiguousMappedSumBoundary",
            Case {
                before_alloc: chunks![
                    bc(sums_per_phys_page - 1) => [(0, P - 1)],
                    bc(BIG_JUMP) => [(1, P - 1)],
                ],
                before_scav: Some(chunks![bc(sums_per_phys_page - 1) => [], bc(BIG_JUMP) => []]),
                hits: vec![
                    cache(bc(sums_per_phys_page - 1), P - 64, 1 << 63, 0),
                    cache(bc(BIG_JUMP), 0, 1, 0),
                    None,
                ],
                after_alloc: chunks![
                    bc(sums_per_phys_page - 1) => [(0, P)],
                    bc(BIG_JUMP) => [(0, P)],
                ],
                after_scav: None,
            },
        ),
    ];
    run_cases("TestPageAllocAllocToCache", &cases, |name, v| {
        let mut md = HeapMetadata::default();
        let mut b = build(&mut md, &v.before_alloc, v.before_scav.as_ref());
        let free_before = b.free_pages();
        let mut taken = 0;
        let mut caches = Vec::new();
        for (k, want) in v.hits.iter().enumerate() {
            let got = b.alloc_to_cache();
            match want {
                Some(want) => assert_eq!(
                    (got.base(), got.cache(), got.known_zero()),
                    *want,
                    "{name}: cache #{}",
                    k + 1
                ),
                None => assert!(
                    got.is_empty(),
                    "{name}: cache #{}: want empty, got {got:?}",
                    k + 1
                ),
            }
            taken += got.free_pages();
            if let Err(e) = b.check_invariants() {
                panic!("{name}: after cache #{}: invariant broken: {e:?}", k + 1);
            }
            caches.push(got);
        }
        // The cached pages count as allocated, and as held.
        assert_eq!(b.free_pages(), free_before - taken, "{name}: free pages");
        assert_eq!(b.held_pages(), taken, "{name}: held pages");
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &v.after_alloc, v.after_scav.as_ref());
        for pc in &caches {
            hold_cache(&want, pc.base(), pc.cache());
        }
        check(&want, &b);
    });
}

/// Moves the pages `cache` of the block at `base` from handed out to held.
fn hold_cache(pa: &PageAlloc<'_>, base: u64, cache: u64) {
    for i in (0..64).filter(|i| cache >> i & 1 != 0) {
        hold(pa, base + i * PAGE_SIZE, 1).unwrap();
    }
}

/// The runs of set bits of a 64-bit block starting at page `base`.
/// Go: `bits64ToBitRanges` in `TestPageCacheFlush`.
fn bits64_to_bit_ranges(bits: u64, base: usize) -> Vec<BitRange> {
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < 64 {
        if bits >> i & 1 == 0 {
            i += 1;
            continue;
        }
        let n = (bits >> i).trailing_ones() as usize;
        ranges.push(BitRange { i: base + i, n });
        i += n;
    }
    ranges
}

/// Go: `TestPageCacheFlush`: a cache of the block at page `base` of a chunk whose block
/// is allocated (the rest free) is flushed; the block's pages must come back free with
/// the cache's zeroed bits.
#[test]
fn test_page_cache_flush() {
    fn run_test(base: usize, cache: u64, known_zero: u64) {
        let what =
            format!("flush of base {base}, cache {cache:#018x}, known_zero {known_zero:#018x}");
        let mut md = HeapMetadata::default();
        let mut b = build(
            &mut md,
            &chunks![c(0) => [(base, 64)]],
            Some(&chunks![c(0) => []]),
        );
        let free_before = b.free_pages();

        // The test hands the pages of the block to the cache.
        let block = page_base(c(0), base);
        hold_cache(&b, block, cache);
        assert_eq!(b.held_pages(), cache.count_ones() as usize);
        let mut pc = new_page_cache(Some(b.handed_out()), block, cache, known_zero).unwrap();
        assert_eq!(pc.flush(&mut b), Ok(()), "{what}");
        assert_eq!(b.held_pages(), 0);
        assert!(
            pc.is_empty(),
            "{what}: the cache is not empty after the flush"
        );
        assert_eq!(
            b.free_pages(),
            free_before + cache.count_ones() as usize,
            "{what}"
        );

        let after_alloc = vec![(c(0), bits64_to_bit_ranges(!cache, base))];
        let after_scav = vec![(c(0), bits64_to_bit_ranges(known_zero, base))];
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &after_alloc, Some(&after_scav));
        if let Some(e) = pagealloc::testutil::diff_page_alloc(&want, &b) {
            panic!("{what}: allocators differ:\n{e}");
        }
        check(&want, &b);
    }

    // Empty.
    run_test(0, 0, 0);
    // Full.
    run_test(0, !0, !0);
    // The last block of the chunk.
    run_test(P - 64, !0, 0x8000_0000_0000_0001);
    // Random.
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..100 {
        let base = (r.next() % (P / 64) as u64) as usize * 64;
        let cache = r.next();
        let known_zero = r.next() & cache;
        run_test(base, cache, known_zero);
    }
}

// What this port adds: `flush` refuses caches whose pages are not allocated.

/// A cache taken and flushed straight back leaves the allocator as it was, zeroed bits
/// included; a stale copy flushed afterwards is refused and changes nothing.
#[test]
fn flush_round_trip_and_stale_copy() {
    let before_alloc = chunks![c(0) => [(0, 1), (10, 2), (100, 5)]];
    let before_scav = chunks![c(0) => [(0, 4), (11, 1), (40, 30)]];
    let mut want_md = HeapMetadata::default();
    let want = build(&mut want_md, &before_alloc, Some(&before_scav));
    let mut md = HeapMetadata::default();
    let mut b = build(&mut md, &before_alloc, Some(&before_scav));

    let mut pc = b.alloc_to_cache();
    let (base, cache, known_zero) = (
        page_base(c(0), 0),
        !(0x1 | 0x3 << 10),
        0x7 << 1 | mask(24) << 40,
    );
    assert_eq!(
        (pc.base(), pc.cache(), pc.known_zero()),
        (base, cache, known_zero)
    );
    assert_eq!(pc.owner(), Some(b.handed_out()));
    assert_eq!(pc.flush(&mut b), Ok(()));
    assert!(pc.is_empty());
    check(&want, &b);
    assert_eq!(b.free_pages(), want.free_pages());

    // The pages are free again: the stale copy's first page is named. (A `PageCache`
    // cannot be cloned; a stale copy is one the test support makes.)
    let mut stale = new_page_cache(Some(b.handed_out()), base, cache, known_zero).unwrap();
    assert_eq!(
        stale.flush(&mut b),
        Err(RangeOpError::NotAllocated {
            base,
            npages: PAGE_CACHE_PAGES,
            page: page_base(c(0), 1),
        })
    );
    assert_eq!(
        (stale.base(), stale.cache(), stale.known_zero()),
        (base, cache, known_zero),
        "a refused flush keeps the cache"
    );
    check(&want, &b);
    assert_eq!(b.free_pages(), want.free_pages());

    // Once the pages are handed out again, the stale copy is refused at the first one.
    let pages: Vec<u64> = (0..64)
        .filter(|i| cache >> i & 1 != 0)
        .map(|i| base + i * PAGE_SIZE)
        .collect();
    for &p in &pages {
        b.alloc_range(p, 1).unwrap();
    }
    assert_eq!(
        stale.flush(&mut b),
        Err(RangeOpError::NotHeld {
            base,
            npages: PAGE_CACHE_PAGES,
            page: page_base(c(0), 1),
        })
    );
    // Give them back with their zeroed bits, as they came.
    for &p in &pages {
        if known_zero >> ((p - base) / PAGE_SIZE) & 1 != 0 {
            b.free_zeroed(p, 1).unwrap();
        } else {
            b.free(p, 1).unwrap();
        }
    }
    check(&want, &b);

    // Flushing an empty cache is a no-op, whatever its base.
    assert_eq!(PageCache::empty().flush(&mut b), Ok(()));
    check(&want, &b);
}

/// A cache only some of whose pages are still allocated (another cache of the same
/// block was flushed, or the pages were freed) is refused at the first free page.
#[test]
fn flush_partly_free_cache() {
    let desc = chunks![c(0) => [(64, 64)]];
    let mut want_md = HeapMetadata::default();
    let want = build(&mut want_md, &desc, None);
    let mut md = HeapMetadata::default();
    let mut b = build(&mut md, &desc, None);
    b.free(page_base(c(0), 64 + 50), 2).unwrap();

    let mut pc =
        new_page_cache(Some(b.handed_out()), page_base(c(0), 64), mask(60) << 4, 0).unwrap();
    assert_eq!(
        pc.flush(&mut b),
        Err(RangeOpError::NotAllocated {
            base: page_base(c(0), 64),
            npages: PAGE_CACHE_PAGES,
            page: page_base(c(0), 64 + 50),
        })
    );
    assert!(!pc.is_empty());
    b.alloc_range(page_base(c(0), 64 + 50), 2).unwrap();
    check(&want, &b);
}

/// A cache of memory this allocator never grew is refused.
#[test]
fn flush_foreign_cache() {
    let desc = chunks![c(0) => [(0, 64)]];
    let mut want_md = HeapMetadata::default();
    let want = build(&mut want_md, &desc, None);
    let mut md = HeapMetadata::default();
    let mut b = build(&mut md, &desc, None);

    let base = page_base(c(0x40), 0);
    let mut pc = new_page_cache(Some(b.handed_out()), base, 0xff, 0x0f).unwrap();
    assert_eq!(
        pc.flush(&mut b),
        Err(RangeOpError::NotGrown {
            base,
            npages: PAGE_CACHE_PAGES,
            page: base
        })
    );
    assert_eq!(pc.cache(), 0xff);
    check(&want, &b);
}

/// A cache from another allocator is refused, even when the same pages are held in this
/// one too (two allocators built alike, each with a cache of the same block), and so is
/// a cache that belongs to no allocator. Nothing changes in either allocator.
#[test]
fn flush_cache_of_another_allocator() {
    let desc = chunks![c(0) => [(0, 64)]];
    let mut want_md = HeapMetadata::default();
    let want = build(&mut want_md, &desc, None);
    let mut md_a = HeapMetadata::default();
    let mut a = build(&mut md_a, &desc, None);
    let mut md_b = HeapMetadata::default();
    let mut b = build(&mut md_b, &desc, None);
    let mut from_a = a.alloc_to_cache();
    let mut from_b = b.alloc_to_cache();
    assert_eq!(from_a.base(), from_b.base());
    assert_ne!(a.handed_out(), b.handed_out());
    let page = page_base(c(0), 64);
    assert_eq!(
        from_a.flush(&mut b),
        Err(RangeOpError::ForeignAllocator {
            page,
            owner: a.handed_out().id(),
            other: b.handed_out().id(),
        })
    );
    assert_eq!(from_a.free_pages(), 64);
    let mut ownerless = new_page_cache(None, page, 1, 0).unwrap();
    assert_eq!(
        ownerless.flush(&mut b),
        Err(RangeOpError::ForeignAllocator {
            page,
            owner: 0,
            other: b.handed_out().id(),
        })
    );
    assert_eq!(from_b.flush(&mut b), Ok(()));
    assert_eq!(from_a.flush(&mut a), Ok(()));
    check(&want, &a);
    check(&want, &b);
}

/// A cache Go's `NewPageCache` would accept with a bad base or stray zeroed bits is an
/// error in every build (not only with debug assertions).
#[test]
fn forged_cache_is_an_error() {
    let e = new_page_cache(None, page_base(c(0), 1), 1, 0).unwrap_err();
    assert!(e.contains("not 64-page aligned"), "{e}");
    let e = new_page_cache(None, page_base(c(0), 64), 1, 3).unwrap_err();
    assert!(e.contains("zeroed pages it does not hold"), "{e}");
}

/// `alloc_to_cache` takes blocks in address order until nothing is free, and then
/// returns empty caches without changing anything.
#[test]
fn alloc_to_cache_exhausts_in_order() {
    let mut md = HeapMetadata::default();
    let mut b = build(
        &mut md,
        &chunks![c(0) => [(5, 100)], c(1) => [(0, P - 64)]],
        None,
    );
    let mut bases = Vec::new();
    let mut caches = Vec::new();
    loop {
        let pc = b.alloc_to_cache();
        if pc.is_empty() {
            break;
        }
        assert!(bases.len() < 20, "alloc_to_cache never runs dry");
        bases.push((pc.base(), pc.free_pages()));
        caches.push(pc);
    }
    let mut want_bases: Vec<(u64, usize)> = Vec::from([(page_base(c(0), 0), 64 - 59)]);
    want_bases.push((page_base(c(0), 64), 64 - 41));
    for k in 2..8 {
        want_bases.push((page_base(c(0), 64 * k), 64));
    }
    want_bases.push((page_base(c(1), P - 64), 64));
    assert_eq!(bases, want_bases);
    assert_eq!(b.free_pages(), 0);
    assert!(b.alloc_to_cache().is_empty());
    let mut want_md = HeapMetadata::default();
    let want = build(
        &mut want_md,
        &chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
        None,
    );
    for pc in &caches {
        hold_cache(&want, pc.base(), pc.cache());
    }
    check(&want, &b);
}

/// A cache of pages this allocator never grew is refused even where a bitmap covers
/// them: the pages of a partly grown chunk outside its grown range, and a chunk never
/// grown that shares a block of the chunk map with a grown one. Both bitmaps show such
/// pages as allocated, so the allocated check alone would accept the cache.
#[test]
fn flush_cache_of_ungrown_pages_with_bitmap() {
    fn grown(md: &mut HeapMetadata) -> PageAlloc<'_> {
        let layout = MetadataLayout::new(c(2).base(), 1).expect("layout");
        let mut pa = md.page_alloc(layout);
        pa.grow(
            AddrRange::new(page_base(c(0), 64), page_base(c(0), 64) + 64 * PAGE_SIZE),
            Contents::Unknown,
        )
        .unwrap();
        pa
    }
    let mut want_md = HeapMetadata::default();
    let want = grown(&mut want_md);
    let mut md = HeapMetadata::default();
    let mut b = grown(&mut md);

    for base in [page_base(c(0), 0), page_base(c(0), 128), c(1).base()] {
        let mut pc = new_page_cache(Some(b.handed_out()), base, !0, 0).unwrap();
        assert_eq!(
            pc.flush(&mut b),
            Err(RangeOpError::NotGrown {
                base,
                npages: PAGE_CACHE_PAGES,
                page: base
            }),
            "flush of a cache at {base:#x}"
        );
        check(&want, &b);
        assert_eq!(b.free_pages(), 64);
    }
}
