//! Go's page allocator tests (`runtime/mpagealloc_test.go`) with Go's test and case
//! names, followed by tests of what this port adds: checked grows and frees.
//!
//! Every Go case builds its `before` and `after` states with `new_page_alloc` (Go:
//! `NewPageAlloc`), runs its operations and compares bounds, every bitmap, every zeroed
//! bitmap and every summary level with `assert_page_alloc_eq` (Go's `checkPageAlloc`
//! compares bitmaps only), then checks the allocator's invariants.
//!
//! Translation of Go's values:
//! * Go's `scav` result is bytes of scavenged memory; here it is a page count
//!   (`Allocation::zeroed_pages`), so Go's `k * PageSize` becomes `k`.
//! * Go's failed `alloc` returns base 0; here it is `Err(AllocError::OutOfMemory)`, as
//!   address 0 is a valid frame. In the tables below a failure is `None`.
//! * Go's cases sit in maps (random order); here they run in source order, every case
//!   runs even if an earlier one fails, and the test names the failing cases.

use pagealloc::inspect::PallocSum;
use pagealloc::testutil::{
    BASE_CHUNK_IDX, BitRange, ChunkIdx, HeapMetadata, MAX_NPAGES, page_base,
};
use pagealloc::testutil::{PAGE_SIZE, PALLOC_CHUNK_BYTES};
use pagealloc::{
    AddrRange, AllocError, Allocation, Constraints, Contents, GrowError, MetadataLayout, PageAlloc,
    RangeOpError,
};

#[macro_use]
mod common;
use common::{Chunks, P, build, c, check, run_cases};

/// The result Go's `hit{npages, base, scav}` stands for.
fn want_alloc(
    npages: usize,
    base: Option<u64>,
    zeroed_pages: usize,
) -> Result<Allocation, AllocError> {
    match base {
        Some(base) => Ok(Allocation {
            base,
            npages,
            zeroed_pages,
        }),
        None => Err(AllocError::OutOfMemory {
            npages,
            constraints: Constraints::NONE,
        }),
    }
}

/// Go: `TestPageAllocGrow`. Our `in_use` is page-granular; for the whole-chunk grows of
/// `new_page_alloc` it holds the same ranges as Go's chunk-granular `inUse`.
#[test]
fn test_page_alloc_grow() {
    struct Case {
        chunks: Vec<ChunkIdx>,
        in_use: Vec<AddrRange>,
    }
    /// Chunks `[a, b)` as an address range.
    fn r(a: usize, b: usize) -> AddrRange {
        AddrRange::new(page_base(c(a), 0), page_base(c(b), 0))
    }
    let every_other: Vec<usize> = (0..=64).step_by(2).collect();
    let cases = [
        (
            "One",
            Case {
                chunks: vec![c(0)],
                in_use: vec![r(0, 1)],
            },
        ),
        (
            "Contiguous2",
            Case {
                chunks: vec![c(0), c(1)],
                in_use: vec![r(0, 2)],
            },
        ),
        (
            "Contiguous5",
            Case {
                chunks: (0..5).map(c).collect(),
                in_use: vec![r(0, 5)],
            },
        ),
        (
            "Discontiguous",
            Case {
                chunks: vec![c(0), c(2), c(4)],
                in_use: vec![r(0, 1), r(2, 3), r(4, 5)],
            },
        ),
        (
            "Mixed",
            Case {
                chunks: vec![c(0), c(1), c(2), c(4)],
                in_use: vec![r(0, 3), r(4, 5)],
            },
        ),
        (
            "WildlyDiscontiguous",
            Case {
                chunks: vec![c(0), c(1), c(0x10), c(0x21)],
                in_use: vec![r(0, 2), r(0x10, 0x11), r(0x21, 0x22)],
            },
        ),
        (
            // Go's initial capacity of the range list is 16: 33 ranges grow it twice. Ours
            // is a fixed array of 128.
            "ManyDiscontiguous",
            Case {
                chunks: every_other.iter().map(|&i| c(i)).collect(),
                in_use: every_other.iter().map(|&i| r(i, i + 1)).collect(),
            },
        ),
        (
            // About 2 TiB apart: summaries up to the second chunk, ~8 MiB of heap.
            "ExtremelyDiscontiguous",
            Case {
                chunks: vec![c(0), c(0x100000)],
                in_use: vec![r(0, 1), r(0x100000, 0x100001)],
            },
        ),
    ];
    run_cases("TestPageAllocGrow", &cases, |name, v| {
        let desc: Chunks = v.chunks.iter().map(|&ci| (ci, vec![])).collect();
        let mut md = HeapMetadata::default();
        let b = build(&mut md, &desc, None);
        assert_eq!(b.inspect().grown(), v.in_use.as_slice(), "{name}: in_use");
        let lo = *v.chunks.iter().min().unwrap();
        let hi = ChunkIdx::new(v.chunks.iter().max().unwrap().index() + 1);
        assert_eq!(b.inspect().chunk_bounds(), Some((lo, hi)), "{name}: bounds");
        assert_eq!(b.free_pages(), v.chunks.len() * P, "{name}: free pages");
        assert_eq!(b.total_pages(), v.chunks.len() * P, "{name}: total pages");
        if let Err(e) = b.check_invariants() {
            panic!("{name}: invariant broken: {e:?}");
        }
    });
}

