//! Property tests: random memory maps and long random op sequences, run on `PageAlloc`
//! and on the flat reference model (`pagealloc::model`), which must agree on every
//! result, error and count, and on the full state after every op, including which pages
//! are free, held by a cache or batch, or handed out.
//!
//! `PROPTEST_CASES=n` sets the number of cases of each property (the defaults keep the
//! whole file within about half a minute in a debug build).

use pagealloc::testutil::{PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES};
use pagealloc_model::{BadFree, Op, RunConfig, RunStats, run_ops_with};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

/// `default` cases unless `PROPTEST_CASES` says otherwise. Failures are saved next to
/// this file (proptest cannot find it by itself when run from the workspace root).
fn config_with_cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: cases.unwrap_or(default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/proptest_model.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// Request sizes: mostly small, often at the sizes where the allocator switches paths
/// (one page, a word, a chunk and one more), sometimes up to 1100, rarely invalid.
fn npages() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..=8,
        4 => prop::sample::select(vec![1usize, 2, 63, 64, 65, 511, 512, 513, 1024, 1100]),
        4 => 1usize..=1100,
        1 => prop::sample::select(vec![0usize, 1 << 40, usize::MAX]),
    ]
}

/// A page-aligned address in the span or up to two chunks beyond it.
fn addr(span_pages: u64) -> impl Strategy<Value = u64> {
    (0..span_pages + 2 * PALLOC_CHUNK_PAGES as u64).prop_map(|p| p * PAGE_SIZE)
}

/// The shape of a run: span, metadata pool, how often to compare everything.
fn config() -> impl Strategy<Value = RunConfig> {
    let chunks = prop_oneof![
        4 => 1u64..=4,
        5 => 5u64..=40,
        2 => 60u64..=200,
        // Beyond one root entry (8 GiB), so runs and windows cross the root level.
        1 => 4094u64..=4100,
    ];
    let blocks = prop_oneof![8 => Just(usize::MAX), 1 => 1usize..=3];
    (chunks, blocks).prop_map(|(chunks, l2_blocks)| RunConfig {
        span_limit: chunks * PALLOC_CHUNK_BYTES,
        l2_blocks,
        // The full comparison walks every chunk of the span; thin it out on big ones.
        full_check_every: if chunks > 1000 { 16 } else { 1 },
        known_zero: true,
    })
}

/// The boot memory map: regions in address order with holes between them, starting at
/// page 0, anywhere, or near the top of the span; page-granular, so regions begin and
/// end inside chunks; each zeroed or not.
fn memory_map(span_pages: u64) -> impl Strategy<Value = Vec<Op>> {
    // Just below the end of a summary entry of level 3, 2, 1 or 0 (16 MiB, 128 MiB,
    // 1 GiB, 8 GiB), so that regions and runs cross it.
    let chunk_pages = PALLOC_CHUNK_PAGES as u64;
    let boundaries: Vec<u64> = [8, 64, 512, 4096]
        .into_iter()
        .map(|chunks| chunks * chunk_pages)
        .filter(|&b| b < span_pages)
        .collect();
    let below_boundary = if boundaries.is_empty() {
        Just(0u64).boxed()
    } else {
        (prop::sample::select(boundaries), 1u64..2048)
            .prop_map(|(b, back)| b.saturating_sub(back))
            .boxed()
    };
    let start = prop_oneof![
        2 => Just(0u64),
        2 => 0..span_pages,
        1 => span_pages.saturating_sub(3 * chunk_pages)..span_pages,
        2 => below_boundary,
    ];
    let gap = prop_oneof![1 => Just(0u64), 3 => 1u64..64, 2 => 64u64..2048];
    let len = prop_oneof![
        3 => 1u64..64,
        4 => 1u64..1100,
        2 => 512u64..5000,
        1 => 1u64..=span_pages,
    ];
    let regions = prop::collection::vec((gap, len, any::<bool>()), 1..8);
    (start, regions).prop_map(move |(start, regions)| {
        let mut ops = Vec::new();
        let mut page = start;
        for (gap, len, zeroed) in regions {
            if page >= span_pages {
                break;
            }
            let npages = len.min(span_pages - page);
            ops.push(Op::Grow {
                base_page: page,
                npages,
                zeroed,
            });
            page += npages + gap;
        }
        ops
    })
}

/// A memory map of many tiny regions with tiny holes, around the capacity of the grown
/// range list (128), spread over a few chunks.
fn fragmented_map() -> impl Strategy<Value = (RunConfig, Vec<Op>)> {
    let regions = prop::collection::vec((1u64..4, 1u64..6, any::<bool>()), 120..140);
    (0u64..600, regions).prop_map(|(start, regions)| {
        let mut ops = Vec::new();
        let mut page = start;
        for (gap, npages, zeroed) in regions {
            ops.push(Op::Grow {
                base_page: page,
                npages,
                zeroed,
            });
            page += npages + gap;
        }
        (RunConfig::new(4 * PALLOC_CHUNK_BYTES), ops)
    })
}

