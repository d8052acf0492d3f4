//! Per-chunk bitmaps: which of a chunk's pages are allocated, and which free pages are
//! known to be zero.
//!
//! This module follows Go's `src/runtime/mpallocbits.go` (and takes `fillAligned` from
//! `mgcscavenge.go`). A chunk's bitmap is eight 64-bit words; page `i` is bit `i % 64` of
//! word `i / 64`, so the least significant bit of word 0 is page 0, and a 1 means
//! "allocated". Every search works on whole words with bit tricks instead of walking pages.
//!
//! Portions of the design follow the Go runtime, Copyright 2019 The Go Authors, BSD-style
//! licence (the notice is in `LICENSE-GO`).
//!
//! # Deviation from Go
//! - Go's shifts by 64 or more give 0, Rust's do not; every such place goes through
//!   `low_mask` or is provably below 64.
//! - A page count of zero is a no-op (a count of 0 for `popcnt_range`) instead of an index
//!   underflow.
//! - The "not found" sentinel `^uint(0)` becomes `None`.
//! - Kernel extras not in Go: [`PallocBits::find_aligned`], [`PallocBits::next_free_run`],
//!   [`PallocBits::free_count`] and the conversions to and from raw words.
//! - `find_bit_range64`: Go requires `n >= 1` and gives wrong answers for `n > 64`. Here `n ==
//!   0` returns 0 (an empty run fits anywhere) and `n > 64` returns 64.
//! - `set_range`: `n == 0` does nothing; Go's index arithmetic underflows on it.
//! - `clear_range`: `n == 0` does nothing; Go's index arithmetic underflows on it.
//! - `popcnt_range`: `n == 0` gives 0; Go's index arithmetic underflows on it.
//! - `find`: Failure is `None` instead of `^uint(0)`; Go's (meaningless) search index on
//!   failure is dropped.
//! - `find1`: Returns the `(index, new_search_idx)` pair (both the same) like the other finds,
//!   and `None` instead of `^uint(0)`.
//! - `find_small_n`: `None` instead of `^uint(0)`.
//! - `find_large_n`: `None` instead of `^uint(0)`.
//! - `alloc_range`: `n == 0` does nothing.
//! - `free`: `n == 0` does nothing.
//! - `PallocData`: the known-zero bits are Go's scavenged bits; a set bit means "free and
//!   known to be zero" (Go: "returned to the OS"); the invariants are the same, so allocating a page clears its bit
//!   and freeing leaves it clear. Go embeds `pallocBits`; here it is the field `alloc`.

use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::consts::PALLOC_CHUNK_PAGES;
use crate::summary::{FREE_CHUNK_SUM, PallocSum};

/// 64-bit words in one chunk bitmap.
const WORDS: usize = PALLOC_CHUNK_PAGES / 64;

/// A mask of the `n` low bits; all 64 bits for `n >= 64`.
///
/// Go writes `1<<n - 1` and relies on `1<<64 == 0`; in Rust that shift panics or wraps.
#[inline]
pub(crate) const fn low_mask(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1 << n) - 1 }
}

/// Keeps bit `i` of `c` set iff bits `[i, i + n)` are all set (`1 <= n <= 64`), by cutting
/// `n - 1` bits off the top of every run of 1s.
///
/// The shift distance doubles each round: after cutting `k` bits, every gap between runs
/// is at least `2k` wide, so a shift by up to `2k` still cannot bridge one.
#[inline]
const fn shrink_runs64(mut c: u64, n: usize) -> u64 {
    let mut p = n - 1; // bits still to cut from each run
    let mut k = 1; // every run of 0s is at least this wide
    while p > 0 {
        if p <= k {
            c &= c >> p;
            break;
        }
        c &= c >> k;
        if c == 0 {
            return 0;
        }
        p -= k;
        k *= 2;
    }
    c
}

/// [`shrink_runs64`] over two words, so runs that cross from the low word into the high one
/// count; only the low 64 bits of the result are meaningful to callers.
#[inline]
const fn shrink_runs128(mut c: u128, n: usize) -> u128 {
    let mut p = n - 1;
    let mut k = 1;
    while p > 0 {
        if p <= k {
            c &= c >> p;
            break;
        }
        c &= c >> k;
        // Shifts only move bits down, so an empty low word stays empty.
        if c as u64 == 0 {
            return 0;
        }
        p -= k;
        k *= 2;
    }
    c
}

/// The index of the lowest run of `n` consecutive 1 bits in `c`, or a value `>= 64` if
/// there is none. Callers pass an inverted bitmap word, so the 1s are free pages.
///
/// Go: `findBitRange64`.
pub const fn find_bit_range64(c: u64, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    if n > 64 {
        return 64;
    }
    shrink_runs64(c, n).trailing_zeros() as usize
}

/// Sets every `m`-aligned group of `m` bits of `x` to all ones if any bit in the group is
/// set, and to all zeros otherwise. `m` must be one of 1, 2, 4, ..., 64; other values
/// panic. Example: `fill_aligned(0x0100a3, 8) == 0xff00ff`.
///
/// Go: `fillAligned` (in `mgcscavenge.go`).
#[cfg(test)]
pub(crate) const fn fill_aligned(x: u64, m: usize) -> u64 {
    // `c` holds the low m-1 bits of every group. (x & c) + c carries into a group's top
    // bit iff one of its low bits is set, and no carry leaves a group, so after OR-ing in
    // x and c and inverting, exactly the top bits of the all-zero groups remain.
    let c: u64 = match m {
        1 => return x,
        2 => 0x5555_5555_5555_5555,
        4 => 0x7777_7777_7777_7777,
        8 => 0x7f7f_7f7f_7f7f_7f7f,
        16 => 0x7fff_7fff_7fff_7fff,
        32 => 0x7fff_ffff_7fff_ffff,
        64 => 0x7fff_ffff_ffff_ffff,
        _ => panic!("fill_aligned: m must be a power of two from 1 to 64"),
    };
    let tops = !(((x & c) + c) | x | c);
    // Spread each top bit down over its group, then invert: empty groups become 0s.
    !((tops - (tops >> (m - 1))) | tops)
}

/// Calls `f(word_idx, mask)` for every word that pages `[i, i + n)` touch, where `mask`
/// holds the range's bits within that word. Does nothing for `n == 0`.
#[inline]
pub(crate) fn for_each_word_in_range(i: usize, n: usize, mut f: impl FnMut(usize, u64)) {
    if n == 0 {
        return;
    }
    debug_assert!(
        i + n <= PALLOC_CHUNK_PAGES,
        "page range [{i}, {i} + {n}) is not inside a chunk"
    );
    let j = i + n - 1; // last page, inclusive
    let (first, last) = (i / 64, j / 64);
    if first == last {
        // n may be 64 here, when the range is exactly one aligned word.
        f(first, low_mask(n) << (i % 64));
        return;
    }
    f(first, !0 << (i % 64));
    for k in first + 1..last {
        f(k, !0);
    }
    // j % 64 may be 63, which makes this all ones.
    f(last, low_mask(j % 64 + 1));
}

/// The first maximal run of 1 bits in `words ^ flip` that starts at or after bit `from`
/// (a run containing `from` is clipped to start there), as `(start, len)`.
fn next_run(words: &[u64; WORDS], flip: u64, from: usize) -> Option<(usize, usize)> {
    if from >= PALLOC_CHUNK_PAGES {
        return None;
    }
    let mut k = from / 64;
    let mut x = (words[k] ^ flip) & (!0 << (from % 64));
    while x == 0 {
        k += 1;
        if k == WORDS {
            return None;
        }
        x = words[k] ^ flip;
    }
    let start = k * 64 + x.trailing_zeros() as usize;
    // The run ends at the first 0 at or above `start`.
    let mut y = !(words[k] ^ flip) & (!0 << (start % 64));
    while y == 0 {
        k += 1;
        if k == WORDS {
            return Some((start, PALLOC_CHUNK_PAGES - start));
        }
        y = !(words[k] ^ flip);
    }
    Some((start, k * 64 + y.trailing_zeros() as usize - start))
}

/// Every maximal run of 1 bits in `words ^ flip`, lowest first, as `(start, len)`.
#[derive(Clone)]
struct Runs {
    words: [u64; WORDS],
    flip: u64,
    pos: usize,
}

impl Iterator for Runs {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let (start, len) = next_run(&self.words, self.flip, self.pos)?;
        self.pos = start + len;
        Some((start, len))
    }
}