/// Go: `TestPageAllocAlloc`. A hit is `(npages, base, zeroed pages)`.
#[test]
fn test_page_alloc_alloc() {
    struct Case {
        known_zero: Chunks,
        before: Chunks,
        after: Chunks,
        hits: Vec<(usize, Option<u64>, usize)>,
    }
    let pb = |off: usize, page: usize| Some(page_base(c(off), page));
    // Go aligns its base chunk to a page of summaries so that a chunk's summary ends one
    // physical page of the level's mapping. Our summaries are not mapped page by page,
    // but the case keeps Go's layout.
    let sums_per_phys_page = PAGE_SIZE as usize / size_of::<PallocSum>();
    let base_chunk_idx = BASE_CHUNK_IDX.index() & !(sums_per_phys_page - 1);
    let bc = |off: usize| ChunkIdx::new(base_chunk_idx + off);
    let bpb = |off: usize, page: usize| Some(page_base(bc(off), page));
    const BIG_JUMP: usize = 0x100000;
    const SMALL_OFFSET: usize = 0x503;

    let cases = [
        (
            "AllFree1",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(0, 1), (2, 2)]],
                hits: vec![
                    (1, pb(0, 0), 1),
                    (1, pb(0, 1), 0),
                    (1, pb(0, 2), 1),
                    (1, pb(0, 3), 1),
                    (1, pb(0, 4), 0),
                ],
                after: chunks![c(0) => [(0, 5)]],
            },
        ),
        (
            "ManyArena1",
            Case {
                before: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P - 1)]],
                known_zero: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
                hits: vec![(1, pb(2, P - 1), 1)],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
            },
        ),
        (
            "NotContiguous1",
            Case {
                before: chunks![c(0) => [(0, P)], c(0xff) => [(0, 0)]],
                known_zero: chunks![c(0) => [(0, P)], c(0xff) => [(0, P)]],
                hits: vec![(1, pb(0xff, 0), 1)],
                after: chunks![c(0) => [(0, P)], c(0xff) => [(0, 1)]],
            },
        ),
        (
            "AllFree2",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(0, 3), (7, 1)]],
                hits: vec![
                    (2, pb(0, 0), 2),
                    (2, pb(0, 2), 1),
                    (2, pb(0, 4), 0),
                    (2, pb(0, 6), 1),
                    (2, pb(0, 8), 0),
                ],
                after: chunks![c(0) => [(0, 10)]],
            },
        ),
        (
            "Straddle2",
            Case {
                before: chunks![c(0) => [(0, P - 1)], c(1) => [(1, P - 1)]],
                known_zero: chunks![c(0) => [(P - 1, 1)], c(1) => []],
                hits: vec![(2, pb(0, P - 1), 1)],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
            },
        ),
        (
            "AllFree5",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(0, 8), (9, 1), (17, 5)]],
                hits: vec![
                    (5, pb(0, 0), 5),
                    (5, pb(0, 5), 4),
                    (5, pb(0, 10), 0),
                    (5, pb(0, 15), 3),
                    (5, pb(0, 20), 2),
                ],
                after: chunks![c(0) => [(0, 25)]],
            },
        ),
        (
            "ExhaustPallocChunkPages-3",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(10, 1)]],
                hits: vec![
                    (P - 3, pb(0, 0), 1),
                    (P - 3, None, 0),
                    (1, pb(0, P - 3), 0),
                    (2, pb(0, P - 2), 0),
                    (1, None, 0),
                    (P - 3, None, 0),
                ],
                after: chunks![c(0) => [(0, P)]],
            },
        ),
        (
            "AllFreePallocChunkPages",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(0, 1), (P - 1, 1)]],
                hits: vec![(P, pb(0, 0), 2), (P, None, 0), (1, None, 0)],
                after: chunks![c(0) => [(0, P)]],
            },
        ),
        (
            "StraddlePallocChunkPages+1",
            Case {
                before: chunks![c(0) => [(0, P / 2)], c(1) => []],
                known_zero: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
                hits: vec![
                    (P + 1, pb(0, P / 2), P + 1),
                    (P, None, 0),
                    (1, pb(1, P / 2 + 1), 1),
                ],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P / 2 + 2)]],
            },
        ),
        (
            "AllFreePallocChunkPages*2",
            Case {
                before: chunks![c(0) => [], c(1) => []],
                known_zero: chunks![c(0) => [], c(1) => []],
                hits: vec![(P * 2, pb(0, 0), 0), (P * 2, None, 0), (1, None, 0)],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
            },
        ),
        (
            "NotContiguousPallocChunkPages*2",
            Case {
                before: chunks![c(0) => [], c(0x40) => [], c(0x41) => []],
                known_zero: chunks![c(0) => [(0, P)], c(0x40) => [], c(0x41) => []],
                hits: vec![
                    (P * 2, pb(0x40, 0), 0),
                    (21, pb(0, 0), 21),
                    (1, pb(0, 21), 1),
                ],
                after: chunks![c(0) => [(0, 22)], c(0x40) => [(0, P)], c(0x41) => [(0, P)]],
            },
        ),
        (
            "StraddlePallocChunkPages*5/4",
            Case {
                before: chunks![
                    c(0) => [(0, P)],
                    c(1) => [(0, P * 3 / 4)],
                    c(2) => [(0, P * 3 / 4)],
                    c(3) => [(0, 0)],
                ],
                known_zero: chunks![
                    c(0) => [(0, P)],
                    c(1) => [(P / 2, P / 4 + 1)],
                    c(2) => [(P / 3, 1)],
                    c(3) => [(P * 2 / 3, 1)],
                ],
                hits: vec![
                    (P * 5 / 4, pb(2, P * 3 / 4), 1),
                    (P * 5 / 4, None, 0),
                    (1, pb(1, P * 3 / 4), 1),
                ],
                after: chunks![
                    c(0) => [(0, P)],
                    c(1) => [(0, P * 3 / 4 + 1)],
                    c(2) => [(0, P)],
                    c(3) => [(0, P)],
                ],
            },
        ),
        // Go adds the following cases when PallocChunkPages >= 512, as it is here.
        (
            "AllFree64",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(21, 1), (63, 65)]],
                hits: vec![(64, pb(0, 0), 2), (64, pb(0, 64), 64), (64, pb(0, 128), 0)],
                after: chunks![c(0) => [(0, 192)]],
            },
        ),
        (
            "AllFree65",
            Case {
                before: chunks![c(0) => []],
                known_zero: chunks![c(0) => [(129, 1)]],
                hits: vec![(65, pb(0, 0), 0), (65, pb(0, 65), 1), (65, pb(0, 130), 0)],
                after: chunks![c(0) => [(0, 195)]],
            },
        ),
        (
            "StraddlePallocChunkPages",
            Case {
                before: chunks![c(0) => [(0, P / 2)], c(1) => [(P / 2, P / 2)]],
                known_zero: chunks![c(0) => [], c(1) => [(3, 100)]],
                hits: vec![(P, pb(0, P / 2), 100), (P, None, 0), (1, None, 0)],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
            },
        ),
        (
            "AllFreePallocChunkPages*7+5",
            Case {
                before: chunks![
                    c(0) => [], c(1) => [], c(2) => [], c(3) => [],
                    c(4) => [], c(5) => [], c(6) => [], c(7) => [],
                ],
                known_zero: chunks![
                    c(0) => [(50, 1)],
                    c(1) => [(31, 1)],
                    c(2) => [(7, 1)],
                    c(3) => [(200, 1)],
                    c(4) => [(3, 1)],
                    c(5) => [(51, 1)],
                    c(6) => [(20, 1)],
                    c(7) => [(1, 1)],
                ],
                hits: vec![
                    (P * 7 + 5, pb(0, 0), 8),
                    (P * 7 + 5, None, 0),
                    (1, pb(7, 5), 0),
                ],
                after: chunks![
                    c(0) => [(0, P)],
                    c(1) => [(0, P)],
                    c(2) => [(0, P)],
                    c(3) => [(0, P)],
                    c(4) => [(0, P)],
                    c(5) => [(0, P)],
                    c(6) => [(0, P)],
                    c(7) => [(0, 6)],
                ],
            },
        ),
        (
            "StraddlePallocChunkPages*2",
            Case {
                before: chunks![c(0) => [(0, P / 2)], c(1) => [], c(2) => [(P / 2, P / 2)]],
                known_zero: chunks![
                    c(0) => [(0, 7)],
                    c(1) => [(3, 5), (121, 10)],
                    c(2) => [(P / 2 + 12, 2)],
                ],
                hits: vec![(P * 2, pb(0, P / 2), 15), (P * 2, None, 0), (1, None, 0)],
                after: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
            },
        ),
        // Go adds the following cases on 64-bit platforms. Our summaries are
        // materialised up to the highest grown chunk (~8 and ~17 MiB of heap here).
        (
            // Go: a chunk whose summary ends a page of the summary mapping, and a second
            // chunk far above, so that exhausting the first must not read unmapped
            // summary memory on the way to the second.
            "DiscontiguousMappedSumBoundary",
            Case {
                before: chunks![bc(sums_per_phys_page - 1) => [], bc(BIG_JUMP) => []],
                known_zero: chunks![bc(sums_per_phys_page - 1) => [], bc(BIG_JUMP) => []],
                hits: vec![
                    (P - 1, bpb(sums_per_phys_page - 1, 0), 0),
                    (1, bpb(sums_per_phys_page - 1, P - 1), 0),
                    (1, bpb(BIG_JUMP, 0), 0),
                    (P - 1, bpb(BIG_JUMP, 1), 0),
                    (1, None, 0),
                ],
                after: chunks![
                    bc(sums_per_phys_page - 1) => [(0, P)],
                    bc(BIG_JUMP) => [(0, P)],
                ],
            },
        ),
        (
            // Go issue 40191: three chunks A, B and C far apart; A has one free page, B
            // a few (not at its end), C is free. The search-address candidate that the
            // allocation into C finds lies in unmapped memory below B, and the following
            // allocation must still find B.
            "DiscontiguousBadSearchAddr",
            Case {
                before: chunks![
                    c(0) => [(0, P - 1)],
                    c(BIG_JUMP + SMALL_OFFSET) => [(0, P - 10), (P - 1, 1)],
                    c(BIG_JUMP * 2) => [],
                ],
                known_zero: chunks![
                    c(0) => [],
                    c(BIG_JUMP + SMALL_OFFSET) => [],
                    c(BIG_JUMP * 2) => [],
                ],
                hits: vec![
                    (1, pb(0, P - 1), 0),
                    (100, bpb(BIG_JUMP * 2, 0), 0),
                    (9, bpb(BIG_JUMP + SMALL_OFFSET, P - 10), 0),
                ],
                after: chunks![
                    c(0) => [(0, P)],
                    c(BIG_JUMP + SMALL_OFFSET) => [(0, P)],
                    c(BIG_JUMP * 2) => [(0, 100)],
                ],
            },
        ),
    ];
    run_cases("TestPageAllocAlloc", &cases, |name, v| {
        let mut md = HeapMetadata::default();
        let mut b = build(&mut md, &v.before, Some(&v.known_zero));
        for (k, &(npages, base, zeroed)) in v.hits.iter().enumerate() {
            let got = b.alloc(npages);
            assert_eq!(
                got,
                want_alloc(npages, base, zeroed),
                "{name}: alloc #{}",
                k + 1
            );
        }
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &v.after, Some(&v.known_zero));
        check(&want, &b);
    });
}

