//! Exercise 1, solved: `find`'s levels replayed from the public summaries, counting.

use pagealloc::PageAlloc;
use pagealloc::inspect::{ChunkIdx, MAX_SEARCH_ADDR, PallocSum};
use pagealloc::inspect::{
    LEVEL_BITS, LEVEL_LOG_PAGES, LEVEL_SHIFT, PAGE_SIZE, SUMMARY_BLOCK_ENTRIES, SUMMARY_LEVELS,
};

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
    let mut cost = Cost::default();
    let search = pa.inspect().search_addr();
    if npages == 0 || search == MAX_SEARCH_ADDR {
        return (None, cost);
    }
    let mut i = 0usize;
    for l in 0..SUMMARY_LEVELS {
        i <<= LEVEL_BITS[l];
        let level = pa
            .inspect()
            .summaries(l)
            .map(Iterator::collect::<Vec<_>>)
            .unwrap_or_default();
        let (first, len) = if l == 0 {
            (0, level.len())
        } else {
            (i, SUMMARY_BLOCK_ENTRIES)
        };
        let search_idx = (search >> LEVEL_SHIFT[l]) as usize;
        let j0 = if l == 0 {
            search_idx
        } else if search_idx & !(SUMMARY_BLOCK_ENTRIES - 1) == i {
            search_idx & (SUMMARY_BLOCK_ENTRIES - 1)
        } else {
            0
        };
        let log_pages = LEVEL_LOG_PAGES[l];
        let (mut base, mut size) = (0u64, 0usize);
        let mut descend = None;
        let mut last = j0;
        for j in j0..len {
            last = j;
            let sum: PallocSum = level[first + j];
            let entry_base = ((first + j) as u64) << LEVEL_SHIFT[l];
            if sum == PallocSum::EMPTY {
                size = 0;
                continue;
            }
            if size + sum.start() >= npages {
                if size == 0 {
                    base = entry_base;
                }
                size += sum.start();
                break;
            }
            if sum.max() >= npages {
                descend = Some(first + j);
                break;
            }
            if size == 0 || sum.start() < 1 << log_pages {
                size = sum.end();
                base = entry_base + (PAGE_SIZE << log_pages) - size as u64 * PAGE_SIZE;
            } else {
                size += 1 << log_pages;
            }
        }
        cost.blocks += if l == 0 {
            last / SUMMARY_BLOCK_ENTRIES - j0 / SUMMARY_BLOCK_ENTRIES + 1
        } else {
            1
        };
        if size >= npages {
            return (Some(base), cost);
        }
        match descend {
            Some(k) => i = k,
            None => return (None, cost),
        }
    }
    let ci = ChunkIdx::new(i);
    let Some(data) = pa.inspect().chunk_data(ci) else {
        return (None, cost);
    };
    let Some((j, _)) = data.find_free(npages, 0) else {
        return (None, cost);
    };
    cost.bitmap_words = (j + npages - 1) / 64 + 1;
    (Some(ci.base() + j as u64 * PAGE_SIZE), cost)
}