/// One bit per page of a chunk, page 0 in the least significant bit of word 0.
///
/// Go: `pageBits`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PageBits([u64; WORDS]);

impl PageBits {
    #[cfg(test)]
    /// A bitmap made of raw words (bit `i % 64` of word `i / 64` is page `i`).
    pub(crate) const fn from_words(words: [u64; WORDS]) -> Self {
        PageBits(words)
    }

    /// The raw words.
    pub const fn words(&self) -> &[u64; WORDS] {
        &self.0
    }

    /// Whether bit `i` is set. Go: `(*pageBits).get`.
    #[inline]
    pub const fn get(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 != 0
    }

    /// The aligned 64-bit word that holds bit `i`. Go: `(*pageBits).block64`.
    #[inline]
    pub const fn block64(&self, i: usize) -> u64 {
        self.0[i / 64]
    }

    #[cfg(test)]
    /// Sets bit `i`. Go: `(*pageBits).set`.
    #[inline]
    pub(crate) fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Sets bits `[i, i + n)`. Go: `(*pageBits).setRange`.
    pub(crate) fn set_range(&mut self, i: usize, n: usize) {
        for_each_word_in_range(i, n, |k, mask| self.0[k] |= mask);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Sets every bit. Go: `(*pageBits).setAll`.
    pub(crate) fn set_all(&mut self) {
        self.0 = [!0; WORDS];
    }

    /// ORs `v` into the aligned word that holds bit `i`. Go: `(*pageBits).setBlock64`.
    #[inline]
    pub(crate) fn set_block64(&mut self, i: usize, v: u64) {
        self.0[i / 64] |= v;
    }

    /// Clears bit `i`. Go: `(*pageBits).clear`.
    #[inline]
    pub(crate) fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Clears bits `[i, i + n)`. Go: `(*pageBits).clearRange`.
    pub(crate) fn clear_range(&mut self, i: usize, n: usize) {
        for_each_word_in_range(i, n, |k, mask| self.0[k] &= !mask);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Clears every bit. Go: `(*pageBits).clearAll`.
    pub(crate) fn clear_all(&mut self) {
        self.0 = [0; WORDS];
    }

    /// Clears the bits of `v` in the aligned word that holds bit `i`.
    /// Go: `(*pageBits).clearBlock64`.
    #[inline]
    pub(crate) fn clear_block64(&mut self, i: usize, v: u64) {
        self.0[i / 64] &= !v;
    }

    /// The number of set bits in `[i, i + n)`. Go: `(*pageBits).popcntRange`.
    pub fn popcnt_range(&self, i: usize, n: usize) -> usize {
        let mut count = 0;
        for_each_word_in_range(i, n, |k, mask| {
            count += (self.0[k] & mask).count_ones() as usize;
        });
        count
    }

    #[cfg_attr(not(any(feature = "testutil", feature = "inspect")), allow(dead_code))]
    /// The number of set bits in the whole bitmap.
    pub fn count_ones(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Maximal runs of set bits, as `start..end` ranges, lowest first.
    fn set_ranges(&self) -> impl Iterator<Item = core::ops::Range<usize>> {
        Runs {
            words: self.0,
            flip: 0,
            pos: 0,
        }
        .map(|(start, len)| start..start + len)
    }
}

/// Prints the set bits as ranges, e.g. `PageBits{0..6, 64..96}`.
impl fmt::Debug for PageBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PageBits")?;
        f.debug_set().entries(self.set_ranges()).finish()
    }
}

/// The allocation bitmap of one chunk: a set bit is an allocated page, a clear bit a free
/// one. It dereferences to [`PageBits`] for the plain bit operations.
///
/// Go: `pallocBits`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PallocBits(PageBits);

impl Deref for PallocBits {
    type Target = PageBits;

    fn deref(&self) -> &PageBits {
        &self.0
    }
}

impl DerefMut for PallocBits {
    fn deref_mut(&mut self) -> &mut PageBits {
        &mut self.0
    }
}

/// Prints the allocated pages as ranges, e.g. `PallocBits{0..6, 64..96}`.
impl fmt::Debug for PallocBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PallocBits")?;
        f.debug_set().entries(self.0.set_ranges()).finish()
    }
}

impl PallocBits {
    #[cfg_attr(not(feature = "testutil"), allow(dead_code))]
    /// A bitmap made of raw words (bit `i % 64` of word `i / 64` is page `i`, 1 = allocated).
    pub const fn from_words(words: [u64; WORDS]) -> Self {
        PallocBits(PageBits(words))
    }