/// Go: `TestPageAllocExhaust`: allocate from four free chunks until nothing fits.
#[test]
fn test_page_alloc_exhaust() {
    let sizes = [1, 2, 3, 4, 5, 8, 16, 64, 1024, 1025, 2048, 2049];
    let names: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    let cases: Vec<(&str, usize)> = names.iter().map(String::as_str).zip(sizes).collect();
    run_cases("TestPageAllocExhaust", &cases, |name, &npages| {
        let desc: Chunks = (0..4).map(|i| (c(i), vec![])).collect();
        let mut md = HeapMetadata::default();
        let mut b = build(&mut md, &desc, None);

        let n_alloc = (P * 4) / npages;
        for i in 0..n_alloc {
            let want = want_alloc(npages, Some(page_base(c(0), i * npages)), 0);
            assert_eq!(b.alloc(npages), want, "{name}: alloc #{}", i + 1);
        }
        assert_eq!(
            b.alloc(npages),
            want_alloc(npages, None, 0),
            "{name}: alloc #{}",
            n_alloc + 1
        );

        let mut alloc_pages = n_alloc * npages;
        let mut want_desc = Chunks::new();
        for i in 0..4 {
            let ranges = if alloc_pages >= P {
                alloc_pages -= P;
                vec![BitRange { i: 0, n: P }]
            } else if alloc_pages > 0 {
                let n = alloc_pages;
                alloc_pages = 0;
                vec![BitRange { i: 0, n }]
            } else {
                vec![]
            };
            want_desc.push((c(i), ranges));
        }
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &want_desc, None);
        check(&want, &b);
        assert_eq!(
            b.free_pages(),
            P * 4 - n_alloc * npages,
            "{name}: free pages"
        );
    });
}

