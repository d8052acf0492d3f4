//! The one-pass `grow` against the flat reference model: random page-granular memory
//! maps, grown in random order (so later grows land in chunks and blocks that earlier
//! ones already touched), with and without known-zero tracking. After every grow the
//! allocator's invariants (every summary recomputed from the bitmaps) must hold and its
//! bitmaps, known-zero bits, free runs and counts must equal the model's; at the end
//! every free page must be allocatable, in the model's order.

use pagealloc::testutil::{HeapMetadata, PAGE_SIZE, PALLOC_CHUNK_BYTES, Rng};
use pagealloc::{AddrRange, Contents, MetadataLayout};
use pagealloc_model::FlatModel;

/// Splits `[0, span_pages)` at random page boundaries into at most `max_pieces` pieces
/// and keeps about two thirds of them (adjacent kept pieces become touching regions).
fn random_regions(rng: &mut Rng, span_pages: u64, max_pieces: u64) -> Vec<AddrRange> {
    let pieces = 1 + rng.below(max_pieces);
    let mut cuts: Vec<u64> = (1..pieces).map(|_| rng.below(span_pages)).collect();
    cuts.extend([0, span_pages]);
    cuts.sort_unstable();
    cuts.dedup();
    let mut regions: Vec<AddrRange> = cuts
        .windows(2)
        .filter(|_| rng.below(3) != 0)
        .map(|w| AddrRange::new(w[0] * PAGE_SIZE, w[1] * PAGE_SIZE))
        .collect();
    // Grow in random order.
    for i in (1..regions.len()).rev() {
        regions.swap(i, rng.below(i as u64 + 1) as usize);
    }
    regions
}

fn run(seed: u64, span_chunks: u64, max_pieces: u64, known_zero: bool) {
    let mut rng = Rng(seed);
    let span_limit = span_chunks * PALLOC_CHUNK_BYTES;
    let regions = random_regions(&mut rng, span_limit / PAGE_SIZE, max_pieces);
    let mut layout = MetadataLayout::new(span_limit, usize::MAX).unwrap();
    let mut model = FlatModel::new(span_limit, usize::MAX);
    if !known_zero {
        layout = layout.without_known_zero();
        model = model.without_known_zero();
    }
    let mut md = HeapMetadata::default();
    let mut pa = md.page_alloc(layout);
    let what = |r: &AddrRange| format!("seed {seed:#x}, span {span_chunks} chunks, grow {r:?}");
    for r in &regions {
        let contents = if rng.below(2) == 0 {
            Contents::Zeroed
        } else {
            Contents::Unknown
        };
        assert_eq!(
            pa.grow(*r, contents),
            model.grow(*r, contents),
            "{}",
            what(r)
        );
        pa.check_invariants()
            .unwrap_or_else(|e| panic!("{}: {e}", what(r)));
        if let Some(d) = model.diff(&pa) {
            panic!("{}:\n{d}", what(r));
        }
    }
    // Everything grown can be taken, at the same addresses and with the same zeroed
    // counts, in runs of a few sizes.
    let mut zeroed = 0;
    for n in [512, 63, 1].into_iter().cycle() {
        let (got, want) = (pa.alloc(n), model.alloc(n));
        assert_eq!(got, want, "seed {seed:#x}: alloc({n})");
        match got {
            Ok(a) => zeroed += a.zeroed_pages,
            Err(_) if n == 1 => break,
            Err(_) => {}
        }
    }
    assert_eq!(pa.free_pages(), 0, "seed {seed:#x}");
    if !known_zero {
        assert_eq!(zeroed, 0, "seed {seed:#x}");
    }
    pa.check_invariants().unwrap();
}

#[test]
fn grow_matches_the_model_on_small_spans() {
    for seed in 1..=60u64 {
        let span_chunks = 1 + seed % 40;
        run(seed * 0x9e37_79b9, span_chunks, 12, seed % 3 != 0);
    }
}

#[test]
fn grow_matches_the_model_across_blocks_and_levels() {
    // 300 chunks span 19 blocks and cross a level-2 entry (128 MiB); 4100 chunks cross
    // the first root entry (8 GiB).
    for (seed, span_chunks, pieces) in [(7u64, 300, 40), (8, 300, 3), (9, 4100, 30), (10, 4100, 2)]
    {
        for known_zero in [true, false] {
            run(seed * 0x2545_f491, span_chunks, pieces, known_zero);
        }
    }
}