    /// The free pages at the start, the longest free run, and the free pages at the end.
    ///
    /// Go: `(*pallocBits).summarize`. The first pass finds runs that cross word boundaries
    /// (and the start and end); the second looks inside words only when a run there could
    /// still beat the best one found.
    pub fn summarize(&self) -> PallocSum {
        let words = &self.0.0;
        let mut start = None;
        let mut most = 0;
        let mut cur = 0; // free pages since the last allocated one
        for &x in words {
            if x == 0 {
                cur += 64;
                continue;
            }
            cur += x.trailing_zeros() as usize;
            if start.is_none() {
                start = Some(cur);
            }
            most = most.max(cur);
            cur = x.leading_zeros() as usize;
        }
        let Some(start) = start else {
            return FREE_CHUNK_SUM;
        };
        most = most.max(cur);
        let end = cur;
        // A free run strictly inside one word has allocated pages on both sides, so it is
        // at most 62 long and cannot beat this.
        if most >= 64 - 2 {
            return PallocSum::pack(start, most, end);
        }

        // `x & (x + 1) == 0` iff x is 0...01...1: no zeros left below its top run of 0s.
        let no_inner_zeros = |x: u64| x & x.wrapping_add(1) == 0;
        // Every word is non-zero here: a zero word would have made `most` at least 64.
        'words: for &w in words {
            // The trailing zeros belong to a run already counted above.
            let mut x = w >> (w.trailing_zeros() & 63);
            if no_inner_zeros(x) {
                continue;
            }
            // Shrink every run of 0s by `most`; any that survive are longer than `most`.
            let mut p = most; // zeros still to cut from each run
            let mut k = 1; // every run of 1s in x is at least this long
            loop {
                while p > 0 {
                    if p <= k {
                        x |= x >> (p & 63);
                        if no_inner_zeros(x) {
                            continue 'words;
                        }
                        break;
                    }
                    x |= x >> (k & 63);
                    if no_inner_zeros(x) {
                        continue 'words;
                    }
                    p -= k;
                    k *= 2;
                }
                // The lowest surviving run of 0s is longer than `most` by exactly its length.
                let ones = (!x).trailing_zeros();
                x >>= ones & 63;
                let zeros = x.trailing_zeros();
                x >>= zeros & 63;
                most += zeros as usize;
                if no_inner_zeros(x) {
                    continue 'words;
                }
                // The other runs must now also beat the new maximum.
                p = zeros as usize;
            }
        }
        PallocSum::pack(start, most, end)
    }

    /// Finds `npages` consecutive free pages and returns `(index, new_search_idx)`, or
    /// `None` if there is no such run.
    ///
    /// The scan starts at the word holding page `search_idx`; runs starting below that word
    /// are not seen. Callers keep every page below `search_idx` allocated, so this is the
    /// lowest fit. `new_search_idx` is the first free page at or after the start of that
    /// word, the next call's `search_idx`. `npages` must be at least 1 (panics otherwise).
    ///
    /// Go: `(*pallocBits).find`.
    pub fn find(&self, npages: usize, search_idx: usize) -> Option<(usize, usize)> {
        assert!(npages > 0, "find: npages must be at least 1");
        match npages {
            1 => self.find1(search_idx),
            2..=64 => self.find_small_n(npages, search_idx),
            _ => self.find_large_n(npages, search_idx),
        }
    }

    /// [`find`](Self::find) for one page: the first free page at or after the start of the
    /// word holding `search_idx`, as `(index, index)`.
    ///
    /// Go: `(*pallocBits).find1`.
    pub fn find1(&self, search_idx: usize) -> Option<(usize, usize)> {
        let (k, &x) = self
            .0
            .0
            .iter()
            .enumerate()
            .skip(search_idx / 64)
            .find(|&(_, &x)| x != !0)?;
        let i = k * 64 + (!x).trailing_zeros() as usize;
        Some((i, i))
    }

    /// [`find`](Self::find) for `npages <= 64`: such a run lies in one word or crosses one
    /// word boundary, so each word is checked for a run ending in its low bits (continuing
    /// the previous word's top run) and then for one inside it.
    ///
    /// Go: `(*pallocBits).findSmallN`.
    pub fn find_small_n(&self, npages: usize, search_idx: usize) -> Option<(usize, usize)> {
        debug_assert!((1..=64).contains(&npages), "find_small_n: npages {npages}");
        let mut end = 0; // free pages at the top of the previous word
        let mut new_search_idx = None;
        for (k, &x) in self.0.0.iter().enumerate().skip(search_idx / 64) {
            if x == !0 {
                end = 0;
                continue;
            }
            let base = k * 64;
            let first_free = *new_search_idx.get_or_insert(base + (!x).trailing_zeros() as usize);
            if end + x.trailing_zeros() as usize >= npages {
                return Some((base - end, first_free));
            }
            let j = find_bit_range64(!x, npages);
            if j < 64 {
                return Some((base + j, first_free));
            }
            end = x.leading_zeros() as usize;
        }
        None
    }

    /// [`find`](Self::find) for `npages > 64`: such a run must begin in the free top bits of
    /// some word, so only runs touching word boundaries are followed.
    ///
    /// Go: `(*pallocBits).findLargeN`.
    pub fn find_large_n(&self, npages: usize, search_idx: usize) -> Option<(usize, usize)> {
        let mut start = 0; // first page of the current run
        let mut size = 0; // pages in the current run
        let mut new_search_idx = None;
        for (k, &x) in self.0.0.iter().enumerate().skip(search_idx / 64) {
            if x == !0 {
                size = 0;
                continue;
            }
            let base = k * 64;
            let first_free = *new_search_idx.get_or_insert(base + (!x).trailing_zeros() as usize);
            if size != 0 {
                let low_free = x.trailing_zeros() as usize;
                if size + low_free >= npages {
                    return Some((start, first_free));
                }
                if low_free == 64 {
                    size += 64;
                    continue;
                }
            }
            // A new run can only begin at the free top of this word.
            size = x.leading_zeros() as usize;
            start = base + 64 - size;
        }
        match new_search_idx {
            Some(first_free) if size >= npages => Some((start, first_free)),
            _ => None,
        }
    }

    #[cfg_attr(not(any(test, feature = "testutil")), allow(dead_code))]
    /// Marks pages `[i, i + n)` allocated. Go: `(*pallocBits).allocRange`.
    pub fn alloc_range(&mut self, i: usize, n: usize) {
        self.0.set_range(i, n);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Marks every page allocated. Go: `(*pallocBits).allocAll`.
    pub fn alloc_all(&mut self) {
        self.0.set_all();
    }

    /// Marks page `i` free. Go: `(*pallocBits).free1`.
    pub fn free1(&mut self, i: usize) {
        self.0.clear(i);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Marks pages `[i, i + n)` free. Go: `(*pallocBits).free`.
    pub fn free(&mut self, i: usize, n: usize) {
        self.0.clear_range(i, n);
    }

    #[cfg_attr(
        not(any(test, feature = "testutil", feature = "check")),
        allow(dead_code)
    )]
    /// Marks every page free. Go: `(*pallocBits).freeAll`.
    pub fn free_all(&mut self) {
        self.0.clear_all();
    }

    /// The allocation bits of the 64-page aligned block holding page `i`.
    /// Go: `(*pallocBits).pages64`.
    pub fn pages64(&self, i: usize) -> u64 {
        self.0.block64(i)
    }

    /// Marks allocated the pages whose bits are set in `alloc`, within the 64-page aligned
    /// block holding page `i`. Go: `(*pallocBits).allocPages64`.
    pub fn alloc_pages64(&mut self, i: usize, alloc: u64) {
        self.0.set_block64(i, alloc);
    }

    #[cfg_attr(not(feature = "testutil"), allow(dead_code))]
    /// The number of free pages.
    ///
    /// Not in Go (a kernel extra).
    pub fn free_count(&self) -> usize {
        PALLOC_CHUNK_PAGES - self.0.count_ones()
    }

    /// The first maximal run of free pages that starts at or after page `from`, as
    /// `(start, len)`; a run containing `from` is clipped to start at `from`. `None` if no
    /// page at or after `from` is free (including `from >= 512`).
    ///
    /// Not in Go (a kernel extra).
    pub fn next_free_run(&self, from: usize) -> Option<(usize, usize)> {
        next_run(&self.0.0, !0, from)
    }

    /// The lowest page index `i` with `lo <= i`, `i + npages <= hi`, `i % align == 0` and
    /// pages `[i, i + npages)` all free.
    ///
    /// `align` must be a power of two up to 512, `npages` at least 1 and `hi` at most 512
    /// (panics otherwise); an empty or too small window gives `None`.
    ///
    /// Not in Go (a kernel extra). Go's `find` followed by rounding up can miss an aligned fit
    /// inside a free run; this is exact. For `npages <= 64` it shrinks the runs of free
    /// pages as [`find_bit_range64`] does but keeps every surviving start, across a pair of
    /// words so runs crossing a boundary count, and masks the starts with the aligned
    /// positions. Larger requests follow only the runs that touch word boundaries.
    pub fn find_aligned(&self, npages: usize, align: usize, lo: usize, hi: usize) -> Option<usize> {
        assert!(npages > 0, "find_aligned: npages must be at least 1");
        assert!(
            align.is_power_of_two() && align <= PALLOC_CHUNK_PAGES,
            "find_aligned: align {align} is not a power of two up to {PALLOC_CHUNK_PAGES}"
        );
        assert!(
            hi <= PALLOC_CHUNK_PAGES,
            "find_aligned: hi {hi} is past the chunk"
        );
        // The lowest aligned start; from here on pages below `lo` count as allocated.
        let lo = lo.checked_next_multiple_of(align)?;
        if lo >= hi || npages > hi - lo {
            return None;
        }
        if npages > 64 {
            self.find_aligned_large(npages, align, lo, hi)
        } else if align >= 64 {
            // Only word starts are candidates, and the run fits in the word's low bits.
            let need = low_mask(npages);
            (lo..=hi - npages)
                .step_by(align)
                .find(|&i| self.0.0[i / 64] & need == 0)
        } else {
            self.find_aligned_small(npages, align, lo, hi)
        }
    }

    /// Word `k` with every page outside `[lo, hi)` reading as allocated.
    #[inline]
    fn word_within(&self, k: usize, lo: usize, hi: usize) -> u64 {
        let base = k * 64;
        let below = low_mask(lo.saturating_sub(base));
        let above = !low_mask(hi.saturating_sub(base));
        self.0.0[k] | below | above
    }

    /// [`find_aligned`](Self::find_aligned) for `npages <= 64`, `align < 64`, an aligned
    /// `lo` and a non-empty window.
    fn find_aligned_small(
        &self,
        npages: usize,
        align: usize,
        lo: usize,
        hi: usize,
    ) -> Option<usize> {
        // Ones at every multiple of `align` (align divides 64).
        let aligned = !0 / low_mask(align);
        let last = (hi - 1) / 64;
        for k in lo / 64..=last {
            let x = self.word_within(k, lo, hi);
            if x == !0 {
                continue;
            }
            let starts = if x >> 63 != 0 || k == last {
                // No free run of this word reaches into the next one.
                shrink_runs64(!x, npages)
            } else {
                let next = self.word_within(k + 1, lo, hi);
                let free = u128::from(!x) | u128::from(!next) << 64;
                shrink_runs128(free, npages) as u64
            };
            let starts = starts & aligned;
            if starts != 0 {
                return Some(k * 64 + starts.trailing_zeros() as usize);
            }
        }
        None
    }

    /// [`find_aligned`](Self::find_aligned) for `npages > 64`, an aligned `lo` and a
    /// non-empty window. Runs inside one word are at most 62 long and cannot fit, so only
    /// runs that touch word boundaries are followed, one word per step.
    fn find_aligned_large(
        &self,
        npages: usize,
        align: usize,
        lo: usize,
        hi: usize,
    ) -> Option<usize> {
        // The lowest aligned start inside [start, end), if the request fits there.
        let fit = |start: usize, end: usize| {
            let i = start.next_multiple_of(align);
            (i + npages <= end).then_some(i)
        };
        let last = (hi - 1) / 64;
        let mut run = 0; // free pages ending at the current word boundary
        for k in lo / 64..=last {
            let base = k * 64;
            let x = self.word_within(k, lo, hi);
            if x == 0 {
                run += 64;
                continue;
            }
            if let Some(i) = fit(base - run, base + x.trailing_zeros() as usize) {
                return Some(i);
            }
            run = x.leading_zeros() as usize;
        }
        let end = (last + 1) * 64;
        fit(end - run, end)
    }
}