/// Go: `TestPageAllocFree`. Every free is of allocated pages, so our checked `free`
/// must accept each one.
#[test]
fn test_page_alloc_free() {
    struct Case {
        before: Chunks,
        after: Chunks,
        npages: usize,
        frees: Vec<u64>,
    }
    let pb = page_base;
    let cases = [
        (
            "Free1",
            Case {
                npages: 1,
                before: chunks![c(0) => [(0, P)]],
                frees: (0..5).map(|i| pb(c(0), i)).collect(),
                after: chunks![c(0) => [(5, P - 5)]],
            },
        ),
        (
            "ManyArena1",
            Case {
                npages: 1,
                before: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
                frees: vec![pb(c(0), P / 2), pb(c(1), 0), pb(c(2), P - 1)],
                after: chunks![
                    c(0) => [(0, P / 2), (P / 2 + 1, P / 2 - 1)],
                    c(1) => [(1, P - 1)],
                    c(2) => [(0, P - 1)],
                ],
            },
        ),
        (
            "Free2",
            Case {
                npages: 2,
                before: chunks![c(0) => [(0, P)]],
                frees: (0..5).map(|i| pb(c(0), 2 * i)).collect(),
                after: chunks![c(0) => [(10, P - 10)]],
            },
        ),
        (
            "Straddle2",
            Case {
                npages: 2,
                before: chunks![c(0) => [(P - 1, 1)], c(1) => [(0, 1)]],
                frees: vec![pb(c(0), P - 1)],
                after: chunks![c(0) => [], c(1) => []],
            },
        ),
        (
            "Free5",
            Case {
                npages: 5,
                before: chunks![c(0) => [(0, P)]],
                frees: (0..5).map(|i| pb(c(0), 5 * i)).collect(),
                after: chunks![c(0) => [(25, P - 25)]],
            },
        ),
        (
            "FreePallocChunkPages",
            Case {
                npages: P,
                before: chunks![c(0) => [(0, P)]],
                frees: vec![pb(c(0), 0)],
                after: chunks![c(0) => []],
            },
        ),
        (
            "StraddlePallocChunkPages",
            Case {
                npages: P,
                before: chunks![c(0) => [(P / 2, P / 2)], c(1) => [(0, P / 2)]],
                frees: vec![pb(c(0), P / 2)],
                after: chunks![c(0) => [], c(1) => []],
            },
        ),
        (
            "StraddlePallocChunkPages+1",
            Case {
                npages: P + 1,
                before: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
                frees: vec![pb(c(0), P / 2)],
                after: chunks![c(0) => [(0, P / 2)], c(1) => [(P / 2 + 1, P / 2 - 1)]],
            },
        ),
        (
            "FreePallocChunkPages*2",
            Case {
                npages: P * 2,
                before: chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
                frees: vec![pb(c(0), 0)],
                after: chunks![c(0) => [], c(1) => []],
            },
        ),
        (
            "StraddlePallocChunkPages*2",
            Case {
                npages: P * 2,
                before: chunks![c(0) => [(0, P)], c(1) => [(0, P)], c(2) => [(0, P)]],
                frees: vec![pb(c(0), P / 2)],
                after: chunks![c(0) => [(0, P / 2)], c(1) => [], c(2) => [(P / 2, P / 2)]],
            },
        ),
        (
            "AllFreePallocChunkPages*7+5",
            Case {
                npages: P * 7 + 5,
                before: (0..8)
                    .map(|i| (c(i), vec![BitRange { i: 0, n: P }]))
                    .collect(),
                frees: vec![pb(c(0), 0)],
                after: chunks![
                    c(0) => [], c(1) => [], c(2) => [], c(3) => [],
                    c(4) => [], c(5) => [], c(6) => [], c(7) => [(5, P - 5)],
                ],
            },
        ),
        // Go adds the following cases when PallocChunkPages >= 512, as it is here.
        (
            "Free64",
            Case {
                npages: 64,
                before: chunks![c(0) => [(0, P)]],
                frees: vec![pb(c(0), 0), pb(c(0), 64), pb(c(0), 128)],
                after: chunks![c(0) => [(192, P - 192)]],
            },
        ),
        (
            "Free65",
            Case {
                npages: 65,
                before: chunks![c(0) => [(0, P)]],
                frees: vec![pb(c(0), 0), pb(c(0), 65), pb(c(0), 130)],
                after: chunks![c(0) => [(195, P - 195)]],
            },
        ),
    ];
    run_cases("TestPageAllocFree", &cases, |name, v| {
        let mut md = HeapMetadata::default();
        let mut b = build(&mut md, &v.before, None);
        for (k, &addr) in v.frees.iter().enumerate() {
            assert_eq!(
                b.free(addr, v.npages),
                Ok(()),
                "{name}: free #{} at {addr:#x}",
                k + 1
            );
        }
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &v.after, None);
        check(&want, &b);
    });
}

