//! `FreeBatch` against the flat reference model: pages a batch holds are allocated in the
//! tree and held (not handed out), so after every step the allocator must match a model
//! in which each page is free, held or handed out, hand out the same addresses, refuse
//! the same frees, and keep its invariants; returning a batch must free exactly its
//! pages.

use std::collections::BTreeSet;

use pagealloc::testutil::{HeapMetadata, Rng, bitmap_blocks};
use pagealloc::{AddrRange, Constraints, Contents, FreeBatch, MetadataLayout, RangeOpError};
use pagealloc_model::FlatModel;
use pagealloc_model::PageState;

const PAGE: u64 = 4096;

fn run(seed: u64) {
    let mut rng = Rng(seed);
    // A few regions with holes, over 24 MiB.
    let regions = [
        AddrRange::new(PAGE * 3, 5 << 20),
        AddrRange::new((6 << 20) + PAGE * 17, 15 << 20),
        AddrRange::new(16 << 20, (24 << 20) - PAGE * 9),
    ];
    let layout = MetadataLayout::for_regions(&regions).unwrap();
    let mut md = HeapMetadata::default();
    let mut pa = md.page_alloc(layout);
    let mut model = FlatModel::new(layout.span_limit(), bitmap_blocks(&layout));
    for r in &regions {
        pa.grow(*r, Contents::Unknown).unwrap();
        model.grow(*r, Contents::Unknown).unwrap();
    }
    let h = pa.handed_out();
    let mut batch = FreeBatch::new();
    let mut batched: BTreeSet<u64> = BTreeSet::new();
    let mut live: Vec<(u64, usize)> = Vec::new();
    let mut halves = 0;
    for _ in 0..300 {
        let a = pa.alloc(1).unwrap().base;
        assert_eq!(model.alloc(1).unwrap().base, a);
        live.push((a, 1));
    }
    for step in 0..4000 {
        // Phases of mostly frees (the batch fills and returns halves) and mostly
        // allocations (the batch empties, then the tree serves).
        let r = rng.below(200);
        let free_phase = (step / 300) % 2 == 0;
        let action = match (free_phase, r) {
            (_, 199) => 3,
            (true, 0..=29) | (false, 0..=149) => 0,
            (true, 30..=39) | (false, 150..=179) => 1,
            _ => 2,
        };
        let action = if action == 2 && live.is_empty() {
            0
        } else {
            action
        };
        match action {
            0 => {
                // Single pages: from the batch first (in both: the model hands the page
                // back to the caller, still allocated), else from the tree.
                let got = match batch.alloc() {
                    Some(a) => {
                        assert!(batched.remove(&a), "step {step}: batch gave {a:#x}");
                        model.hand_out(a, 1);
                        a
                    }
                    None => {
                        let want = model.alloc(1).map(|a| a.base).ok();
                        let got = pa.alloc(1).map(|a| a.base).ok();
                        assert_eq!(got, want, "step {step}: alloc(1)");
                        match got {
                            Some(a) => a,
                            None => continue,
                        }
                    }
                };
                live.push((got, 1));
            }
            1 => {
                let n = 1 + rng.below(40) as usize;
                let c = Constraints::aligned(1 << rng.below(4));
                let want = model.alloc_constrained(n, c).map(|a| a.base).ok();
                let got = pa.alloc_constrained(n, c).map(|a| a.base).ok();
                assert_eq!(got, want, "step {step}: alloc_constrained({n}, {c:?})");
                if let Some(a) = got {
                    live.push((a, n));
                }
            }
            2 => {
                let (base, n) = live.swap_remove(rng.below(live.len() as u64) as usize);
                if n == 1 {
                    if batch.is_full() {
                        assert_eq!(
                            batch.free(h, base),
                            Err(RangeOpError::BatchFull { page: base })
                        );
                        // The older half goes back to the tree.
                        halves += 1;
                        let oldest: Vec<u64> = batch.pages().take(batch.len() / 2).collect();
                        assert_eq!(batch.return_half(&mut pa), Ok(oldest.len()));
                        model.return_pages(&oldest).unwrap();
                        for p in &oldest {
                            assert!(batched.remove(p));
                        }
                    }
                    batch.free(h, base).unwrap();
                    model.batch_free(base).unwrap();
                    batched.insert(base);
                    // A second free is refused, in the batch or out of it, and the
                    // allocator can say why.
                    let want = if batch.is_full() {
                        RangeOpError::BatchFull { page: base }
                    } else {
                        RangeOpError::NotHandedOut { page: base }
                    };
                    assert_eq!(batch.free(h, base), Err(want));
                    let held = Err(RangeOpError::Held {
                        base,
                        npages: 1,
                        page: base,
                    });
                    assert_eq!(pa.free(base, 1), held);
                    assert_eq!(pa.check_free(base, 1), held);
                    assert_eq!(model.check_free(base, 1), held);
                    assert_eq!(model.state(base), PageState::Held);
                } else {
                    pa.free(base, n).unwrap();
                    model.free(base, n).unwrap();
                }
            }
            _ => {
                let pages: Vec<u64> = batch.pages().collect();
                assert_eq!(batch.flush(&mut pa), Ok(pages.len()));
                model.return_pages(&pages).unwrap();
                batched.clear();
            }
        }
        assert_eq!(
            batch.pages().collect::<BTreeSet<_>>(),
            batched,
            "step {step}"
        );
        assert_eq!(pa.held_pages(), model.held_pages(), "step {step}");
        assert_eq!(pa.held_pages(), batched.len(), "step {step}");
        if let Some(d) = model.diff(&pa) {
            panic!("step {step}: allocator and model differ:\n{d}");
        }
        pa.check_invariants()
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
    }
    assert!(
        halves > 5,
        "seed {seed:#x}: a full batch returned its older half only {halves} times"
    );
}

#[test]
fn free_batch_matches_the_model() {
    for seed in 1..=6 {
        run(seed * 0x9e37_79b9);
    }
}
