//! Exercise 1: count the cache lines a search reads (GUIDE.md section 9).

use pagealloc::PageAlloc;

/// What a search read.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Cost {
    /// 8-entry summary blocks (one 64-byte cache line each). The root level counts the
    /// groups of 8 entries it scanned, from the search address's entry on.
    pub blocks: usize,
    /// 64-bit words of the chunk bitmap searched, from the word holding the search index
    /// to the word holding the run's last page (0 when the summaries alone found the run).
    pub bitmap_words: usize,
}

/// The search `PageAlloc::find` makes for `npages` pages (without `alloc`'s fast path):
/// the address it finds, and what it read.
pub fn find_counting(pa: &PageAlloc<'_>, npages: usize) -> (Option<u64>, Cost) {
    let _ = (pa, npages);
    todo!("exercise 1: replay find's levels, counting blocks and bitmap words")
}
