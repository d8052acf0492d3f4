//! The packed `(start, max, end)` summary of a run of pages.
//!
//! Go keeps this in `mpagealloc.go` (`pallocSum`, `packPallocSum`, `mergeSummaries`).

use core::fmt;

use crate::consts::{LOG_MAX_PACKED_VALUE, MAX_PACKED_VALUE, PALLOC_CHUNK_PAGES};

/// Mask of one 21-bit field.
const FIELD_MASK: u64 = (1 << LOG_MAX_PACKED_VALUE) - 1;
/// Bit 63 alone stands for `start == max == end == 2^21`, which does not fit 21 bits.
const ALL_MAX: u64 = 1 << 63;

/// Free pages at the start of a range, the longest free run inside it, and free pages
/// at its end, packed into one `u64` (21 bits each). Go: `pallocSum`.
///
/// The all-zero value means "no free page", which is also what memory that was never
/// grown reads as, so a search skips it with one comparison.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(transparent)]
pub struct PallocSum(u64);

impl PallocSum {
    /// The summary of a range with no free page.
    pub const EMPTY: PallocSum = PallocSum(0);

    /// The summary whose packed form is `bits` (as [`PallocSum::to_bits`] gives it).
    pub(crate) const fn from_bits(bits: u64) -> PallocSum {
        PallocSum(bits)
    }

    /// Packs three counts. Go: `packPallocSum`.
    ///
    /// Every field must be at most 2^21 (the pages of the root's 8 GiB entries), and
    /// `max == 2^21` only together with `start == end == max`.
    pub const fn pack(start: usize, max: usize, end: usize) -> PallocSum {
        if max == MAX_PACKED_VALUE {
            return PallocSum(ALL_MAX);
        }
        PallocSum(
            (start as u64 & FIELD_MASK)
                | (max as u64 & FIELD_MASK) << LOG_MAX_PACKED_VALUE
                | (end as u64 & FIELD_MASK) << (2 * LOG_MAX_PACKED_VALUE),
        )
    }

    /// The packed bits, for printing and tests.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// Free pages at the start. Go: `(pallocSum).start`.
    pub const fn start(self) -> usize {
        if self.0 & ALL_MAX != 0 {
            return MAX_PACKED_VALUE;
        }
        (self.0 & FIELD_MASK) as usize
    }

    /// The longest run of free pages. Go: `(pallocSum).max`.
    pub const fn max(self) -> usize {
        if self.0 & ALL_MAX != 0 {
            return MAX_PACKED_VALUE;
        }
        ((self.0 >> LOG_MAX_PACKED_VALUE) & FIELD_MASK) as usize
    }

    /// Free pages at the end. Go: `(pallocSum).end`.
    pub const fn end(self) -> usize {
        if self.0 & ALL_MAX != 0 {
            return MAX_PACKED_VALUE;
        }
        ((self.0 >> (2 * LOG_MAX_PACKED_VALUE)) & FIELD_MASK) as usize
    }

    /// `(start, max, end)`. Go: `(pallocSum).unpack`.
    pub const fn unpack(self) -> (usize, usize, usize) {
        (self.start(), self.max(), self.end())
    }
}

/// The summary of a chunk with every page free. Go: `freeChunkSum`.
pub const FREE_CHUNK_SUM: PallocSum =
    PallocSum::pack(PALLOC_CHUNK_PAGES, PALLOC_CHUNK_PAGES, PALLOC_CHUNK_PAGES);

impl fmt::Debug for PallocSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, max, end) = self.unpack();
        write!(f, "(start={start}, max={max}, end={end})")
    }
}

impl fmt::Display for PallocSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Merges the summaries of consecutive, equally sized ranges of `1 << log_max_pages_per_sum`
/// pages each into the summary of their concatenation. Go: `mergeSummaries`.
pub fn merge_summaries(sums: &[PallocSum], log_max_pages_per_sum: u32) -> PallocSum {
    let full = 1usize << log_max_pages_per_sum;
    let Some((first, rest)) = sums.split_first() else {
        return PallocSum::EMPTY;
    };
    let (mut start, mut most, mut end) = first.unpack();
    for (i, s) in rest.iter().enumerate() {
        let (si, mi, ei) = s.unpack();
        // The whole prefix is free, so this range's start extends it.
        if start == (i + 1) * full {
            start += si;
        }
        most = most.max(end + si).max(mi);
        // A fully free range extends the run that ends here; otherwise its own end wins.
        end = if ei == full { end + full } else { ei };
    }
    PallocSum::pack(start, most, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_values() {
        assert_eq!(PallocSum::pack(0, 0, 0).to_bits(), 0);
        assert_eq!(PallocSum::pack(1, 2, 3).to_bits(), 0x0000_0c00_0040_0001);
        assert_eq!(PallocSum::pack((1 << 21) - 1, 0, 0).to_bits(), 0x1f_ffff);
        assert_eq!(FREE_CHUNK_SUM.to_bits(), 0x0008_0000_4000_0200);
        let all = PallocSum::pack(MAX_PACKED_VALUE, MAX_PACKED_VALUE, MAX_PACKED_VALUE);
        assert_eq!(all.to_bits(), 1 << 63);
        assert_eq!(all.unpack(), (1 << 21, 1 << 21, 1 << 21));
    }

    #[test]
    fn pack_round_trip() {
        for &(s, m, e) in &[
            (0, 0, 0),
            (5, 9, 1),
            (512, 512, 512),
            ((1 << 21) - 1, (1 << 21) - 1, 7),
        ] {
            assert_eq!(PallocSum::pack(s, m, e).unpack(), (s, m, e));
        }
    }

    #[test]
    fn merge_free_chunks() {
        let m = merge_summaries(&[FREE_CHUNK_SUM; 8], 9);
        assert_eq!(m.to_bits(), 0x0040_0002_0000_1000);
        let big = PallocSum::pack(1 << 18, 1 << 18, 1 << 18);
        assert_eq!(merge_summaries(&[big; 8], 18).to_bits(), 1 << 63);
    }

    #[test]
    fn merge_mixed() {
        let e = PallocSum::EMPTY;
        let sums = [
            PallocSum::pack(3, 3, 300),
            FREE_CHUNK_SUM,
            FREE_CHUNK_SUM,
            PallocSum::pack(200, 200, 0),
            e,
            e,
            e,
            e,
        ];
        assert_eq!(merge_summaries(&sums, 9).unpack(), (3, 1524, 0));
    }

    #[test]
    fn merge_all_empty_and_runs_at_the_ends() {
        assert_eq!(merge_summaries(&[PallocSum::EMPTY; 8], 9), PallocSum::EMPTY);
        let mut sums = [PallocSum::EMPTY; 8];
        sums[0] = FREE_CHUNK_SUM;
        sums[7] = PallocSum::pack(10, 10, 20);
        assert_eq!(merge_summaries(&sums, 9).unpack(), (512, 512, 20));
    }
}
