//! Exercise 4, solved: the highest run, found from the chunk summaries scanned downward.

use pagealloc::PageAlloc;
use pagealloc::inspect::{ChunkIdx, FREE_CHUNK_SUM};
use pagealloc::inspect::{PAGE_SIZE, PALLOC_CHUNK_PAGES, SUMMARY_LEVELS};

/// Allocates `npages` pages at the top of the highest free run that holds them (with
/// `PageAlloc::alloc_range`) and returns their base address; `None` if no run is long
/// enough (then nothing changes).
pub fn alloc_top_down(pa: &mut PageAlloc<'_>, npages: usize) -> Option<u64> {
    let base = find_top_down(pa, npages)?;
    pa.alloc_range(base, npages).ok()?;
    Some(base)
}

/// The base of the top `npages` pages of the highest run that holds them.
fn find_top_down(pa: &PageAlloc<'_>, npages: usize) -> Option<u64> {
    if npages == 0 {
        return None;
    }
    let at_top = |top: u64| top - npages as u64 * PAGE_SIZE;
    // The free run carried down from the chunks above: `run` pages below `run_top`.
    let (mut run, mut run_top) = (0usize, 0u64);
    let leaves = pa
        .inspect()
        .summaries(SUMMARY_LEVELS - 1)
        .map(Iterator::collect::<Vec<_>>)
        .unwrap_or_default();
    for c in (0..leaves.len()).rev() {
        let sum = leaves[c];
        let base = ChunkIdx::new(c).base();
        let top = base + (PALLOC_CHUNK_PAGES as u64) * PAGE_SIZE;
        if sum == FREE_CHUNK_SUM {
            if run == 0 {
                run_top = top;
            }
            run += PALLOC_CHUNK_PAGES;
            if run >= npages {
                return Some(at_top(run_top));
            }
            continue;
        }
        // The carried run goes down into this chunk's free end.
        if run + sum.end() >= npages {
            return Some(at_top(if run > 0 { run_top } else { top }));
        }
        // Runs strictly inside the chunk, highest first.
        if sum.max() >= npages
            && let Some(data) = pa.inspect().chunk_data(ChunkIdx::new(c))
        {
            let mut p = PALLOC_CHUNK_PAGES - sum.end(); // one past the highest page to look at
            while p > sum.start() {
                if data.alloc_bits().get(p - 1) {
                    p -= 1;
                    continue;
                }
                let end = p;
                while p > 0 && !data.alloc_bits().get(p - 1) {
                    p -= 1;
                }
                if p > 0 && end - p >= npages {
                    return Some(at_top(base + end as u64 * PAGE_SIZE));
                }
            }
        }
        run = sum.start();
        run_top = base + run as u64 * PAGE_SIZE;
    }
    None
}