/// One op, with addresses scaled to the span.
fn op(span_pages: u64) -> impl Strategy<Value = Op> {
    let span_bytes = span_pages * PAGE_SIZE;
    let align = (0u32..=10).prop_map(|k| 1usize << k);
    let bad_align = prop::sample::select(vec![0usize, 3, 1 << 40]);
    let min_addr = prop_oneof![3 => Just(0u64), 2 => addr(span_pages)];
    // Windows like "below 16 MiB" and "below 4 GiB", scaled to the span.
    let max_addr = prop_oneof![
        3 => Just(u64::MAX),
        2 => Just(span_bytes / 16),
        2 => Just(span_bytes / 4),
        2 => addr(span_pages),
    ];
    let bad_kind = prop::sample::select(vec![
        BadFree::Double,
        BadFree::Unaligned,
        BadFree::ZeroPages,
        BadFree::OverlapBelow,
        BadFree::OverlapAbove,
        BadFree::Foreign,
    ]);
    let cpu = 0usize..8;
    prop_oneof![
        1 => (0..span_pages + 4, 1u64..2048, any::<bool>())
            .prop_map(|(base_page, npages, zeroed)| Op::Grow { base_page, npages, zeroed }),
        1 => (any::<u64>(), prop_oneof![Just(0u64), 1u64..0x10_0000], any::<bool>())
            .prop_map(|(base, size_bytes, zeroed)| Op::GrowBytes { base, size_bytes, zeroed }),
        12 => npages().prop_map(|npages| Op::Alloc { npages }),
        3 => (npages(), align.clone(), addr(span_pages), 0u64..4).prop_map(
            |(npages, align_pages, min_addr, slack)| Op::AllocConstrained {
                npages,
                align_pages,
                min_addr,
                max_addr: min_addr.saturating_add((npages as u64).saturating_add(slack).saturating_mul(PAGE_SIZE)),
            }
        ),
        8 => (npages(), prop_oneof![9 => align, 1 => bad_align], min_addr, max_addr).prop_map(
            |(npages, align_pages, min_addr, max_addr)| Op::AllocConstrained {
                npages,
                align_pages,
                min_addr,
                max_addr,
            }
        ),
        6 => (any::<usize>(), any::<usize>(), npages(), (0u32..=10).prop_map(|k| 1usize << k), 0usize..8)
            .prop_map(|(run, offset, npages, align_pages, slack)| Op::AllocConstrainedInFree {
                run,
                offset,
                npages,
                align_pages,
                slack,
            }),
        3 => (any::<usize>(), any::<usize>(), npages())
            .prop_map(|(run, offset, npages)| Op::AllocRangeInFree { run, offset, npages }),
        2 => (addr(span_pages), npages()).prop_map(|(base, npages)| Op::AllocRange { base, npages }),
        12 => any::<usize>().prop_map(|index| Op::Free { index }),
        3 => (any::<usize>(), any::<usize>(), npages())
            .prop_map(|(index, skip, npages)| Op::FreePart { index, skip, npages }),
        4 => (bad_kind, any::<usize>(), any::<u64>())
            .prop_map(|(kind, index, delta)| Op::BadFree { kind, index, delta }),
        1 => (addr(span_pages), npages()).prop_map(|(base, npages)| Op::FreeRange { base, npages }),
        4 => cpu.clone().prop_map(|cpu| Op::CacheFill { cpu }),
        6 => (cpu.clone(), prop_oneof![3 => 1usize..=4, 1 => 1usize..=66])
            .prop_map(|(cpu, npages)| Op::CacheAlloc { cpu, npages }),
        2 => cpu.clone().prop_map(|cpu| Op::CacheFlush { cpu }),
        1 => cpu.clone().prop_map(|cpu| Op::StaleFlush { cpu }),
        6 => (cpu.clone(), any::<usize>(), any::<usize>())
            .prop_map(|(cpu, index, skip)| Op::BatchFree { cpu, index, skip }),
        3 => cpu.clone().prop_map(|cpu| Op::BatchAlloc { cpu }),
        1 => (cpu.clone(), any::<bool>()).prop_map(|(cpu, half)| Op::BatchFlush { cpu, half }),
        2 => (cpu.clone(), 0u8..4, any::<usize>(), any::<u64>())
            .prop_map(|(cpu, kind, index, delta)| Op::BadBatchFree { cpu, kind, index, delta }),
        2 => (any::<usize>(), prop_oneof![3 => Just(1usize), 1 => 1usize..80], 0u8..3)
            .prop_map(|(index, npages, how)| Op::HeldFree { index, npages, how }),
        1 => cpu.prop_map(|cpu| Op::ForeignFlush { cpu }),
        1 => (0..span_pages + 2 * PALLOC_CHUNK_PAGES as u64, any::<u64>(), any::<u64>())
            .prop_map(|(base_page, cache, known_zero)| Op::ForgedFlush { base_page, cache, known_zero }),
    ]
}

