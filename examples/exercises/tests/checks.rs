//! The checks of GUIDE.md section 9's exercises, ignored by default:
//!
//! ```text
//! cargo test -p pagealloc-exercises -- --ignored exercise2
//! ```
//!
//! Each compares an exercise's function with a slow reference (or with `alloc`) over
//! seeded random workloads whose runs reach across several chunks.

use pagealloc::testutil::HeapMetadata;
use pagealloc::{AddrRange, Contents, MetadataLayout, PageAlloc};
use pagealloc_exercises::exercise1::find_counting;
use pagealloc_exercises::exercise2::best_fit;
use pagealloc_exercises::exercise4::alloc_top_down;
use pagealloc_exercises::workload::{Rng, best_fit_slow, fragment, top_down_slow};

const PAGE: u64 = 4096;

/// Metadata for an allocator over `region`, grown.
fn metadata(region: AddrRange) -> (MetadataLayout, HeapMetadata) {
    let layout = MetadataLayout::for_regions(&[region]).unwrap();
    (layout, HeapMetadata::new(&layout))
}

fn grown<'m>(layout: MetadataLayout, md: &'m mut HeapMetadata, region: AddrRange) -> PageAlloc<'m> {
    let mut pa = PageAlloc::new(layout, md.metadata()).unwrap();
    pa.grow(region, Contents::Unknown).unwrap();
    pa
}

/// Random allocations (1 to 1500 pages, so runs cross chunks) and frees; calls `check`
/// after every step.
fn random_steps(
    pa: &mut PageAlloc<'_>,
    seed: u64,
    steps: usize,
    mut check: impl FnMut(&mut PageAlloc<'_>, usize),
) {
    let mut rng = Rng(seed | 1);
    let mut held: Vec<(u64, usize)> = Vec::new();
    for step in 0..steps {
        if held.is_empty() || rng.below(3) != 0 {
            let n = match rng.below(4) {
                0 => 1 + rng.below(8),
                1 => 1 + rng.below(64),
                2 => 1 + rng.below(512),
                _ => 1 + rng.below(1500),
            } as usize;
            if let Ok(a) = pa.alloc(n) {
                held.push((a.base, n));
            }
        } else {
            let (base, n) = held.swap_remove(rng.below(held.len() as u64) as usize);
            pa.free(base, n).unwrap();
        }
        check(pa, step);
    }
}

const SIZES: [usize; 9] = [1, 3, 8, 64, 300, 428, 512, 600, 1100];

#[test]
#[ignore = "exercise 1: cargo test -p pagealloc-exercises -- --ignored exercise1"]
fn exercise1_find_counting_finds_what_alloc_finds() {
    let region = AddrRange::new(0, 4 << 30);
    let (layout, mut md) = metadata(region);
    let mut pa = grown(layout, &mut md, region);
    let mut report = Vec::new();
    // A fresh allocator's free start answers small requests from the summaries alone; in
    // fragmented memory they land in holes inside chunks, found in bitmaps.
    let mut words_in_holes = 0;
    for phase in ["fresh 4 GiB", "fragmented"] {
        if phase == "fragmented" {
            fragment(&mut pa, &mut Rng(7));
        }
        for n in SIZES {
            let (found, cost) = find_counting(&pa, n);
            let got = pa.alloc(n).ok().map(|a| a.base);
            assert_eq!(
                found, got,
                "{phase}: find_counting({n}) and alloc({n}) disagree"
            );
            if let Some(base) = got {
                pa.free(base, n).unwrap();
            }
            assert!(
                cost.blocks >= 1,
                "{phase}, {n} pages: a search reads at least one block"
            );
            assert!(
                cost.bitmap_words <= 8,
                "{phase}, {n} pages: a chunk has 8 bitmap words"
            );
            if n > 512 {
                assert_eq!(
                    cost.bitmap_words, 0,
                    "{phase}: {n} pages are found from summaries"
                );
            } else if phase == "fragmented" {
                words_in_holes += cost.bitmap_words;
            }
            report.push(format!("{phase:>12}: {n:>4} pages at {found:x?}: {cost:?}"));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        words_in_holes > 0,
        "no bitmap word counted for the small requests in fragmented memory:\n{}",
        report.join("\n")
    );
}

#[test]
#[ignore = "exercise 2: cargo test -p pagealloc-exercises -- --ignored exercise2"]
fn exercise2_best_fit_matches_the_slow_reference() {
    // Two chunks: 10 free pages, 2 taken, 500 + 100 free across the boundary, 2 taken, 410
    // free: the runs that cross chunks must count.
    let region = AddrRange::new(0x20_0000, 0x60_0000);
    let (layout, mut md) = metadata(region);
    let mut pa = grown(layout, &mut md, region);
    pa.alloc_range(0x20_0000 + 10 * PAGE, 2).unwrap();
    pa.alloc_range(0x40_0000 + 100 * PAGE, 2).unwrap();
    for n in [1, 8, 11, 20, 400, 420, 599, 600, 601] {
        assert_eq!(best_fit(&pa, n), best_fit_slow(&pa, n), "{n} pages");
    }
    // Random workloads over 64 MiB at 16 MiB.
    for seed in 1..=4 {
        let region = AddrRange::new(16 << 20, 80 << 20);
        let (layout, mut md) = metadata(region);
        let mut pa = grown(layout, &mut md, region);
        random_steps(&mut pa, seed, 300, |pa, step| {
            for n in SIZES {
                assert_eq!(
                    best_fit(pa, n),
                    best_fit_slow(pa, n),
                    "seed {seed}, step {step}: best fit of {n} pages"
                );
            }
        });
    }
}

#[test]
#[ignore = "exercise 4: cargo test -p pagealloc-exercises -- --ignored exercise4"]
fn exercise4_top_down_takes_the_top_of_the_highest_run() {
    for seed in 1..=4 {
        let region = AddrRange::new(16 << 20, 80 << 20);
        let (layout, mut md) = metadata(region);
        let mut pa = grown(layout, &mut md, region);
        random_steps(&mut pa, seed, 200, |pa, step| {
            let n = SIZES[step % SIZES.len()];
            let want = top_down_slow(pa, n);
            let free = pa.free_pages();
            let got = alloc_top_down(pa, n);
            assert_eq!(got, want, "seed {seed}, step {step}: top-down {n} pages");
            match got {
                Some(base) => {
                    assert_eq!(pa.free_pages(), free - n, "the pages were allocated");
                    pa.free(base, n).unwrap();
                }
                None => assert_eq!(pa.free_pages(), free, "nothing changed"),
            }
            pa.check_invariants().unwrap();
        });
    }
}
