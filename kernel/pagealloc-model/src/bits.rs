//! Bit helpers over `u64` words, and the flat first-fit bitmap (also the benchmarks'
//! linear baseline).

use std::fmt::Debug;

use pagealloc::testutil::{PAGE_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES};

/// Words of a chunk bitmap.
pub(crate) const CHUNK_WORDS: usize = PALLOC_CHUNK_PAGES / 64;

/// Ones in the low `n` bits, all 64 for `n >= 64`.
pub(crate) const fn low_mask(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1 << n) - 1 }
}

pub(crate) fn get_bit(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
}

/// Sets (`value`) or clears bits `[i, i + n)`, a word at a time.
pub(crate) fn put_bits(words: &mut [u64], i: usize, n: usize, value: bool) {
    let (mut i, end) = (i, i + n);
    while i < end {
        let b = i % 64;
        let k = (64 - b).min(end - i);
        let mask = low_mask(k) << b;
        if value {
            words[i / 64] |= mask;
        } else {
            words[i / 64] &= !mask;
        }
        i += k;
    }
}

/// Set bits in `[i, i + n)`.
pub(crate) fn count_bits(words: &[u64], i: usize, n: usize) -> usize {
    let (mut i, end) = (i, i + n);
    let mut count = 0;
    while i < end {
        let b = i % 64;
        let k = (64 - b).min(end - i);
        count += ((words[i / 64] >> b) & low_mask(k)).count_ones() as usize;
        i += k;
    }
    count
}

/// The first index in `[from, len)` whose bit equals `value`, or `len`. Skips whole words
/// that hold no such bit.
pub(crate) fn find_bit(words: &[u64], from: usize, len: usize, value: bool) -> usize {
    let mut i = from;
    while i < len {
        let w = if value { words[i / 64] } else { !words[i / 64] };
        let w = w >> (i % 64);
        if w != 0 {
            return (i + w.trailing_zeros() as usize).min(len);
        }
        i = (i / 64 + 1) * 64;
    }
    len
}

pub(crate) fn page_idx(addr: u64) -> usize {
    (addr >> PAGE_SHIFT) as usize
}

pub(crate) fn page_addr(idx: usize) -> u64 {
    (idx as u64) << PAGE_SHIFT
}

/// A plain first-fit allocator over a bitmap with one bit per page (set = free).
///
/// The reference model's free bitmap, and the "linear first-fit bitmap" baseline of the
/// benchmarks: `alloc` walks the bitmap from address 0, skipping words with no free
/// page, and takes the first run that is long enough.
#[derive(Clone, Debug)]
pub struct FirstFitBitmap {
    pub(crate) free: Vec<u64>,
    /// Pages the bitmap covers.
    npages: usize,
    free_pages: usize,
}

impl FirstFitBitmap {
    /// A bitmap over `[0, limit)` (rounded up to a page) with no free page.
    pub fn new(limit: u64) -> FirstFitBitmap {
        let npages = limit.div_ceil(PAGE_SIZE) as usize;
        FirstFitBitmap {
            free: vec![0; npages.div_ceil(64)],
            npages,
            free_pages: 0,
        }
    }

    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Pages the bitmap covers.
    pub fn capacity_pages(&self) -> usize {
        self.npages
    }

    /// Whether the page at `addr` is free (pages beyond the bitmap are not).
    pub fn is_free(&self, addr: u64) -> bool {
        addr >> PAGE_SHIFT < self.npages as u64 && get_bit(&self.free, page_idx(addr))
    }

    /// Free pages in `[base, base + npages pages)`, which must lie inside the bitmap.
    pub fn count_free(&self, base: u64, npages: usize) -> usize {
        count_bits(&self.free, page_idx(base), npages)
    }

    /// Makes `[base, base + npages pages)` free; none of it may be free already.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is already free.
    pub fn add_free(&mut self, base: u64, npages: usize) {
        let i = page_idx(base);
        assert!(
            i + npages <= self.npages,
            "first fit: range beyond the bitmap"
        );
        assert_eq!(
            count_bits(&self.free, i, npages),
            0,
            "first fit: page already free"
        );
        put_bits(&mut self.free, i, npages, true);
        self.free_pages += npages;
    }

    /// Marks `[base, base + npages pages)` allocated; all of it must be free.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is not free.
    pub fn take(&mut self, base: u64, npages: usize) {
        let i = page_idx(base);
        assert!(
            i + npages <= self.npages,
            "first fit: range beyond the bitmap"
        );
        assert_eq!(
            count_bits(&self.free, i, npages),
            npages,
            "first fit: page not free"
        );
        put_bits(&mut self.free, i, npages, false);
        self.free_pages -= npages;
    }

    /// The first maximal run of free pages that ends above `from`, clipped to start at
    /// `from`, as `(base, npages)`.
    pub fn next_run(&self, from: u64) -> Option<(u64, usize)> {
        let from = page_idx(from);
        if from >= self.npages {
            return None;
        }
        let start = find_bit(&self.free, from, self.npages, true);
        if start == self.npages {
            return None;
        }
        let end = find_bit(&self.free, start, self.npages, false);
        Some((page_addr(start), end - start))
    }

    /// The lowest address where `npages` free pages follow each other.
    pub fn first_fit(&self, npages: usize) -> Option<u64> {
        let mut from = 0;
        while let Some((base, n)) = self.next_run(from) {
            if n >= npages {
                return Some(base);
            }
            from = base + page_addr(n);
        }
        None
    }

    /// Allocates `npages` pages at the lowest address where they fit.
    pub fn alloc(&mut self, npages: usize) -> Option<u64> {
        if npages == 0 {
            return None;
        }
        let base = self.first_fit(npages)?;
        self.take(base, npages);
        Some(base)
    }

    /// Frees `[base, base + npages pages)`, which must be allocated.
    ///
    /// # Panics
    /// If the range leaves the bitmap or a page of it is already free.
    pub fn free(&mut self, base: u64, npages: usize) {
        self.add_free(base, npages);
    }
}
