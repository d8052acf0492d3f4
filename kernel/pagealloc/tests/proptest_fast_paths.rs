//! Property tests aimed at the paths that skip the tree: whole 2 MiB chunks (taken from
//! the free-chunk hint, freed by setting the leaf), requests that failed before (the
//! doomed-request memo) and lazy summaries read by every kind of search (first fit,
//! constrained, the queries the harness compares), mixed with page caches, free batches
//! and frees of every size. The allocator must agree with the flat model after every op,
//! and `check_invariants` (which checks the stale marks) must hold.

use pagealloc::testutil::{PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES};
use pagealloc_model::{Op, RunConfig, run_ops_with};
use proptest::prelude::*;

const CHUNK: usize = PALLOC_CHUNK_PAGES;

/// A memory map of a few regions, mostly whole aligned chunks (so that free chunks
/// exist), sometimes page-granular.
fn memory_map(span_chunks: u64) -> impl Strategy<Value = Vec<Op>> {
    let chunk = CHUNK as u64;
    let region = prop_oneof![
        3 => (0..span_chunks, 1u64..=16).prop_map(move |(c, n)| (c * chunk, n * chunk)),
        1 => (0..span_chunks * chunk, 1u64..3000).prop_map(|(p, n)| (p, n)),
    ];
    prop::collection::vec((region, any::<bool>()), 1..6).prop_map(move |regions| {
        regions
            .into_iter()
            .map(|((base_page, npages), zeroed)| Op::Grow {
                base_page,
                npages: npages.min(span_chunks * chunk - base_page.min(span_chunks * chunk)),
                zeroed,
            })
            .collect()
    })
}

fn op(span_pages: u64) -> impl Strategy<Value = Op> {
    let window_end = (1u64..=span_pages + 1).prop_map(|p| p * PAGE_SIZE);
    prop_oneof![
        // Whole chunks, unconstrained or in a window.
        8 => Just(Op::AllocConstrained {
            npages: CHUNK,
            align_pages: CHUNK,
            min_addr: 0,
            max_addr: u64::MAX,
        }),
        3 => (0..span_pages, window_end).prop_map(|(p, max_addr)| Op::AllocConstrained {
            npages: CHUNK,
            align_pages: CHUNK,
            min_addr: p * PAGE_SIZE,
            max_addr,
        }),
        // Requests that often fail, repeated at a few sizes, and ones that fit.
        4 => prop::sample::select(vec![CHUNK + 1, 2 * CHUNK, 3000, 40_000])
            .prop_map(|npages| Op::Alloc { npages }),
        6 => prop_oneof![Just(1usize), 1usize..=CHUNK].prop_map(|npages| Op::Alloc { npages }),
        2 => (1usize..=CHUNK, (0u32..=10).prop_map(|k| 1usize << k)).prop_map(
            |(npages, align_pages)| Op::AllocConstrained {
                npages,
                align_pages,
                min_addr: 0,
                max_addr: u64::MAX,
            }
        ),
        // Frees: whole allocations (whole chunks among them) and parts.
        10 => any::<usize>().prop_map(|index| Op::Free { index }),
        2 => (any::<usize>(), any::<usize>(), 1usize..=CHUNK)
            .prop_map(|(index, skip, npages)| Op::FreePart { index, skip, npages }),
        // The per-CPU paths, which free and allocate behind the tree's back.
        2 => (0usize..4).prop_map(|cpu| Op::CacheFill { cpu }),
        2 => (0usize..4, 1usize..=3).prop_map(|(cpu, npages)| Op::CacheAlloc { cpu, npages }),
        1 => (0usize..4).prop_map(|cpu| Op::CacheFlush { cpu }),
        2 => (0usize..4, any::<usize>(), any::<usize>())
            .prop_map(|(cpu, index, skip)| Op::BatchFree { cpu, index, skip }),
        1 => (0usize..4).prop_map(|cpu| Op::BatchAlloc { cpu }),
        1 => (0usize..4, any::<bool>()).prop_map(|(cpu, half)| Op::BatchFlush { cpu, half }),
    ]
}

fn run() -> impl Strategy<Value = (RunConfig, Vec<Op>)> {
    // Up to 200 chunks, and one size past an 8 GiB root entry's 4096 chunks, so that
    // the leaf scan skips fresh entries at every level; sometimes without known zero.
    let chunks = prop_oneof![4 => 2u64..=64, 2 => 65u64..=200, 1 => 4100u64..=4104];
    (chunks, prop::bool::weighted(0.8)).prop_flat_map(|(chunks, known_zero)| {
        let config = RunConfig {
            span_limit: chunks * PALLOC_CHUNK_BYTES,
            l2_blocks: usize::MAX,
            full_check_every: if chunks > 1000 { 16 } else { 1 },
            known_zero,
        };
        let span_pages = chunks * CHUNK as u64;
        (
            Just(config),
            memory_map(chunks),
            prop::collection::vec(op(span_pages), 50..300),
        )
            .prop_map(|(config, mut map, ops)| {
                map.extend(ops);
                (config, map)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fast_paths_match_the_model((config, ops) in run()) {
        let stats = run_ops_with(config, &ops)
            .map_err(|e| TestCaseError::fail(format!("{config:?}\n{e}")))?;
        prop_assert!(stats.applied > 0);
    }
}