/// A chunk's allocation bitmap plus its scavenged bitmap.
///
/// Go: `pallocData`.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct PallocData {
    /// Which pages are allocated.
    pub(crate) alloc: PallocBits,
    /// Which free pages are known to be zero (a set bit implies the page is free).
    pub(crate) known_zero: PageBits,
}

impl PallocData {
    /// The bitmaps from their words: allocation bits, known-zero bits.
    #[inline]
    pub(crate) const fn from_parts(alloc: [u64; WORDS], known_zero: [u64; WORDS]) -> PallocData {
        PallocData {
            alloc: PallocBits(PageBits(alloc)),
            known_zero: PageBits(known_zero),
        }
    }

    #[cfg_attr(not(any(test, feature = "testutil")), allow(dead_code))]
    /// Marks pages `[i, i + n)` allocated and not zero. Go: `(*pallocData).allocRange`.
    pub(crate) fn alloc_range(&mut self, i: usize, n: usize) {
        self.alloc.alloc_range(i, n);
        self.known_zero.clear_range(i, n);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Marks every page allocated and not zero. Go: `(*pallocData).allocAll`.
    pub(crate) fn alloc_all(&mut self) {
        self.alloc.alloc_all();
        self.known_zero.clear_all();
    }

    /// Marks page `i` free; its scavenged bit is left alone (a freed page is dirty).
    pub(crate) fn free1(&mut self, i: usize) {
        self.alloc.free1(i);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Marks pages `[i, i + n)` free; the scavenged bits are left alone.
    pub(crate) fn free(&mut self, i: usize, n: usize) {
        self.alloc.free(i, n);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Marks every page free; the scavenged bits are left alone.
    pub(crate) fn free_all(&mut self) {
        self.alloc.free_all();
    }
}

#[cfg_attr(not(feature = "testutil"), allow(dead_code))]
/// Bits `[i, i + n)` of a chunk bitmap. Go: `BitRange` (in `export_test.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitRange {
    /// The first bit.
    pub i: usize,
    /// The number of bits.
    pub n: usize,
}

/// The summary computed by counting page by page: the oracle for
/// [`PallocBits::summarize`]. Go: `SummarizeSlow`.
#[cfg(any(test, feature = "testutil"))]
pub fn summarize_slow(b: &PallocBits) -> PallocSum {
    let n = PALLOC_CHUNK_PAGES;
    let start = (0..n).take_while(|&i| !b.get(i)).count();
    let end = (0..n).rev().take_while(|&i| !b.get(i)).count();
    let mut most = 0;
    let mut run = 0;
    for i in 0..n {
        run = if b.get(i) { 0 } else { run + 1 };
        most = most.max(run);
    }
    PallocSum::pack(start, most, end)
}

/// A bitmap with the pages of `ranges` allocated and all others free (empty ranges are
/// skipped). Go: `makePallocBits` (in `mpallocbits_test.go`).
#[cfg(any(test, feature = "testutil"))]
pub fn make_palloc_bits(ranges: &[BitRange]) -> PallocBits {
    let mut b = PallocBits::default();
    for r in ranges {
        b.alloc_range(r.i, r.n);
    }
    b
}

/// Where two bitmaps differ, for assertion messages: `is_empty()` when they are equal,
/// the differing ranges from `ranges()`, and a `Display` in the style of Go's
/// `checkPallocBits`. Accepts `&PallocBits` too, through `Deref`.
///
/// Go: `DiffPallocBits`.
#[cfg(test)]
pub fn diff_palloc_bits(got: &PageBits, want: &PageBits) -> PallocBitsDiff {
    PallocBitsDiff {
        got: *got,
        want: *want,
    }
}

/// The difference between two bitmaps; see [`diff_palloc_bits`].
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct PallocBitsDiff {
    got: PageBits,
    want: PageBits,
}

#[cfg(test)]
impl PallocBitsDiff {
    /// Whether the two bitmaps are equal.
    pub fn is_empty(&self) -> bool {
        self.got == self.want
    }

    /// The number of maximal ranges where the bitmaps differ.
    pub fn len(&self) -> usize {
        self.ranges().count()
    }

    /// The maximal ranges where the bitmaps differ, lowest first.
    pub fn ranges(&self) -> impl Iterator<Item = BitRange> + use<> {
        Runs {
            words: core::array::from_fn(|k| self.got.0[k] ^ self.want.0[k]),
            flip: 0,
            pos: 0,
        }
        .map(|(i, n)| BitRange { i, n })
    }
}

/// Prints `N range(s) different` and, for each range, its index and both sides' bits.
#[cfg(test)]
impl fmt::Display for PallocBitsDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} range(s) different", self.len())?;
        for r in self.ranges() {
            writeln!(f, "\t@ bit index {}", r.i)?;
            writeln!(f, "\t|  got: {}", stringify_palloc_bits(&self.got, r))?;
            writeln!(f, "\t| want: {}", stringify_palloc_bits(&self.want, r))?;
        }
        Ok(())
    }
}

/// The bits of range `r` of `b` as `0` and `1` characters, lowest first.
/// Go: `StringifyPallocBits`.
#[cfg(test)]
pub fn stringify_palloc_bits(b: &PageBits, r: BitRange) -> BitString {
    BitString { bits: *b, range: r }
}

/// A range of a bitmap that displays as `0`/`1` characters; see [`stringify_palloc_bits`].
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct BitString {
    bits: PageBits,
    range: BitRange,
}

#[cfg(test)]
impl fmt::Display for BitString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for j in self.range.i..self.range.i + self.range.n {
            f.write_str(if self.bits.get(j) { "1" } else { "0" })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    const N: usize = PALLOC_CHUNK_PAGES;

    const fn br(i: usize, n: usize) -> BitRange {
        BitRange { i, n }
    }