/// Go: `TestPageAllocAllocAndFree`. A hit is `(alloc, npages, base)`. Go checks only the
/// addresses; here the final state is compared as well.
#[test]
fn test_page_alloc_alloc_and_free() {
    struct Case {
        init: Chunks,
        hits: Vec<(bool, usize, u64)>,
        after: Chunks,
    }
    let base = page_base(c(0), 0);
    let cases = [(
        "Chunks8",
        Case {
            init: (0..8).map(|i| (c(i), vec![])).collect(),
            hits: vec![
                (true, P * 8, base),
                (false, P * 8, base),
                (true, P * 8, base),
                (false, P * 8, base),
                (true, P * 8, base),
                (false, P * 8, base),
                (true, 1, base),
                (false, 1, base),
                (true, P * 8, base),
            ],
            after: (0..8)
                .map(|i| (c(i), vec![BitRange { i: 0, n: P }]))
                .collect(),
        },
    )];
    run_cases("TestPageAllocAllocAndFree", &cases, |name, v| {
        let mut md = HeapMetadata::default();
        let mut b = build(&mut md, &v.init, None);
        for (k, &(alloc, npages, addr)) in v.hits.iter().enumerate() {
            if alloc {
                let got = b.alloc(npages);
                assert_eq!(
                    got,
                    want_alloc(npages, Some(addr), 0),
                    "{name}: alloc #{}",
                    k + 1
                );
            } else {
                assert_eq!(b.free(addr, npages), Ok(()), "{name}: free #{}", k + 1);
            }
            if let Err(e) = b.check_invariants() {
                panic!("{name}: after op #{}: invariant broken: {e:?}", k + 1);
            }
        }
        let mut want_md = HeapMetadata::default();
        let want = build(&mut want_md, &v.after, None);
        check(&want, &b);
    });
}

// What this port adds: checked grows, page-granular grows and checked frees.

/// Pages as bytes.
const fn pages(n: usize) -> u64 {
    n as u64 * PAGE_SIZE
}

/// An allocator with no memory yet, for memory below chunk `c(span_chunks)` and with
/// room for `l2_blocks` blocks of chunk bitmaps.
fn empty<'m>(md: &'m mut HeapMetadata, span_chunks: usize, l2_blocks: usize) -> PageAlloc<'m> {
    let layout = MetadataLayout::new(c(span_chunks).base(), l2_blocks).expect("layout");
    md.page_alloc(layout)
}

/// Asserts that `got` is in the same state as `want`: bitmaps, summaries, grown ranges,
/// search address and free-page count.
#[track_caller]
fn assert_unchanged(want: &PageAlloc<'_>, got: &PageAlloc<'_>) {
    check(want, got);
    assert_eq!(got.inspect().grown(), want.inspect().grown(), "in_use");
    assert_eq!(
        got.inspect().search_addr(),
        want.inspect().search_addr(),
        "search address"
    );
    assert_eq!(got.free_pages(), want.free_pages(), "free pages");
}

