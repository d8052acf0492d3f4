//! Workloads and references shared by the checks and the exercises.

use pagealloc::PageAlloc;

/// The crate's test generator (the same xorshift stream everywhere), so that workloads
/// repeat exactly.
pub use pagealloc::testutil::Rng;

/// Fragments `pa`: allocates runs of 1 to 64 pages until nothing fits, then frees a random
/// half of them, so free holes of every size lie everywhere. Returns the runs still held.
pub fn fragment(pa: &mut PageAlloc<'_>, rng: &mut Rng) -> Vec<(u64, usize)> {
    let mut held = Vec::new();
    loop {
        let n = 1 + rng.below(64) as usize;
        match pa.alloc(n) {
            Ok(a) => held.push((a.base, n)),
            Err(_) if n > 1 => match pa.alloc(1) {
                Ok(a) => held.push((a.base, 1)),
                Err(_) => break,
            },
            Err(_) => break,
        }
    }
    let mut kept = Vec::new();
    for (base, n) in held {
        if rng.below(2) == 0 {
            pa.free(base, n).expect("a run this workload allocated");
        } else {
            kept.push((base, n));
        }
    }
    kept
}

/// The lowest of the smallest free runs of at least `npages` pages (exercise 2's answer).
pub fn best_fit_slow(pa: &PageAlloc<'_>, npages: usize) -> Option<u64> {
    pa.free_runs()
        .filter(|&(_, len)| len >= npages)
        .min_by_key(|&(base, len)| (len, base))
        .map(|(base, _)| base)
}

/// Where a top-down allocation of `npages` goes: the top end of the highest free run that
/// is long enough (exercise 4's answer).
pub fn top_down_slow(pa: &PageAlloc<'_>, npages: usize) -> Option<u64> {
    pa.free_runs()
        .filter(|&(_, len)| len >= npages)
        .last()
        .map(|(base, len)| base + ((len - npages) as u64) * 4096)
}
