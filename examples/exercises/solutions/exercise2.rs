//! Exercise 2, solved: best fit from the chunk summaries, carrying runs across chunks.

use pagealloc::PageAlloc;
use pagealloc::inspect::{ChunkIdx, FREE_CHUNK_SUM};
use pagealloc::inspect::{PAGE_SIZE, PALLOC_CHUNK_PAGES, SUMMARY_LEVELS};

/// The lowest of the smallest free runs of at least `npages` pages, found from the
/// summaries and bitmaps.
pub fn best_fit(pa: &PageAlloc<'_>, npages: usize) -> Option<u64> {
    // (length, base) of the best run so far: smaller, then lower, wins.
    let mut best: Option<(usize, u64)> = None;
    let consider = |best: &mut Option<(usize, u64)>, len: usize, base: u64| {
        if len >= npages && best.is_none_or(|b| (len, base) < b) {
            *best = Some((len, base));
        }
    };
    // The free run carried from the chunks before: `run` pages from `run_base`.
    let (mut run, mut run_base) = (0usize, 0u64);
    for (c, &sum) in pa
        .inspect()
        .summaries(SUMMARY_LEVELS - 1)
        .map(Iterator::collect::<Vec<_>>)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let base = ChunkIdx::new(c).base();
        if sum == FREE_CHUNK_SUM {
            if run == 0 {
                run_base = base;
            }
            run += PALLOC_CHUNK_PAGES;
            continue;
        }
        // The carried run ends in this chunk's free start (a run across chunks, or one
        // that starts at the chunk's first page).
        if run + sum.start() > 0 {
            consider(
                &mut best,
                run + sum.start(),
                if run > 0 { run_base } else { base },
            );
        }
        // Runs strictly inside the chunk: only a chunk with a long enough run has one.
        if sum.max() >= npages
            && let Some(data) = pa.inspect().chunk_data(ChunkIdx::new(c))
        {
            let mut p = sum.start();
            while p < PALLOC_CHUNK_PAGES - sum.end() {
                if data.alloc_bits().get(p) {
                    p += 1;
                    continue;
                }
                let from = p;
                while p < PALLOC_CHUNK_PAGES && !data.alloc_bits().get(p) {
                    p += 1;
                }
                if p < PALLOC_CHUNK_PAGES {
                    consider(&mut best, p - from, base + from as u64 * PAGE_SIZE);
                }
            }
        }
        run = sum.end();
        run_base = base + (PALLOC_CHUNK_PAGES - run) as u64 * PAGE_SIZE;
        if best.is_some_and(|(len, _)| len == npages) {
            break; // an exact fit: nothing later is smaller or lower
        }
    }
    if run > 0 {
        consider(&mut best, run, run_base);
    }
    best.map(|(_, base)| base)
}