/// Every refused grow names the reason and changes nothing.
#[test]
fn grow_errors() {
    // Chunks c(0)..c(4) lie in one block of the chunk map (BASE_CHUNK_IDX is a multiple
    // of its 16 chunks), so one block of bitmaps is enough.
    fn grown(md: &mut HeapMetadata) -> PageAlloc<'_> {
        let mut pa = empty(md, 4, 1);
        pa.grow(
            AddrRange::new(c(1).base(), c(1).base() + PALLOC_CHUNK_BYTES),
            Contents::Zeroed,
        )
        .unwrap();
        pa
    }
    let mut snap_md = HeapMetadata::default();
    let snap = grown(&mut snap_md);
    let mut md = HeapMetadata::default();
    let mut pa = grown(&mut md);
    let existing = AddrRange::new(c(1).base(), c(2).base());
    let span_limit = c(4).base();

    let refused: [(u64, u64, GrowError); 10] = [
        (
            c(2).base(),
            0,
            GrowError::Empty {
                region: AddrRange::new(c(2).base(), c(2).base()),
            },
        ),
        (
            c(2).base() + 8,
            PAGE_SIZE,
            GrowError::Unaligned {
                region: AddrRange::new(c(2).base() + 8, c(2).base() + 8 + PAGE_SIZE),
            },
        ),
        (
            c(2).base(),
            PAGE_SIZE + 1,
            GrowError::Unaligned {
                region: AddrRange::new(c(2).base(), c(2).base() + PAGE_SIZE + 1),
            },
        ),
        (
            c(3).base(),
            2 * PALLOC_CHUNK_BYTES,
            GrowError::BeyondSpan {
                region: AddrRange::new(c(3).base(), c(5).base()),
                span_limit,
            },
        ),
        (
            // Ends one page above the span.
            page_base(c(3), 1),
            PALLOC_CHUNK_BYTES,
            GrowError::BeyondSpan {
                region: AddrRange::new(page_base(c(3), 1), page_base(c(4), 1)),
                span_limit,
            },
        ),
        (
            // A region up to the top of the 64-bit address space is beyond the span too.
            c(2).base(),
            !(PAGE_SIZE - 1) - c(2).base(),
            GrowError::BeyondSpan {
                region: AddrRange::new(c(2).base(), !(PAGE_SIZE - 1)),
                span_limit,
            },
        ),
        (
            c(1).base(),
            PALLOC_CHUNK_BYTES,
            GrowError::Overlap {
                region: existing,
                existing,
            },
        ),
        (
            // The last page below the grown chunk and its first page.
            page_base(c(0), P - 1),
            pages(2),
            GrowError::Overlap {
                region: AddrRange::new(page_base(c(0), P - 1), page_base(c(1), 1)),
                existing,
            },
        ),
        (
            // Its last page and the first page above it.
            page_base(c(1), P - 1),
            pages(2),
            GrowError::Overlap {
                region: AddrRange::new(page_base(c(1), P - 1), page_base(c(2), 1)),
                existing,
            },
        ),
        (
            // A region that covers it entirely.
            c(0).base(),
            3 * PALLOC_CHUNK_BYTES,
            GrowError::Overlap {
                region: AddrRange::new(c(0).base(), c(3).base()),
                existing,
            },
        ),
    ];
    for (base, size, want) in refused {
        assert_eq!(
            pa.grow(AddrRange::new(base, base + size), Contents::Unknown),
            Err(want),
            "grow({base:#x}, {size:#x})"
        );
        assert_unchanged(&snap, &pa);
    }

    // The neighbours on both sides are still free to grow, and coalesce with it.
    pa.grow(
        AddrRange::new(page_base(c(0), P - 1), page_base(c(0), P - 1) + pages(1)),
        Contents::Unknown,
    )
    .unwrap();
    pa.grow(
        AddrRange::new(c(2).base(), c(2).base() + pages(1)),
        Contents::Unknown,
    )
    .unwrap();
    assert_eq!(
        pa.inspect().grown(),
        &[AddrRange::new(page_base(c(0), P - 1), page_base(c(2), 1))]
    );
    assert_eq!(pa.free_pages(), P + 2);
    pa.check_invariants().unwrap();
}

/// A region in a block of the chunk map with no bitmaps left is refused.
#[test]
fn grow_out_of_metadata() {
    // c(16) lies in the block after c(0)'s; the pool holds one block.
    fn grown(md: &mut HeapMetadata) -> PageAlloc<'_> {
        let mut pa = empty(md, 17, 1);
        pa.grow(
            AddrRange::new(c(0).base(), c(0).base() + PALLOC_CHUNK_BYTES),
            Contents::Unknown,
        )
        .unwrap();
        pa
    }
    let mut snap_md = HeapMetadata::default();
    let snap = grown(&mut snap_md);
    let mut md = HeapMetadata::default();
    let mut pa = grown(&mut md);

    let region = AddrRange::new(c(16).base(), c(17).base());
    assert_eq!(
        pa.grow(region, Contents::Unknown),
        Err(GrowError::OutOfMetadata {
            region,
            needed_blocks: 1,
            free_blocks: 0
        })
    );
    assert_unchanged(&snap, &pa);
    // The block already in use still takes more chunks.
    pa.grow(
        AddrRange::new(c(5).base(), c(5).base() + PALLOC_CHUNK_BYTES),
        Contents::Unknown,
    )
    .unwrap();
    assert_eq!(pa.free_pages(), 2 * P);
    pa.check_invariants().unwrap();
}