    /// The crate's test generator ([`crate::testutil::Rng`]), with the index-sized
    /// conveniences these tests use; deterministic, so failures reproduce.
    struct Rng(crate::testutil::Rng);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(crate::testutil::Rng(
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            ))
        }

        fn next_u64(&mut self) -> u64 {
            self.0.next()
        }

        /// Uniform in `0..n`.
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n as u64) as usize
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi - lo + 1)
        }
    }

    /// Bitmaps of many shapes: uniform, sparse, dense, runs of several scales, word
    /// patterns, and the extremes.
    fn random_bits(rng: &mut Rng, kind: usize) -> PallocBits {
        let mut w = [0u64; WORDS];
        match kind % 8 {
            0 => w.iter_mut().for_each(|x| *x = rng.next_u64()),
            // About 1 page in 8 allocated.
            1 => w
                .iter_mut()
                .for_each(|x| *x = rng.next_u64() & rng.next_u64() & rng.next_u64()),
            // About 1 page in 8 free.
            2 => w
                .iter_mut()
                .for_each(|x| *x = rng.next_u64() | rng.next_u64() | rng.next_u64()),
            3..=5 => {
                let scale = [6, 70, 260][kind % 8 - 3];
                let mut b = PallocBits::default();
                let mut pos = 0;
                let mut allocated = rng.below(2) == 0;
                while pos < N {
                    let len = rng.range(1, scale).min(N - pos);
                    if allocated {
                        b.alloc_range(pos, len);
                    }
                    pos += len;
                    allocated = !allocated;
                }
                return b;
            }
            6 => {
                let patterns = [
                    0,
                    !0,
                    0xaa,
                    0xaaaa_aaaa_aaaa_aaaa,
                    0x8000_0000_aaaa_aaaa,
                    0xaaaa_aaaa_0000_0001,
                    0x8000_0000_0000_0001,
                    0x4000_4000_4000_4000,
                    0x1000_4040_44cc_aaff,
                ];
                w.iter_mut()
                    .for_each(|x| *x = patterns[rng.below(patterns.len())]);
            }
            _ => {
                // All free or all allocated, with a few pages flipped.
                let base = if rng.below(2) == 0 { 0 } else { !0 };
                w.iter_mut().for_each(|x| *x = base);
                let mut b = PallocBits::from_words(w);
                for _ in 0..rng.below(4) {
                    let i = rng.below(N);
                    if base == 0 {
                        b.set(i);
                    } else {
                        b.clear(i);
                    }
                }
                return b;
            }
        }
        PallocBits::from_words(w)
    }

    /// `runs[i]` = free pages starting at page `i`, counted page by page; `runs[N] == 0`.
    fn free_run_lens(b: &PallocBits) -> Vec<usize> {
        let mut runs = vec![0; N + 1];
        for i in (0..N).rev() {
            runs[i] = if b.get(i) { 0 } else { runs[i + 1] + 1 };
        }
        runs
    }

    #[track_caller]
    fn check_palloc_bits(name: &str, got: &PageBits, want: &PageBits) {
        let d = diff_palloc_bits(got, want);
        assert!(d.is_empty(), "{name}: {d}");
    }

    fn invert(b: &PallocBits) -> PallocBits {
        PallocBits::from_words(b.words().map(|w| !w))
    }

    fn words_with(set: &[(usize, u64)]) -> PallocBits {
        let mut w = [0; WORDS];
        for &(k, v) in set {
            w[k] = v;
        }
        PallocBits::from_words(w)
    }

    // Go: TestPallocBitsAllocRange.
    #[test]
    fn palloc_bits_alloc_range() {
        let ones = !0u64;
        let cases = [
            ("OneLow", 0, 1, words_with(&[(0, 1)])),
            ("OneHigh", N - 1, 1, words_with(&[(WORDS - 1, 1 << 63)])),
            ("Inner", 129, 5, words_with(&[(2, 0x3e)])),
            ("Aligned", 128, 128, words_with(&[(2, ones), (3, ones)])),
            (
                "Begin",
                0,
                321,
                words_with(&[
                    (0, ones),
                    (1, ones),
                    (2, ones),
                    (3, ones),
                    (4, ones),
                    (5, 1),
                ]),
            ),
            (
                "End",
                N - (64 * 3 + 1),
                64 * 3 + 1,
                words_with(&[
                    (WORDS - 1, ones),
                    (WORDS - 2, ones),
                    (WORDS - 3, ones),
                    (WORDS - 4, 1 << 63),
                ]),
            ),
            ("All", 0, N, PallocBits::from_words([ones; WORDS])),
        ];
        for (name, i, n, want) in cases {
            check_palloc_bits(name, &make_palloc_bits(&[br(i, n)]), &want);
        }
    }

    /// Go's "Scattered" popcount case: 30 short allocated ranges in the first 130 pages.
    #[rustfmt::skip]
    const SCATTERED: [(usize, usize); 30] = [
        (1, 3), (5, 1), (7, 1), (10, 2), (13, 1), (15, 4),
        (21, 1), (23, 1), (26, 2), (30, 5), (36, 2), (40, 3),
        (44, 6), (51, 1), (53, 2), (58, 3), (63, 1), (67, 2),
        (71, 10), (84, 1), (89, 7), (99, 2), (103, 1), (107, 2),
        (111, 1), (113, 1), (115, 1), (118, 1), (120, 2), (125, 5),
    ];

    // Go: TestMallocBitsPopcntRange.
    #[test]
    fn malloc_bits_popcnt_range() {
        /// Bits to set, then `(i, n, want)` popcount checks.
        struct Case(&'static str, Vec<BitRange>, Vec<(usize, usize, usize)>);
        let cases = [
            Case(
                "None",
                vec![],
                vec![
                    (0, 1, 0),
                    (5, 3, 0),
                    (2, 11, 0),
                    (N / 4 + 1, N / 2, 0),
                    (0, N, 0),
                ],
            ),
            Case(
                "All",
                vec![br(0, N)],
                vec![
                    (0, 1, 1),
                    (5, 3, 3),
                    (2, 11, 11),
                    (N / 4 + 1, N / 2, N / 2),
                    (0, N, N),
                ],
            ),
            Case(
                "Half",
                vec![br(N / 2, N / 2)],
                vec![
                    (0, 1, 0),
                    (5, 3, 0),
                    (2, 11, 0),
                    (N / 2 - 1, 1, 0),
                    (N / 2, 1, 1),
                    (N / 2 + 10, 1, 1),
                    (N / 2 - 1, 2, 1),
                    (N / 4, N / 4, 0),
                    (N / 4, N / 4 + 1, 1),
                    (N / 4 + 1, N / 2, N / 4 + 1),
                    (0, N, N / 2),
                ],
            ),
            Case(
                "OddBound",
                vec![br(0, 111)],
                vec![
                    (0, 1, 1),
                    (5, 3, 3),
                    (2, 11, 11),
                    (110, 2, 1),
                    (99, 50, 12),
                    (110, 1, 1),
                    (111, 1, 0),
                    (99, 1, 1),
                    (120, 1, 0),
                    (N / 2, N / 2, 0),
                    (0, N, 111),
                ],
            ),
            Case(
                "Scattered",
                SCATTERED.iter().map(|&(i, n)| br(i, n)).collect(),
                vec![
                    (0, 11, 6),
                    (0, 64, 39),
                    (13, 64, 40),
                    (64, 64, 34),
                    (0, 128, 73),
                    (1, 128, 74),
                    (0, N, 75),
                ],
            ),
        ];
        for Case(name, init, tests) in cases {
            let b = make_palloc_bits(&init);
            for (i, n, want) in tests {
                assert_eq!(
                    b.popcnt_range(i, n),
                    want,
                    "{name}: bad popcnt (i={i}, n={n})"
                );
            }
        }
    }

    // Go: TestPallocBitsSummarizeRandom (1000 uniformly random bitmaps).
    #[test]
    fn palloc_bits_summarize_random() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let b = PallocBits::from_words(core::array::from_fn(|_| rng.next_u64()));
            assert_eq!(b.summarize(), summarize_slow(&b), "{b:?}");
        }
    }

    /// Uniform bitmaps rarely have long runs; these have runs at every scale.
    #[test]
    fn palloc_bits_summarize_random_shapes() {
        let mut rng = Rng::new(2);
        for iter in 0..4000 {
            let b = random_bits(&mut rng, iter);
            assert_eq!(b.summarize(), summarize_slow(&b), "{b:?}");
        }
    }

    // Go: BenchmarkPallocBitsSummarize checks each pattern against SummarizeSlow first.
    #[test]
    fn palloc_bits_summarize_benchmark_patterns() {
        for p in [
            0u64,
            !0,
            0xaa,
            0xaaaa_aaaa_aaaa_aaaa,
            0x8000_0000_aaaa_aaaa,
            0xaaaa_aaaa_0000_0001,
            0xbbbb_bbbb_bbbb_bbbb,
            0x8000_0000_bbbb_bbbb,
            0xbbbb_bbbb_0000_0001,
            0xcccc_cccc_cccc_cccc,
            0x4444_4444_4444_4444,
            0x4040_4040_4040_4040,
            0x4000_4000_4000_4000,
            0x1000_4040_44cc_aaff,
        ] {
            let b = PallocBits::from_words([p; WORDS]);
            assert_eq!(b.summarize(), summarize_slow(&b), "pattern {p:#x}");
        }
    }

    // Go: TestPallocBitsSummarize.
    #[test]
    fn palloc_bits_summarize() {
        let cases: [(&str, Vec<BitRange>, PallocSum); 9] = [
            ("NoneFree", vec![], PallocSum::pack(0, 0, 0)),
            ("OnlyStart", vec![br(0, 10)], PallocSum::pack(10, 10, 0)),
            ("OnlyEnd", vec![br(N - 40, 40)], PallocSum::pack(0, 40, 40)),
            (
                "StartAndEnd",
                vec![br(0, 11), br(N - 23, 23)],
                PallocSum::pack(11, 23, 23),
            ),
            (
                "StartMaxEnd",
                vec![br(0, 4), br(50, 100), br(N - 4, 4)],
                PallocSum::pack(4, 100, 4),
            ),
            (
                "OnlyMax",
                vec![br(1, 20), br(35, 241), br(N - 50, 30)],
                PallocSum::pack(0, 241, 0),
            ),
            (
                "MultiMax",
                vec![br(35, 2), br(40, 5), br(100, 5)],
                PallocSum::pack(0, 5, 0),
            ),
            ("One", vec![br(2, 1)], PallocSum::pack(0, 1, 0)),
            ("AllFree", vec![br(0, N)], FREE_CHUNK_SUM),
        ];
        for (name, free, want) in cases {
            // The ranges are the free pages, so build them as ones and invert.
            let b = invert(&make_palloc_bits(&free));
            assert_eq!(b.summarize(), want, "{name}");
            assert_eq!(summarize_slow(&b), want, "{name} (slow)");
        }
    }

    // Go: TestPallocBitsAlloc.
    #[test]
    fn palloc_bits_alloc() {
        struct Case {
            name: &'static str,
            before: Vec<BitRange>,
            after: Vec<BitRange>,
            npages: usize,
            hits: Vec<Option<usize>>,
        }
        let case = |name, before, npages, hits, after| Case {
            name,
            before,
            after,
            npages,
            hits,
        };
        let cases = [
            case(
                "AllFree1",
                vec![],
                1,
                vec![Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)],
                vec![br(0, 6)],
            ),
            case(
                "AllFree2",
                vec![],
                2,
                vec![Some(0), Some(2), Some(4), Some(6), Some(8), Some(10)],
                vec![br(0, 12)],
            ),
            case(
                "AllFree5",
                vec![],
                5,
                vec![Some(0), Some(5), Some(10), Some(15), Some(20)],
                vec![br(0, 25)],
            ),
            case(
                "AllFree64",
                vec![],
                64,
                vec![Some(0), Some(64), Some(128)],
                vec![br(0, 192)],
            ),
            case(
                "AllFree65",
                vec![],
                65,
                vec![Some(0), Some(65), Some(130)],
                vec![br(0, 195)],
            ),
            case(
                "SomeFree64",
                vec![br(0, 32), br(64, 32), br(100, N - 100)],
                64,
                vec![None],
                vec![br(0, 32), br(64, 32), br(100, N - 100)],
            ),
            case(
                "NoneFree1",
                vec![br(0, N)],
                1,
                vec![None, None],
                vec![br(0, N)],
            ),
            case(
                "NoneFree2",
                vec![br(0, N)],
                2,
                vec![None, None],
                vec![br(0, N)],
            ),
            case(
                "NoneFree5",
                vec![br(0, N)],
                5,
                vec![None, None],
                vec![br(0, N)],
            ),
            case(
                "NoneFree65",
                vec![br(0, N)],
                65,
                vec![None, None],
                vec![br(0, N)],
            ),
            case(
                "ExactFit1",
                vec![br(0, N / 2 - 3), br(N / 2 - 2, N / 2 + 2)],
                1,
                vec![Some(N / 2 - 3), None],
                vec![br(0, N)],
            ),
            case(
                "ExactFit2",
                vec![br(0, N / 2 - 3), br(N / 2 - 1, N / 2 + 1)],
                2,
                vec![Some(N / 2 - 3), None],
                vec![br(0, N)],
            ),
            case(
                "ExactFit5",
                vec![br(0, N / 2 - 3), br(N / 2 + 2, N / 2 - 2)],
                5,
                vec![Some(N / 2 - 3), None],
                vec![br(0, N)],
            ),
            case(
                "ExactFit65",
                vec![br(0, N / 2 - 31), br(N / 2 + 34, N / 2 - 34)],
                65,
                vec![Some(N / 2 - 31), None],
                vec![br(0, N)],
            ),
            case(
                "SomeFree161",
                vec![br(0, 185), br(331, 1)],
                161,
                vec![Some(332)],
                vec![br(0, 185), br(331, 162)],
            ),
        ];
        for c in cases {
            let mut b = make_palloc_bits(&c.before);
            for (iter, &want) in c.hits.iter().enumerate() {
                let got = b.find(c.npages, 0).map(|(i, _)| i);
                assert_eq!(
                    got,
                    want,
                    "{}: find #{} picked the wrong index",
                    c.name,
                    iter + 1
                );
                if let Some(i) = got {
                    b.alloc_range(i, c.npages);
                }
            }
            check_palloc_bits(c.name, &b, &make_palloc_bits(&c.after));
        }
    }

    // Go: TestPallocBitsFree.
    #[test]
    fn palloc_bits_free() {
        /// Name, free ranges before, free ranges after, frees, and pages per free.
        struct Case(
            &'static str,
            Vec<BitRange>,
            Vec<BitRange>,
            Vec<usize>,
            usize,
        );
        let cases = [
            Case(
                "SomeFree",
                vec![br(0, 32), br(64, 32), br(100, 1)],
                vec![br(0, 33), br(64, 32), br(100, 1)],
                vec![32],
                1,
            ),
            Case(
                "NoneFree1",
                vec![],
                vec![br(0, 6)],
                vec![0, 1, 2, 3, 4, 5],
                1,
            ),
            Case(
                "NoneFree2",
                vec![],
                vec![br(0, 12)],
                vec![0, 2, 4, 6, 8, 10],
                2,
            ),
            Case(
                "NoneFree5",
                vec![],
                vec![br(0, 25)],
                vec![0, 5, 10, 15, 20],
                5,
            ),
            Case("NoneFree64", vec![], vec![br(0, 192)], vec![0, 64, 128], 64),
            Case("NoneFree65", vec![], vec![br(0, 195)], vec![0, 65, 130], 65),
        ];
        for Case(name, before_inv, after_inv, frees, npages) in cases {
            let mut b = invert(&make_palloc_bits(&before_inv));
            for i in frees {
                b.free(i, npages);
            }
            check_palloc_bits(name, &b, &invert(&make_palloc_bits(&after_inv)));
        }
    }

    fn find_bit_range64_slow(c: u64, n: usize) -> Option<usize> {
        (0..=64usize.saturating_sub(n))
            .find(|&i| i + n <= 64 && (i..i + n).all(|b| (c >> b) & 1 == 1))
    }

    // Go: TestFindBitRange64.
    #[test]
    fn find_bit_range64_cases() {
        #[track_caller]
        fn check(x: u64, n: usize, want: Option<usize>) {
            let got = find_bit_range64(x, n);
            match want {
                None => assert!(got >= 64, "({x:016x}, {n}): got {got}, want failure"),
                Some(w) => assert_eq!(got, w, "({x:016x}, {n})"),
            }
        }
        for n in 1..=64 {
            check(!0, n, Some(0));
            check(0, n, None);
        }
        check(0x8000_0000_0000_0000, 1, Some(63));
        check(0xc000_0100_0101_0000, 2, Some(62));
        check(0xc000_0100_0103_0000, 2, Some(16));
        check(0xe000_0300_0103_0000, 3, Some(61));
        check(0xe000_0300_0107_0000, 3, Some(16));
        check(0xffff_03ff_0107_0000, 16, Some(48));
        check(0xffff_03ff_0107_ffff, 16, Some(0));
        check(0x0fff_03ff_0107_9fff, 16, None);
        // Outside Go's domain: n == 0 fits at 0, n > 64 never fits.
        check(0, 0, Some(0));
        check(!0, 65, None);
        check(!0, 128, None);
    }

    #[test]
    fn find_bit_range64_matches_naive() {
        let mut rng = Rng::new(3);
        for iter in 0..3000 {
            let c = match iter % 3 {
                0 => rng.next_u64(),
                1 => rng.next_u64() | rng.next_u64() | rng.next_u64(),
                _ => !(1u64 << rng.below(64)) & !(1u64 << rng.below(64)),
            };
            for n in 1..=64 {
                let got = find_bit_range64(c, n);
                match find_bit_range64_slow(c, n) {
                    Some(want) => assert_eq!(got, want, "({c:016x}, {n})"),
                    None => assert!(got >= 64, "({c:016x}, {n}): got {got}"),
                }
            }
        }
    }

    fn fill_aligned_slow(x: u64, m: usize) -> u64 {
        let mut out = 0;
        for g in (0..64).step_by(m) {
            let group = low_mask(m) << g;
            if x & group != 0 {
                out |= group;
            }
        }
        out
    }

    // Go: TestFillAligned.
    #[test]
    fn fill_aligned_cases() {
        assert_eq!(fill_aligned(0x0100a3, 8), 0xff00ff);
        let mut rng = Rng::new(4);
        for shift in 0..7 {
            let m = 1usize << shift;
            let fixed = [
                0x0000_0000_0000_0000,
                0x0000_0000_ffff_ffff,
                0xffff_ffff_0000_0000,
                0x8000_0000_0000_0001,
                0xf000_0000_0000_000f,
                0xf000_0001_0050_000f,
                0xffff_ffff_ffff_ffff,
                0x0000_0000_0000_0001,
                0x0000_0000_0000_0002,
                0x0000_0000_0000_0008,
                1u64 << (m - 1),
                // Go writes 1 << m, which is 0 for m == 64.
                if m < 64 { 1u64 << m } else { 0 },
                0xb02b_9eff_cf13_7016,
                0x3975_a076_a9fb_ff18,
                0x0f8c_88ec_3b81_506e,
                0x60f1_4d80_ef2f_a0e6,
            ];
            for x in fixed {
                assert_eq!(
                    fill_aligned(x, m),
                    fill_aligned_slow(x, m),
                    "({x:016x}, {m})"
                );
            }
            for _ in 0..1000 {
                let x = rng.next_u64();
                assert_eq!(
                    fill_aligned(x, m),
                    fill_aligned_slow(x, m),
                    "({x:016x}, {m})"
                );
                if m > 1 {
                    // Each group either empty or randomly filled.
                    let mut x = 0;
                    for g in (0..64).step_by(m) {
                        if rng.below(2) == 0 {
                            x |= (rng.next_u64() & low_mask(m)) << g;
                        }
                    }
                    assert_eq!(
                        fill_aligned(x, m),
                        fill_aligned_slow(x, m),
                        "({x:016x}, {m})"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn fill_aligned_rejects_bad_m() {
        let _ = fill_aligned(1, 3);
    }

    #[test]
    fn low_mask_values() {
        assert_eq!(low_mask(0), 0);
        assert_eq!(low_mask(1), 1);
        assert_eq!(low_mask(63), u64::MAX >> 1);
        assert_eq!(low_mask(64), u64::MAX);
        assert_eq!(low_mask(1000), u64::MAX);
    }

    /// Go relies on `1 << 64 == 0` when a range is exactly one aligned word (n == 64) and
    /// when a range ends on bit 63 of a word (j % 64 == 63).
    #[test]
    fn shift_by_64_traps() {
        for k in 0..WORDS {
            let mut b = PageBits::default();
            b.set_range(k * 64, 64);
            let mut want = [0; WORDS];
            want[k] = !0;
            assert_eq!(b.words(), &want, "set_range({}, 64)", k * 64);
            assert_eq!(b.popcnt_range(k * 64, 64), 64);
            b.clear_range(k * 64, 64);
            assert_eq!(b, PageBits::default(), "clear_range({}, 64)", k * 64);

            // Ranges ending on bit 63 of word k: within one word and across several.
            let end = (k + 1) * 64;
            for i in [k * 64 + 1, k * 64 + 63, k * 64 / 2, 0] {
                let mut b = PageBits::default();
                b.set_range(i, end - i);
                for p in 0..N {
                    assert_eq!(
                        b.get(p),
                        (i..end).contains(&p),
                        "set_range({i}, {})",
                        end - i
                    );
                }
                assert_eq!(b.popcnt_range(i, end - i), end - i);
                let mut full = PageBits::from_words([!0; WORDS]);
                full.clear_range(i, end - i);
                assert_eq!(full.count_ones(), N - (end - i));
            }
        }
    }

    /// Every `(i, n)` inside a chunk, against a page-by-page model.
    #[test]
    fn ranges_exhaustive_against_model() {
        let mut rng = Rng::new(5);
        let base = PageBits::from_words(core::array::from_fn(|_| rng.next_u64()));
        let mut prefix = vec![0; N + 1]; // set bits in [0, p)
        for p in 0..N {
            prefix[p + 1] = prefix[p] + usize::from(base.get(p));
        }
        for i in 0..=N {
            for n in 0..=N - i {
                assert_eq!(
                    base.popcnt_range(i, n),
                    prefix[i + n] - prefix[i],
                    "popcnt({i}, {n})"
                );
                let mut set = base;
                set.set_range(i, n);
                let mut clear = base;
                clear.clear_range(i, n);
                // The range's bits, set page by page.
                let mut inside = [0u64; WORDS];
                for p in i..i + n {
                    inside[p / 64] |= 1 << (p % 64);
                }
                let (b, r) = (base.words(), &inside);
                let want_set: [u64; WORDS] = core::array::from_fn(|k| b[k] | r[k]);
                let want_clear: [u64; WORDS] = core::array::from_fn(|k| b[k] & !r[k]);
                assert_eq!(set.words(), &want_set, "set_range({i}, {n})");
                assert_eq!(clear.words(), &want_clear, "clear_range({i}, {n})");
            }
        }
    }

    /// `n == 0` is a no-op everywhere, including at the chunk's end.
    #[test]
    fn zero_length_ranges_are_noops() {
        let mut rng = Rng::new(6);
        let orig = PallocBits::from_words(core::array::from_fn(|_| rng.next_u64()));
        for i in 0..=N {
            let mut b = orig;
            b.alloc_range(i, 0);
            b.free(i, 0);
            b.set_range(i, 0);
            b.clear_range(i, 0);
            assert_eq!(b, orig, "i = {i}");
            assert_eq!(b.popcnt_range(i, 0), 0);
            let mut d = PallocData {
                alloc: orig,
                known_zero: *invert(&orig),
            };
            let before = d;
            d.alloc_range(i, 0);
            d.free(i, 0);
            assert_eq!(d, before);
        }
    }

    #[test]
    fn word_and_bit_accessors() {
        let mut b = PallocBits::default();
        assert_eq!(b.free_count(), N);
        b.alloc_pages64(70, 0x8000_0000_0000_0003);
        assert_eq!(b.pages64(64), 0x8000_0000_0000_0003);
        assert_eq!(b.pages64(127), 0x8000_0000_0000_0003);
        assert_eq!(b.pages64(0), 0);
        assert!(b.get(64) && b.get(65) && b.get(127) && !b.get(66));
        assert_eq!(b.count_ones(), 3);
        assert_eq!(b.free_count(), N - 3);
        b.clear_block64(100, 0x1);
        assert_eq!(b.block64(100), 0x8000_0000_0000_0002);
        b.set_block64(511, 0xf0);
        assert_eq!(b.words()[7], 0xf0);
        b.set(0);
        b.free1(65);
        assert_eq!(b.words()[0], 1);
        assert_eq!(b.words()[1], 0x8000_0000_0000_0000);
        b.clear(0);
        assert_eq!(b.words()[0], 0);
        b.alloc_all();
        assert_eq!(b.free_count(), 0);
        assert_eq!(b.words(), &[!0; WORDS]);
        b.free_all();
        assert_eq!(b, PallocBits::default());
        let mut p = PageBits::default();
        p.set_all();
        assert_eq!(p.count_ones(), N);
        p.clear_all();
        assert_eq!(p.count_ones(), 0);
        let w: [u64; WORDS] = core::array::from_fn(|k| k as u64 * 0x0101);
        assert_eq!(PallocBits::from_words(w).words(), &w);
        assert_eq!(PageBits::from_words(w).words(), &w);
    }

    #[test]
    fn palloc_data_alloc_clears_scavenged_and_free_keeps_it() {
        let mut d = PallocData::default();
        d.known_zero.set_range(0, N);
        d.alloc_range(10, 100);
        assert_eq!(d.alloc.popcnt_range(0, N), 100);
        assert_eq!(d.known_zero.popcnt_range(10, 100), 0);
        assert_eq!(d.known_zero.count_ones(), N - 100);
        d.free(10, 50);
        d.free1(60);
        assert_eq!(d.alloc.count_ones(), 49);
        assert_eq!(
            d.known_zero.count_ones(),
            N - 100,
            "free must not set scavenged bits"
        );
        d.alloc_all();
        assert_eq!(d.alloc.count_ones(), N);
        assert_eq!(d.known_zero.count_ones(), 0);
        d.known_zero.set(3); // deliberately inconsistent, to see that free_all leaves it
        d.free_all();
        assert_eq!(d.alloc.count_ones(), 0);
        assert_eq!(d.known_zero.count_ones(), 1);
    }

    /// `find` against a page-by-page scan, for every `npages` and random search indices.
    #[test]
    fn find_matches_naive_scan() {
        let mut rng = Rng::new(7);
        for iter in 0..160 {
            let b = random_bits(&mut rng, iter);
            let runs = free_run_lens(&b);
            for npages in 1..=N + 1 {
                for search_idx in [0, rng.below(N + 64)] {
                    // The scan starts at the word holding search_idx.
                    let from = (search_idx / 64 * 64).min(N);
                    let first_free = (from..N).find(|&i| runs[i] > 0);
                    let want = (from..N)
                        .find(|&i| runs[i] >= npages)
                        .map(|i| (i, first_free.unwrap()));
                    assert_eq!(
                        b.find(npages, search_idx),
                        want,
                        "find({npages}, {search_idx}) in {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "npages must be at least 1")]
    fn find_rejects_zero_pages() {
        let _ = PallocBits::default().find(0, 0);
    }

    fn find_aligned_slow(
        runs: &[usize],
        npages: usize,
        align: usize,
        lo: usize,
        hi: usize,
    ) -> Option<usize> {
        (lo.next_multiple_of(align)..hi)
            .step_by(align)
            .find(|&i| i + npages <= hi && runs[i] >= npages)
    }

    const ALIGNS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

    /// `find_aligned` against a page-by-page scan: random shapes, every alignment, mostly
    /// small requests, random windows.
    #[test]
    fn find_aligned_matches_naive_scan() {
        let mut rng = Rng::new(8);
        for iter in 0..600 {
            let b = random_bits(&mut rng, iter);
            let runs = free_run_lens(&b);
            for align in ALIGNS {
                for _ in 0..12 {
                    let npages = match rng.below(5) {
                        0 => rng.range(1, 8),
                        1 => rng.range(1, 64),
                        2 => rng.range(60, 70),
                        3 => rng.range(65, 200),
                        _ => rng.range(1, N),
                    };
                    let (lo, hi) = match rng.below(3) {
                        0 => (0, N),
                        1 => (rng.below(N + 1), N),
                        _ => (rng.below(N + 1), rng.below(N + 1)),
                    };
                    assert_eq!(
                        b.find_aligned(npages, align, lo, hi),
                        find_aligned_slow(&runs, npages, align, lo, hi),
                        "find_aligned({npages}, {align}, {lo}, {hi}) in {b:?}"
                    );
                }
            }
        }
    }

    /// Every `npages` and alignment over the whole chunk, and over a window that cuts runs.
    #[test]
    fn find_aligned_every_size_and_alignment() {
        let mut rng = Rng::new(9);
        for iter in 0..40 {
            let b = random_bits(&mut rng, iter);
            let runs = free_run_lens(&b);
            let (lo, hi) = (rng.below(N / 2), N / 2 + rng.below(N / 2 + 1));
            for align in ALIGNS {
                for npages in 1..=N {
                    for (lo, hi) in [(0, N), (lo, hi)] {
                        assert_eq!(
                            b.find_aligned(npages, align, lo, hi),
                            find_aligned_slow(&runs, npages, align, lo, hi),
                            "find_aligned({npages}, {align}, {lo}, {hi}) in {b:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn find_aligned_edges() {
        let free = PallocBits::default();
        assert_eq!(free.find_aligned(N, 512, 0, N), Some(0));
        assert_eq!(free.find_aligned(1, 512, 1, N), None);
        assert_eq!(free.find_aligned(N, 1, 1, N), None);
        assert_eq!(free.find_aligned(64, 64, 1, N), Some(64));
        assert_eq!(free.find_aligned(1, 1, 511, N), Some(511));
        assert_eq!(free.find_aligned(1, 1, N, N), None);
        assert_eq!(free.find_aligned(1, 1, 300, 200), None);
        assert_eq!(free.find_aligned(1, 1, usize::MAX, N), None);
        assert_eq!(free.find_aligned(N + 1, 1, 0, N), None);
        // A run straddling a word boundary, found only through the two-word window.
        let b = make_palloc_bits(&[br(0, 60), br(70, N - 70)]);
        assert_eq!(b.find_aligned(10, 2, 0, N), Some(60));
        assert_eq!(b.find_aligned(8, 4, 0, N), Some(60));
        assert_eq!(b.find_aligned(8, 8, 0, N), None);
        assert_eq!(b.find_aligned(6, 8, 0, N), Some(64));
        assert_eq!(b.find_aligned(10, 2, 0, 69), None);
        // A large run that only fits once aligned inside it.
        let b = make_palloc_bits(&[br(0, 3), br(300, N - 300)]);
        assert_eq!(b.find_aligned(256, 256, 0, N), None);
        assert_eq!(b.find_aligned(200, 64, 0, N), Some(64));
        assert_eq!(b.find_aligned(236, 64, 0, N), Some(64));
        assert_eq!(b.find_aligned(237, 64, 0, N), None);
        assert_eq!(b.find_aligned(236, 64, 0, 300), Some(64));
        assert_eq!(b.find_aligned(236, 64, 0, 299), None);
        // A run reaching the end of the chunk.
        let b = make_palloc_bits(&[br(0, 100)]);
        assert_eq!(b.find_aligned(N - 128, 128, 0, N), Some(128));
        assert_eq!(b.find_aligned(N - 127, 128, 0, N), None);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn find_aligned_rejects_bad_alignment() {
        let _ = PallocBits::default().find_aligned(1, 3, 0, N);
    }

    #[test]
    #[should_panic(expected = "past the chunk")]
    fn find_aligned_rejects_hi_past_chunk() {
        let _ = PallocBits::default().find_aligned(1, 1, 0, N + 1);
    }

    #[test]
    fn next_free_run_matches_naive() {
        let mut rng = Rng::new(10);
        for iter in 0..800 {
            let b = random_bits(&mut rng, iter);
            let runs = free_run_lens(&b);
            for from in 0..=N + 1 {
                let want = (from.min(N)..N)
                    .find(|&i| runs[i] > 0)
                    .map(|i| (i, runs[i]));
                assert_eq!(
                    b.next_free_run(from),
                    want,
                    "next_free_run({from}) in {b:?}"
                );
            }
        }
        assert_eq!(PallocBits::default().next_free_run(0), Some((0, N)));
        assert_eq!(PallocBits::default().next_free_run(500), Some((500, 12)));
        let mut full = PallocBits::default();
        full.alloc_all();
        assert_eq!(full.next_free_run(0), None);
    }

    #[test]
    fn debug_prints_ranges() {
        let b = make_palloc_bits(&[br(0, 6), br(64, 32), br(511, 1)]);
        assert_eq!(format!("{b:?}"), "PallocBits{0..6, 64..96, 511..512}");
        assert_eq!(format!("{:?}", *b), "PageBits{0..6, 64..96, 511..512}");
        assert_eq!(format!("{:?}", PageBits::default()), "PageBits{}");
        let d = PallocData::default();
        assert_eq!(
            format!("{d:?}"),
            "PallocData { alloc: PallocBits{}, known_zero: PageBits{} }"
        );
    }

    #[test]
    fn diff_palloc_bits_reports_ranges() {
        let got = make_palloc_bits(&[br(0, 6), br(64, 32), br(500, 12)]);
        let want = make_palloc_bits(&[br(0, 4), br(10, 2), br(64, 32)]);
        let d = diff_palloc_bits(&got, &want);
        assert!(!d.is_empty());
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.ranges().collect::<Vec<_>>(),
            vec![br(4, 2), br(10, 2), br(500, 12)]
        );
        assert_eq!(
            format!("{d}"),
            "3 range(s) different\n\
             \t@ bit index 4\n\t|  got: 11\n\t| want: 00\n\
             \t@ bit index 10\n\t|  got: 00\n\t| want: 11\n\
             \t@ bit index 500\n\t|  got: 111111111111\n\t| want: 000000000000\n"
        );
        let same = diff_palloc_bits(&got, &got);
        assert!(same.is_empty());
        assert_eq!(same.len(), 0);
        assert_eq!(format!("{same}"), "0 range(s) different\n");
        assert_eq!(
            format!("{}", stringify_palloc_bits(&got, br(3, 5))),
            "11100"
        );
    }

    #[test]
    fn summarize_slow_counts() {
        let b = make_palloc_bits(&[br(3, 2), br(100, 1), br(N - 7, 3)]);
        assert_eq!(summarize_slow(&b).unpack(), (3, 404, 4));
        assert_eq!(summarize_slow(&PallocBits::default()), FREE_CHUNK_SUM);
    }
}
