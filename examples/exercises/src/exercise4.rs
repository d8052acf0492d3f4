//! Exercise 4: top-down allocation (GUIDE.md section 9).

use pagealloc::PageAlloc;

/// Allocates `npages` pages at the top of the highest free run that holds them (with
/// `PageAlloc::alloc_range`) and returns their base address; `None` if no run is long
/// enough (then nothing changes).
pub fn alloc_top_down(pa: &mut PageAlloc<'_>, npages: usize) -> Option<u64> {
    let _ = (pa, npages);
    todo!("exercise 4: mirror find, scanning from the top")
}