/// A grow of part of a chunk makes only those pages free (and zeroed if asked); the
/// rest of the chunk stays allocated until another grow covers it.
#[test]
fn grow_page_granular() {
    let mut md = HeapMetadata::default();
    let mut pa = empty(&mut md, 2, 1);
    pa.grow(
        AddrRange::new(page_base(c(0), 10), page_base(c(0), 10) + pages(10)),
        Contents::Zeroed,
    )
    .unwrap();

    let mut want_md = HeapMetadata::default();
    let want = build(
        &mut want_md,
        &chunks![c(0) => [(0, 10), (20, P - 20)]],
        Some(&chunks![c(0) => [(10, 10)]]),
    );
    check(&want, &pa);
    assert_eq!(
        pa.inspect().grown(),
        &[AddrRange::new(page_base(c(0), 10), page_base(c(0), 20))]
    );
    assert_eq!(pa.inspect().chunk_bounds(), Some((c(0), c(1))));
    assert_eq!((pa.free_pages(), pa.total_pages()), (10, 10));

    // Only the ten grown pages can be handed out.
    assert_eq!(pa.alloc(11), want_alloc(11, None, 0));
    assert_eq!(pa.alloc(10), want_alloc(10, Some(page_base(c(0), 10)), 10));
    assert_eq!(pa.alloc(1), want_alloc(1, None, 0));
    // Pages of the chunk that were never grown cannot be freed.
    assert_eq!(
        pa.free(page_base(c(0), 5), 1),
        Err(RangeOpError::NotGrown {
            base: page_base(c(0), 5),
            npages: 1,
            page: page_base(c(0), 5)
        })
    );
    assert_eq!(pa.free(page_base(c(0), 10), 10), Ok(()));

    // A second grow that continues the first and crosses into the next chunk coalesces
    // with it; its memory is not known to be zero.
    pa.grow(
        AddrRange::new(
            page_base(c(0), 20),
            page_base(c(0), 20) + pages(P - 20 + 12),
        ),
        Contents::Unknown,
    )
    .unwrap();
    assert_eq!(
        pa.inspect().grown(),
        &[AddrRange::new(page_base(c(0), 10), page_base(c(1), 12))]
    );
    assert_eq!(pa.inspect().chunk_bounds(), Some((c(0), c(2))));
    assert_eq!(pa.free_pages(), P - 10 + 12);
    let mut want_md = HeapMetadata::default();
    let want = build(
        &mut want_md,
        &chunks![c(0) => [(0, 10)], c(1) => [(12, P - 12)]],
        None,
    );
    check(&want, &pa);

    // The whole run, across the chunk boundary, in one allocation. The freed pages kept
    // no zeroed bit (a freed page is dirty), so none is zeroed.
    assert_eq!(
        pa.alloc(P + 2),
        want_alloc(P + 2, Some(page_base(c(0), 10)), 0)
    );
    let mut want_md = HeapMetadata::default();
    let want = build(
        &mut want_md,
        &chunks![c(0) => [(0, P)], c(1) => [(0, P)]],
        None,
    );
    check(&want, &pa);

    // A free that runs past the grown memory is refused at the first page outside it.
    assert_eq!(
        pa.free(page_base(c(1), 0), 13),
        Err(RangeOpError::NotGrown {
            base: page_base(c(1), 0),
            npages: 13,
            page: page_base(c(1), 12)
        })
    );
    assert_eq!(pa.free_pages(), 0);
    pa.check_invariants().unwrap();
}

/// The state the free-error tests start from: in c(0) pages 0..8 were allocated and
/// freed again, 8..64 and 448..512 are allocated and 64..164 are zeroed; in c(1) pages
/// 0..300 are allocated.
fn free_error_state(md: &mut HeapMetadata) -> PageAlloc<'_> {
    let mut pa = build(
        md,
        &chunks![c(0) => [(0, 64), (448, 64)], c(1) => [(0, 300)]],
        Some(&chunks![c(0) => [(64, 100)]]),
    );
    pa.free(page_base(c(0), 0), 8).unwrap();
    pa
}