/// A whole run: a configuration, its memory map, then `len` random ops.
fn run(len: std::ops::Range<usize>) -> impl Strategy<Value = (RunConfig, Vec<Op>)> {
    config().prop_flat_map(move |config| {
        let span_pages = config.span_limit / PAGE_SIZE;
        let ops = prop::collection::vec(op(span_pages), len.clone());
        (Just(config), memory_map(span_pages), ops).prop_map(|(config, mut map, ops)| {
            map.extend(ops);
            (config, map)
        })
    })
}

proptest! {
    #![proptest_config(config_with_cases(320))]

    /// Long sequences: fragmentation builds up, caches and frees interleave.
    #[test]
    fn pagealloc_matches_model((config, ops) in run(100..500)) {
        if let Err(e) = run_ops_with(config, &ops) {
            return Err(TestCaseError::fail(format!("{config:?}\n{e}")));
        }
    }
}

proptest! {
    #![proptest_config(config_with_cases(768))]

    /// Short sequences: many different memory maps and fresh allocators.
    #[test]
    fn pagealloc_matches_model_short((config, ops) in run(1..40)) {
        if let Err(e) = run_ops_with(config, &ops) {
            return Err(TestCaseError::fail(format!("{config:?}\n{e}")));
        }
    }
}

proptest! {
    #![proptest_config(config_with_cases(64))]

    /// Memory maps that fill the grown range list: grows past its capacity are refused
    /// unless they touch a range, and allocations cross many holes.
    #[test]
    fn pagealloc_matches_model_fragmented(
        ((config, mut map), ops) in (fragmented_map(), prop::collection::vec(op(4 * 512), 50..200))
    ) {
        map.extend(ops);
        if let Err(e) = run_ops_with(config, &map) {
            return Err(TestCaseError::fail(format!("{config:?}\n{e}")));
        }
    }
}

proptest! {
    #![proptest_config(config_with_cases(128))]

    /// Layouts without the known-zero record (`MetadataLayout::without_known_zero`):
    /// zeroed grows, forged and real flushes of known-zero pages and `free_zeroed` record
    /// nothing, so the model (which then knows no page to be zero) must agree on every
    /// result and bitmap, and no allocation may report a zeroed page.
    #[test]
    fn pagealloc_without_known_zero_matches_model((config, ops) in run(50..300)) {
        let config = RunConfig { known_zero: false, ..config };
        match run_ops_with(config, &ops) {
            Err(e) => return Err(TestCaseError::fail(format!("{config:?}\n{e}"))),
            Ok(stats) => prop_assert_eq!(stats.zeroed_pages, 0),
        }
    }
}

/// The generators must reach every kind of outcome, or the properties above would pass
/// without testing much. Runs a fixed sample and adds up what happened.
#[test]
fn generated_runs_cover_every_outcome() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = run(100..300);
    let mut total = RunStats::default();
    let mut runs = 0;
    while runs < 24 {
        let (config, ops) = strategy.new_tree(&mut runner).unwrap().current();
        if config.span_limit > 1000 * PALLOC_CHUNK_BYTES {
            continue;
        }
        let s = run_ops_with(config, &ops).unwrap_or_else(|e| panic!("{config:?}\n{e}"));
        runs += 1;
        total.applied += s.applied;
        total.skipped += s.skipped;
        total.grows += s.grows;
        total.grow_errors += s.grow_errors;
        total.allocs += s.allocs;
        total.alloc_errors += s.alloc_errors;
        total.constrained_allocs += s.constrained_allocs;
        total.range_allocs += s.range_allocs;
        total.range_alloc_errors += s.range_alloc_errors;
        total.frees += s.frees;
        total.free_errors += s.free_errors;
        total.cache_fills += s.cache_fills;
        total.cache_allocs += s.cache_allocs;
        total.flushes += s.flushes;
        total.flush_errors += s.flush_errors;
        total.zeroed_pages += s.zeroed_pages;
        total.batch_frees += s.batch_frees;
        total.batch_allocs += s.batch_allocs;
        total.batch_free_errors += s.batch_free_errors;
        total.held_refusals += s.held_refusals;
        total.foreign_refusals += s.foreign_refusals;
    }
    println!("{total:#?}");
    let t = total;
    let counts = [
        ("grows", t.grows),
        ("grow errors", t.grow_errors),
        ("allocs", t.allocs),
        ("alloc errors", t.alloc_errors),
        ("constrained allocs", t.constrained_allocs),
        ("range allocs", t.range_allocs),
        ("range alloc errors", t.range_alloc_errors),
        ("frees", t.frees),
        ("free errors", t.free_errors),
        ("cache fills", t.cache_fills),
        ("cache allocs", t.cache_allocs),
        ("flushes", t.flushes),
        ("flush errors", t.flush_errors),
        ("zeroed pages", t.zeroed_pages),
        ("batch frees", t.batch_frees),
        ("batch allocs", t.batch_allocs),
        ("refused batch frees", t.batch_free_errors),
        ("frees of held pages", t.held_refusals),
        ("foreign flushes", t.foreign_refusals),
    ];
    for (what, n) in counts {
        assert!(n >= 10, "only {n} {what} in {runs} runs: {t:?}");
    }
    // Most ops must do something rather than be skipped.
    assert!(t.applied > 4 * t.skipped, "{t:?}");
}