/// A double free, a partly free range, a free of memory never grown and a malformed
/// range are each refused with the first bad page, and change nothing.
#[test]
fn free_errors() {
    let mut snap_md = HeapMetadata::default();
    let snap = free_error_state(&mut snap_md);
    let mut md = HeapMetadata::default();
    let mut pa = free_error_state(&mut md);

    let pb = page_base;
    let not_allocated = |base: u64, npages: usize, page: u64| {
        Err(RangeOpError::NotAllocated { base, npages, page })
    };
    let not_grown =
        |base: u64, npages: usize, page: u64| Err(RangeOpError::NotGrown { base, npages, page });
    let refused: Vec<(u64, usize, Result<(), RangeOpError>)> = vec![
        // The same free again.
        (pb(c(0), 0), 8, not_allocated(pb(c(0), 0), 8, pb(c(0), 0))),
        // Partly free ranges: the first free page is named.
        (pb(c(0), 4), 8, not_allocated(pb(c(0), 4), 8, pb(c(0), 4))),
        (
            pb(c(0), 60),
            10,
            not_allocated(pb(c(0), 60), 10, pb(c(0), 64)),
        ),
        (pb(c(0), 63), 1, Ok(())),
        // Across the chunk boundary, the first free page is in the next chunk.
        (
            pb(c(0), 448),
            64 + 400,
            not_allocated(pb(c(0), 448), 64 + 400, pb(c(1), 300)),
        ),
        (
            pb(c(1), P - 1),
            1,
            not_allocated(pb(c(1), P - 1), 1, pb(c(1), P - 1)),
        ),
        // Memory never grown: below, above, far away and at address 0.
        (
            pb(c(0), 0) - PAGE_SIZE,
            1,
            not_grown(pb(c(0), 0) - PAGE_SIZE, 1, pb(c(0), 0) - PAGE_SIZE),
        ),
        (c(2).base(), 1, not_grown(c(2).base(), 1, c(2).base())),
        (
            c(0x1000).base(),
            4,
            not_grown(c(0x1000).base(), 4, c(0x1000).base()),
        ),
        (0, 1, not_grown(0, 1, 0)),
        // Grown memory that runs on past the grown range, also with an overflowing length.
        (
            pb(c(1), P - 2),
            3,
            not_grown(pb(c(1), P - 2), 3, c(2).base()),
        ),
        (
            pb(c(0), 8),
            usize::MAX,
            not_grown(pb(c(0), 8), usize::MAX, c(2).base()),
        ),
        // Malformed ranges.
        (
            pb(c(0), 8),
            0,
            Err(RangeOpError::ZeroPages { base: pb(c(0), 8) }),
        ),
        (
            pb(c(0), 8) + 8,
            1,
            Err(RangeOpError::Unaligned {
                base: pb(c(0), 8) + 8,
            }),
        ),
    ];
    for (base, npages, want) in refused {
        if want.is_ok() {
            // Not refused: a control that the cases around it are refused for the
            // reason they name. Undo it so the state stays the snapshot's.
            assert_eq!(pa.free(base, npages), Ok(()), "free({base:#x}, {npages})");
            assert_eq!(pa.alloc_range(base, npages).map(|a| a.zeroed_pages), Ok(0));
            continue;
        }
        assert_eq!(pa.free(base, npages), want, "free({base:#x}, {npages})");
        assert_unchanged(&snap, &pa);
    }

    // A reservation of allocated pages is refused the same way.
    assert_eq!(
        pa.alloc_range(pb(c(0), 440), 10),
        Err(RangeOpError::NotFree {
            base: pb(c(0), 440),
            npages: 10,
            page: pb(c(0), 448)
        }),
    );
    assert_eq!(
        pa.alloc_range(pb(c(0), 0), 9),
        Err(RangeOpError::NotFree {
            base: pb(c(0), 0),
            npages: 9,
            page: pb(c(0), 8)
        }),
    );
    assert_unchanged(&snap, &pa);

    // And the allocator still works: a reservation of zeroed pages, then a free of all
    // that is allocated in c(0).
    assert_eq!(
        pa.alloc_range(pb(c(0), 100), 10),
        Ok(Allocation {
            base: pb(c(0), 100),
            npages: 10,
            zeroed_pages: 10
        })
    );
    let mut want_md = HeapMetadata::default();
    let want = build(
        &mut want_md,
        &chunks![c(0) => [(8, 56), (100, 10), (448, 64)], c(1) => [(0, 300)]],
        Some(&chunks![c(0) => [(64, 100)]]),
    );
    check(&want, &pa);
    for (i, n) in [(8, 56), (100, 10), (448, 64)] {
        pa.free(pb(c(0), i), n).unwrap();
    }
    assert_eq!(pa.free_pages(), 2 * P - 300);
    pa.check_invariants().unwrap();
}

/// Requests for no pages, for more pages than the address space holds and with a bad
/// alignment are refused before any search, and change nothing.
#[test]
fn alloc_bad_requests() {
    let desc = chunks![c(0) => [(0, 3)]];
    let mut snap_md = HeapMetadata::default();
    let snap = build(&mut snap_md, &desc, None);
    let mut md = HeapMetadata::default();
    let mut pa = build(&mut md, &desc, None);

    assert_eq!(pa.alloc(0), Err(AllocError::ZeroPages));
    assert_eq!(
        pa.alloc_constrained(0, Constraints::aligned(8)),
        Err(AllocError::ZeroPages)
    );
    assert_eq!(
        pa.alloc(MAX_NPAGES + 1),
        Err(AllocError::TooManyPages {
            npages: MAX_NPAGES + 1
        })
    );
    assert_eq!(
        pa.alloc_constrained(1, Constraints::aligned(3)),
        Err(AllocError::BadAlignment { align_pages: 3 })
    );
    assert_unchanged(&snap, &pa);
    // The largest legal request is an ordinary failure.
    assert_eq!(pa.alloc(MAX_NPAGES), want_alloc(MAX_NPAGES, None, 0));
    check(&snap, &pa);
    assert_eq!(pa.alloc(1), want_alloc(1, Some(page_base(c(0), 3)), 0));
}
