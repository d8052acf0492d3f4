//! Half-open address ranges and a sorted, coalesced set of them. Go: `mranges.go`.
//!
//! The allocator records every range it has been grown by in an [`AddrRanges`] (Go's
//! `pageAlloc.inUse`), so it can tell mapped metadata from holes and skip the holes when
//! it searches.
//!
//! Follows the structure of Go's `src/runtime/mranges.go` (Copyright The Go Authors,
//! BSD-style licence; see the crate README).
//!
//! # Deviation from Go
//! Go orders addresses as `offAddr`, an address minus `arenaBaseOffset`, so that amd64's
//! split virtual address space sorts as one line. Physical addresses already form one
//! line, so here an address is a plain `u64` and `offAddr` (with `makeAddrRange`'s
//! same-segment check) disappears.
//! - `subtract`: An empty `b` leaves `self` unchanged; Go throws when an empty `b` sits
//!   strictly inside `self`, although subtracting it removes nothing.
//! - `AddrRanges`: Go keeps the ranges in a slice that starts with room for 16 and doubles
//!   (leaking the old array). A frame allocator cannot allocate while it sets itself up, so the
//!   ranges live inline, at most [`MAX_ADDR_RANGES`] of them, and [`add`](Self::add) reports
//!   [`RangeError::Full`] instead of growing. Go's `sysStat` accounting is gone with the
//!   allocation.
//! - `find_addr_greater_equal`: Go indexes past the end on an empty set; here an empty set
//!   gives `None`.
//! - `add`: Go throws on an empty range, assumes without checking that `r` overlaps nothing,
//!   and grows its slice when full; here all three are errors.

use core::fmt;

/// The half-open address range `[base, limit)`. Go: `addrRange`.
///
/// A range with `limit <= base` is empty; nothing checks the order on construction, as
/// in Go, and every query treats such a range as holding no address.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrRange {
    /// The first address in the range.
    pub base: u64,
    /// The first address after the range.
    pub limit: u64,
}

impl AddrRange {
    /// The range `[base, limit)`. Go: `makeAddrRange`.
    pub const fn new(base: u64, limit: u64) -> AddrRange {
        AddrRange { base, limit }
    }

    /// Bytes in the range; 0 unless `base < limit`. Go: `(addrRange).size`.
    pub const fn size(self) -> u64 {
        self.limit.saturating_sub(self.base)
    }

    /// Whether `addr` lies in `[base, limit)`. Go: `(addrRange).contains`.
    pub const fn contains(self, addr: u64) -> bool {
        self.base <= addr && addr < self.limit
    }

    /// Whether the two ranges share at least one address. An empty range overlaps nothing.
    pub fn overlaps(self, other: AddrRange) -> bool {
        self.base.max(other.base) < self.limit.min(other.limit)
    }

    #[cfg(test)]
    /// `self` with the addresses of `b` cut away. Go: `(addrRange).subtract`.
    ///
    /// Returns the empty range `[0, 0)` if `b` covers `self`, and trims the end of `self`
    /// that `b` overlaps otherwise.
    ///
    /// # Panics
    /// With "pagealloc: bad prune" if `b` lies strictly inside `self`, because the result
    /// would be two ranges.
    pub(crate) fn subtract(self, b: AddrRange) -> AddrRange {
        if b.size() == 0 {
            return self;
        }
        let mut a = self;
        if b.base <= a.base && a.limit <= b.limit {
            return AddrRange::default();
        } else if a.base < b.base && b.limit < a.limit {
            panic!("pagealloc: bad prune: {b} is strictly inside {a}");
        } else if a.base < b.limit && b.limit < a.limit {
            a.base = b.limit;
        } else if a.base < b.base && b.base < a.limit {
            a.limit = b.base;
        }
        a
    }

    #[cfg(test)]
    /// `self` without the addresses at or above `addr`. Go: `(addrRange).removeGreaterEqual`.
    ///
    /// Returns `[0, 0)` if `addr <= base`, `self` if `limit <= addr`, and `[base, addr)`
    /// otherwise.
    pub(crate) const fn remove_greater_equal(self, addr: u64) -> AddrRange {
        if addr <= self.base {
            AddrRange::new(0, 0)
        } else if self.limit <= addr {
            self
        } else {
            AddrRange::new(self.base, addr)
        }
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.base, self.limit)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How many ranges an [`AddrRanges`] holds at most.
///
/// 128 ranges of 16 bytes keep the set at 2 KiB. A firmware memory map rarely has more
/// than a few dozen usable regions; grows are page-granular, and grown regions that touch
/// coalesce into one range, so a map of `n` usable regions needs at most `n` ranges.
pub const MAX_ADDR_RANGES: usize = 128;

/// Why [`AddrRanges::add`] refused a range. The set is unchanged when it does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// The range holds no address.
    Empty {
        /// The range that was passed.
        range: AddrRange,
    },
    /// The range shares addresses with one already in the set.
    Overlap {
        /// The range that was passed.
        new: AddrRange,
        /// The lowest range in the set that it overlaps.
        existing: AddrRange,
    },
    /// The range touches no range in the set, and every slot is taken.
    Full {
        /// The number of slots, [`MAX_ADDR_RANGES`].
        capacity: usize,
    },
}

impl fmt::Debug for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Empty { range } => write!(f, "cannot add the empty range {range}"),
            RangeError::Overlap { new, existing } => {
                write!(f, "range {new} overlaps the existing range {existing}")
            }
            RangeError::Full { capacity } => {
                write!(
                    f,
                    "no room for another range: all {capacity} slots are in use"
                )
            }
        }
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for RangeError {}

/// A set of addresses kept as disjoint ranges. Go: `addrRanges`.
///
/// Invariants, checked by `check` after every change in debug builds:
/// * `ranges[..len]` is sorted by base and every range in it is non-empty;
/// * neighbours neither overlap nor touch (`ranges[i].limit < ranges[i + 1].base`): ranges
///   are coalesced as soon as they are added, so the set has one canonical form;
/// * `total_bytes` is the sum of the ranges' sizes.
#[derive(Clone)]
pub struct AddrRanges {
    /// Only `ranges[..len]` is meaningful.
    ranges: [AddrRange; MAX_ADDR_RANGES],
    len: usize,
    total_bytes: u64,
}

impl AddrRanges {
    /// An empty set. Go: `(*addrRanges).init`.
    pub const fn new() -> AddrRanges {
        AddrRanges {
            ranges: [AddrRange::new(0, 0); MAX_ADDR_RANGES],
            len: 0,
            total_bytes: 0,
        }
    }

    /// The ranges, sorted by base.
    pub fn ranges(&self) -> &[AddrRange] {
        &self.ranges[..self.len]
    }

    #[cfg(test)]
    /// The number of ranges.
    pub const fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// Whether the set holds no address.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes covered by all the ranges together. Go: `addrRanges.totalBytes`.
    pub const fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The index of the first range whose base is above `addr`, or [`len`](Self::len) if
    /// there is none. Go: `(*addrRanges).findSucc`.
    ///
    /// So `ranges()[i - 1]` is the last range starting at or below `addr`, and the place
    /// to insert a range based at `addr`.
    pub fn find_succ(&self, addr: u64) -> usize {
        // Below this many candidates a linear scan is cheaper than more halving. Go
        // switches at the same point.
        const LINEAR_SCAN_MAX: usize = 8;

        let ranges = self.ranges();
        // Everything below `lo` starts at or below `addr`, everything from `hi` on above it.
        let (mut lo, mut hi) = (0, ranges.len());
        while hi - lo > LINEAR_SCAN_MAX {
            let mid = lo + (hi - lo) / 2;
            let r = ranges[mid];
            if r.contains(addr) {
                return mid + 1;
            }
            if addr < r.base {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        ranges[lo..hi]
            .iter()
            .position(|r| addr < r.base)
            .map_or(hi, |i| lo + i)
    }

    /// The lowest address in the set that is at least `addr`, or `None` if every address
    /// in the set is below `addr`. Go: `(*addrRanges).findAddrGreaterEqual`.
    pub fn find_addr_greater_equal(&self, addr: u64) -> Option<u64> {
        let ranges = self.ranges();
        let i = self.find_succ(addr);
        if i > 0 && ranges[i - 1].contains(addr) {
            return Some(addr);
        }
        ranges.get(i).map(|r| r.base)
    }

    #[cfg(test)]
    /// Whether some range holds `addr`. Go: `(*addrRanges).contains`.
    pub fn contains(&self, addr: u64) -> bool {
        let i = self.find_succ(addr);
        i > 0 && self.ranges[i - 1].contains(addr)
    }

    /// Adds the addresses of `r`, merging it with any range it touches. Go:
    /// `(*addrRanges).add`.
    ///
    /// # Errors
    /// [`RangeError::Empty`] if `r` holds no address, [`RangeError::Overlap`] if it shares
    /// an address with the set, and [`RangeError::Full`] if it touches no range and every
    /// slot is taken. The set is unchanged on error.
    pub fn add(&mut self, r: AddrRange) -> Result<(), RangeError> {
        if r.size() == 0 {
            return Err(RangeError::Empty { range: r });
        }
        let i = self.find_succ(r.base);
        let below = i.checked_sub(1).map(|j| self.ranges[j]);
        let above = self.ranges().get(i).copied();
        // Ranges further out cannot overlap `r` without the neighbour overlapping it too,
        // and reporting the lower neighbour first gives the lowest overlapped range.
        for existing in [below, above].into_iter().flatten() {
            if existing.overlaps(r) {
                return Err(RangeError::Overlap { new: r, existing });
            }
        }
        let joins_below = below.is_some_and(|b| b.limit == r.base);
        let joins_above = above.is_some_and(|a| r.limit == a.base);
        match (joins_below, joins_above) {
            (true, true) => {
                // `r` fills the gap between two ranges: they become one.
                self.ranges[i - 1].limit = self.ranges[i].limit;
                self.ranges.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
            (true, false) => self.ranges[i - 1].limit = r.limit,
            (false, true) => self.ranges[i].base = r.base,
            (false, false) => {
                if self.len == MAX_ADDR_RANGES {
                    return Err(RangeError::Full {
                        capacity: MAX_ADDR_RANGES,
                    });
                }
                self.ranges.copy_within(i..self.len, i + 1);
                self.ranges[i] = r;
                self.len += 1;
            }
        }
        self.total_bytes += r.size();
        debug_assert_eq!(self.check(), Ok(()));
        Ok(())
    }

    #[cfg(test)]
    /// Takes up to `n_bytes` off the top of the last range and returns what it took. Go:
    /// `(*addrRanges).removeLast`.
    ///
    /// If the last range holds no more than `n_bytes`, all of it is removed and returned,
    /// so less than `n_bytes` may come back. The empty range `[0, 0)` comes back if the set
    /// is empty.
    pub fn remove_last(&mut self, n_bytes: u64) -> AddrRange {
        let Some(&last) = self.ranges().last() else {
            return AddrRange::default();
        };
        let size = last.size();
        let taken = if size > n_bytes {
            let cut = last.limit - n_bytes;
            self.ranges[self.len - 1].limit = cut;
            self.total_bytes -= n_bytes;
            AddrRange::new(cut, last.limit)
        } else {
            self.len -= 1;
            self.total_bytes -= size;
            last
        };
        debug_assert_eq!(self.check(), Ok(()));
        taken
    }

    #[cfg(test)]
    /// Removes every address at or above `addr`. Go: `(*addrRanges).removeGreaterEqual`.
    pub fn remove_greater_equal(&mut self, addr: u64) {
        // Every range from `keep` on starts above `addr` and goes entirely.
        let mut keep = self.find_succ(addr);
        let mut removed_bytes: u64 = self.ranges()[keep..].iter().map(|r| r.size()).sum();
        if keep > 0 && self.ranges[keep - 1].contains(addr) {
            let r = self.ranges[keep - 1];
            let trimmed = r.remove_greater_equal(addr);
            removed_bytes += r.size() - trimmed.size();
            if trimmed.size() == 0 {
                keep -= 1;
            } else {
                self.ranges[keep - 1] = trimmed;
            }
        }
        self.len = keep;
        self.total_bytes -= removed_bytes;
        debug_assert_eq!(self.check(), Ok(()));
    }

    #[cfg(test)]
    /// Makes `other` a copy of `self`, copying only the ranges in use. Go:
    /// `(*addrRanges).cloneInto`.
    pub fn clone_into(&self, other: &mut AddrRanges) {
        other.ranges[..self.len].copy_from_slice(self.ranges());
        other.len = self.len;
        other.total_bytes = self.total_bytes;
    }

    /// Checks the invariants listed on [`AddrRanges`] and names the first one broken.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.len > MAX_ADDR_RANGES {
            return Err("addr ranges: length exceeds capacity");
        }
        let mut total_bytes: u64 = 0;
        for (i, r) in self.ranges().iter().enumerate() {
            if r.size() == 0 {
                return Err("addr ranges: holds an empty range");
            }
            if i > 0 {
                let prev = self.ranges[i - 1];
                if prev.limit > r.base {
                    return Err("addr ranges: neighbours are unsorted or overlap");
                }
                if prev.limit == r.base {
                    return Err("addr ranges: touching neighbours were not coalesced");
                }
            }
            total_bytes = total_bytes
                .checked_add(r.size())
                .ok_or("addr ranges: sizes overflow u64")?;
        }
        if total_bytes != self.total_bytes {
            return Err("addr ranges: total_bytes differs from the sum of the sizes");
        }
        Ok(())
    }
}

impl Default for AddrRanges {
    fn default() -> AddrRanges {
        AddrRanges::new()
    }
}

impl PartialEq for AddrRanges {
    fn eq(&self, other: &AddrRanges) -> bool {
        // The total follows from the ranges when the invariants hold; comparing it too
        // makes a corrupted set unequal to a sound one.
        self.ranges() == other.ranges() && self.total_bytes == other.total_bytes
    }
}

impl Eq for AddrRanges {}

impl fmt::Debug for AddrRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddrRanges")
            .field("ranges", &self.ranges())
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::Rng;
    extern crate std;

    use std::format;
    use std::vec::Vec;

    use super::*;

    fn rng(base: u64, limit: u64) -> AddrRange {
        AddrRange::new(base, limit)
    }

    /// Go: `MakeAddrRanges`, built through `add`.
    fn make(ranges: &[AddrRange]) -> AddrRanges {
        let mut a = AddrRanges::new();
        for &r in ranges {
            a.add(r).unwrap();
        }
        a
    }

    /// Go: `validateAddrRanges`.
    fn validate(a: &AddrRanges, want: &[AddrRange]) {
        assert_eq!(a.ranges(), want);
        assert_eq!(a.check(), Ok(()));
        assert_eq!(a.len(), want.len());
        assert_eq!(a.is_empty(), want.is_empty());
        assert_eq!(a.total_bytes(), want.iter().map(|r| r.size()).sum::<u64>());
    }

    #[test]
    fn addr_range_size_and_contains() {
        assert_eq!(rng(0x1000, 0x3000).size(), 0x2000);
        assert_eq!(rng(0x3000, 0x3000).size(), 0);
        assert_eq!(rng(0x3000, 0x1000).size(), 0);
        let r = rng(0x1000, 0x3000);
        assert!(!r.contains(0xfff));
        assert!(r.contains(0x1000));
        assert!(r.contains(0x2fff));
        assert!(!r.contains(0x3000));
        assert!(!rng(0x3000, 0x1000).contains(0x2000));
        assert!(rng(u64::MAX - 5, u64::MAX).contains(u64::MAX - 1));
        assert!(!rng(u64::MAX - 5, u64::MAX).contains(u64::MAX));
    }

    #[test]
    fn addr_range_overlaps() {
        let r = rng(10, 20);
        assert!(r.overlaps(rng(19, 30)));
        assert!(r.overlaps(rng(0, 11)));
        assert!(r.overlaps(rng(12, 13)));
        assert!(r.overlaps(rng(0, 100)));
        assert!(!r.overlaps(rng(20, 30)));
        assert!(!r.overlaps(rng(0, 10)));
        assert!(!r.overlaps(rng(15, 15)), "an empty range overlaps nothing");
        assert!(!rng(15, 15).overlaps(r));
        assert!(!r.overlaps(rng(18, 12)));
    }

    #[test]
    fn addr_range_subtract() {
        let a = rng(10, 20);
        assert_eq!(a.subtract(rng(10, 20)), AddrRange::default());
        assert_eq!(a.subtract(rng(0, 30)), AddrRange::default());
        assert_eq!(a.subtract(rng(0, 15)), rng(15, 20));
        assert_eq!(a.subtract(rng(10, 15)), rng(15, 20));
        assert_eq!(a.subtract(rng(15, 25)), rng(10, 15));
        assert_eq!(a.subtract(rng(15, 20)), rng(10, 15));
        assert_eq!(a.subtract(rng(0, 10)), a);
        assert_eq!(a.subtract(rng(20, 30)), a);
        assert_eq!(a.subtract(rng(15, 15)), a);
    }

    #[test]
    #[should_panic(expected = "pagealloc: bad prune")]
    fn addr_range_subtract_strictly_inside_panics() {
        let _ = rng(10, 20).subtract(rng(12, 18));
    }

    #[test]
    fn addr_range_remove_greater_equal() {
        let r = rng(10, 20);
        assert_eq!(r.remove_greater_equal(5), AddrRange::default());
        assert_eq!(r.remove_greater_equal(10), AddrRange::default());
        assert_eq!(r.remove_greater_equal(11), rng(10, 11));
        assert_eq!(r.remove_greater_equal(19), rng(10, 19));
        assert_eq!(r.remove_greater_equal(20), r);
        assert_eq!(r.remove_greater_equal(u64::MAX), r);
    }

    #[test]
    fn formatting() {
        assert_eq!(format!("{}", rng(0x1000, 0x2000)), "[0x1000, 0x2000)");
        assert_eq!(format!("{:?}", rng(0, 0x10)), "[0x0, 0x10)");
        let e = RangeError::Overlap {
            new: rng(0x1000, 0x3000),
            existing: rng(0x2000, 0x4000),
        };
        assert_eq!(
            format!("{e}"),
            "range [0x1000, 0x3000) overlaps the existing range [0x2000, 0x4000)"
        );
        let e = RangeError::Empty {
            range: rng(0x5000, 0x5000),
        };
        assert_eq!(
            format!("{e}"),
            "cannot add the empty range [0x5000, 0x5000)"
        );
        let e = RangeError::Full { capacity: 128 };
        assert!(format!("{e:?}").contains("128"));
        let a = make(&[rng(0x1000, 0x2000)]);
        assert_eq!(
            format!("{a:?}"),
            "AddrRanges { ranges: [[0x1000, 0x2000)], total_bytes: 4096 }"
        );
    }

    /// Go: `TestAddrRangesAdd`, with Go's addresses. It ends with exactly
    /// `MAX_ADDR_RANGES` ranges, so it goes on to check what a full set accepts.
    #[test]
    fn test_addr_ranges_add() {
        let mut a = AddrRanges::new();
        validate(&a, &[]);

        // First range.
        a.add(rng(512, 1024)).unwrap();
        validate(&a, &[rng(512, 1024)]);

        // Coalesce up.
        a.add(rng(1024, 2048)).unwrap();
        validate(&a, &[rng(512, 2048)]);

        // Add new independent range.
        a.add(rng(4096, 8192)).unwrap();
        validate(&a, &[rng(512, 2048), rng(4096, 8192)]);

        // Coalesce down.
        a.add(rng(3776, 4096)).unwrap();
        validate(&a, &[rng(512, 2048), rng(3776, 8192)]);

        // Coalesce up and down.
        a.add(rng(2048, 3776)).unwrap();
        validate(&a, &[rng(512, 8192)]);

        // Independent ranges at the end, past Go's initial capacity of 16.
        let mut top = Vec::from([rng(512, 8192)]);
        for i in 0..64 {
            let r = rng(8192 + (i + 1) * 2048, 8192 + (i + 1) * 2048 + 10);
            a.add(r).unwrap();
            top.push(r);
            validate(&a, &top);
        }

        // Independent ranges at the beginning, each inserted at the front of the rest.
        let mut bottom = Vec::new();
        for i in 0..63 {
            let r = rng(8 + i * 8, 8 + i * 8 + 4);
            a.add(r).unwrap();
            bottom.push(r);
            let want: Vec<_> = bottom.iter().chain(&top).copied().collect();
            validate(&a, &want);
        }
        assert_eq!(a.len(), MAX_ADDR_RANGES);

        // Full: a range that touches nothing needs a slot and is refused.
        let before = a.clone();
        assert_eq!(
            a.add(rng(1 << 40, (1 << 40) + 1)),
            Err(RangeError::Full {
                capacity: MAX_ADDR_RANGES
            })
        );
        assert_eq!(a, before);
        assert_eq!(
            a.add(rng(5, 6)),
            Err(RangeError::Full {
                capacity: MAX_ADDR_RANGES
            })
        );
        assert_eq!(a, before);

        // Full, but coalescing needs no slot: down, up, and both (which frees one).
        a.add(rng(8192 + 2048 + 10, 8192 + 2048 + 20)).unwrap();
        a.add(rng(8192 + 64 * 2048 - 6, 8192 + 64 * 2048)).unwrap();
        a.add(rng(8 + 4, 8 + 8)).unwrap();
        assert_eq!(a.len(), MAX_ADDR_RANGES - 1);
        assert_eq!(a.ranges()[0], rng(8, 8 + 12));
        assert_eq!(a.ranges()[62], rng(512, 8192));
        assert_eq!(a.ranges()[63], rng(8192 + 2048, 8192 + 2048 + 20));
        assert_eq!(
            a.ranges()[126],
            rng(8192 + 64 * 2048 - 6, 8192 + 64 * 2048 + 10)
        );
        assert_eq!(a.total_bytes(), before.total_bytes() + 10 + 6 + 4);
        assert_eq!(a.check(), Ok(()));

        // The freed slot takes a new range again.
        a.add(rng(1 << 40, (1 << 40) + 1)).unwrap();
        assert_eq!(a.len(), MAX_ADDR_RANGES);
    }

    /// Go: `TestAddrRangesFindSucc`, same case names and addresses.
    #[test]
    fn test_addr_ranges_find_succ() {
        let large: Vec<_> = (0..100).map(|i| rng(5 + i * 5, 5 + i * 5 + 3)).collect();
        let three = [rng(6, 10), rng(12, 16), rng(19, 22)];
        let one = [rng(14, 16)];
        let cases: &[(&str, u64, usize, &[AddrRange])] = &[
            ("Empty", 12, 0, &[]),
            ("OneBefore", 12, 0, &one),
            ("OneWithin", 14, 1, &one),
            ("OneAfterLimit", 16, 1, &one),
            ("OneAfter", 17, 1, &one),
            ("ThreeBefore", 3, 0, &three),
            ("ThreeAfter", 24, 3, &three),
            ("ThreeBetween", 11, 1, &three),
            ("ThreeWithin", 9, 1, &three),
            ("Zero", 0, 1, &[rng(0, 10)]),
            ("Max", u64::MAX, 1, &[rng(u64::MAX - 5, u64::MAX)]),
            ("LargeBefore", 2, 0, &large),
            ("LargeAfter", 5 + 100 * 5 + 30, 100, &large),
            ("LargeBetweenLow", 14, 2, &large),
            ("LargeBetweenHigh", 249, 49, &large),
            ("LargeWithinLow", 25, 5, &large),
            ("LargeWithinHigh", 396, 79, &large),
            ("LargeWithinMiddle", 250, 50, &large),
        ];
        for &(name, addr, want, ranges) in cases {
            let a = make(ranges);
            assert_eq!(a.find_succ(addr), want, "case {name}");
        }
    }

    #[test]
    fn find_addr_greater_equal_and_contains() {
        let empty = AddrRanges::new();
        assert_eq!(empty.find_addr_greater_equal(0), None);
        assert!(!empty.contains(0));

        let a = make(&[rng(0x1000, 0x2000), rng(0x5000, 0x8000)]);
        assert_eq!(a.find_addr_greater_equal(0), Some(0x1000));
        assert_eq!(a.find_addr_greater_equal(0x1000), Some(0x1000));
        assert_eq!(a.find_addr_greater_equal(0x1abc), Some(0x1abc));
        assert_eq!(a.find_addr_greater_equal(0x2000), Some(0x5000));
        assert_eq!(a.find_addr_greater_equal(0x7fff), Some(0x7fff));
        assert_eq!(a.find_addr_greater_equal(0x8000), None);
        assert!(!a.contains(0xfff));
        assert!(a.contains(0x1000));
        assert!(!a.contains(0x2000));
        assert!(a.contains(0x7fff));
        assert!(!a.contains(0x8000));
    }

    #[test]
    fn add_errors_leave_the_set_unchanged() {
        let mut a = make(&[
            rng(0x1000, 0x2000),
            rng(0x5000, 0x8000),
            rng(0x9000, 0xa000),
        ]);
        let before = a.clone();
        let overlaps = [
            (rng(0x1000, 0x2000), rng(0x1000, 0x2000)),
            (rng(0x1800, 0x3000), rng(0x1000, 0x2000)),
            (rng(0x0800, 0x1001), rng(0x1000, 0x2000)),
            (rng(0x4000, 0x5001), rng(0x5000, 0x8000)),
            (rng(0x6000, 0x7000), rng(0x5000, 0x8000)),
            (rng(0x7fff, 0x9000), rng(0x5000, 0x8000)),
            // Spanning several ranges reports the lowest.
            (rng(0, 0x10000), rng(0x1000, 0x2000)),
            (rng(0x3000, 0xb000), rng(0x5000, 0x8000)),
        ];
        for (new, existing) in overlaps {
            assert_eq!(
                a.add(new),
                Err(RangeError::Overlap { new, existing }),
                "{new}"
            );
            assert_eq!(a, before);
        }
        for range in [rng(0x3000, 0x3000), rng(0x4000, 0x3000), rng(0, 0)] {
            assert_eq!(a.add(range), Err(RangeError::Empty { range }));
            assert_eq!(a, before);
        }
        // Touching on both sides is fine.
        a.add(rng(0x8000, 0x9000)).unwrap();
        validate(&a, &[rng(0x1000, 0x2000), rng(0x5000, 0xa000)]);
    }

    #[test]
    fn remove_last() {
        let mut a = make(&[rng(0x1000, 0x2000), rng(0x5000, 0x8000)]);
        assert_eq!(a.remove_last(0x1000), rng(0x7000, 0x8000));
        validate(&a, &[rng(0x1000, 0x2000), rng(0x5000, 0x7000)]);
        // Asking for more than the last range holds takes only that range.
        assert_eq!(a.remove_last(0x10000), rng(0x5000, 0x7000));
        validate(&a, &[rng(0x1000, 0x2000)]);
        assert_eq!(a.remove_last(0x1000), rng(0x1000, 0x2000));
        validate(&a, &[]);
        assert_eq!(a.remove_last(0x1000), AddrRange::default());
        validate(&a, &[]);
    }

    #[test]
    fn remove_greater_equal() {
        let all = [
            rng(0x1000, 0x2000),
            rng(0x5000, 0x8000),
            rng(0x9000, 0xa000),
        ];
        let cases: &[(u64, &[AddrRange])] = &[
            (0, &[]),
            (0x1000, &[]),
            (0x1800, &[rng(0x1000, 0x1800)]),
            (0x2000, &[rng(0x1000, 0x2000)]),
            (0x5000, &[rng(0x1000, 0x2000)]),
            (0x5001, &[rng(0x1000, 0x2000), rng(0x5000, 0x5001)]),
            (0x8800, &[rng(0x1000, 0x2000), rng(0x5000, 0x8000)]),
            (0xa000, &all),
            (u64::MAX, &all),
        ];
        for &(addr, want) in cases {
            let mut a = make(&all);
            a.remove_greater_equal(addr);
            validate(&a, want);
        }
    }

    #[test]
    fn clone_into_copies() {
        let a = make(&[rng(0x1000, 0x2000), rng(0x5000, 0x8000)]);
        let mut b = make(&[rng(0, 0x10), rng(0x20, 0x30), rng(0x40, 0x50)]);
        a.clone_into(&mut b);
        assert_eq!(b, a);
        validate(&b, a.ranges());
    }

    #[test]
    fn check_reports_broken_invariants() {
        let good = make(&[rng(0x1000, 0x2000), rng(0x5000, 0x8000)]);
        assert_eq!(good.check(), Ok(()));

        let mut bad = good.clone();
        bad.total_bytes += 1;
        assert!(bad.check().unwrap_err().contains("total_bytes"));

        let mut bad = good.clone();
        bad.ranges[1] = rng(0x2000, 0x8000);
        assert!(bad.check().unwrap_err().contains("coalesced"));

        let mut bad = good.clone();
        bad.ranges[1] = rng(0x1800, 0x8000);
        assert!(bad.check().unwrap_err().contains("overlap"));

        let mut bad = good.clone();
        bad.ranges[1] = rng(0x5000, 0x5000);
        assert!(bad.check().unwrap_err().contains("empty"));
    }

    /// The model: one flag per 4 KiB unit of a small address window.
    const UNIT: u64 = 0x1000;
    const ORIGIN: u64 = 0x10_0000;
    const UNITS: usize = 1024;

    fn addr_of(unit: usize) -> u64 {
        ORIGIN + unit as u64 * UNIT
    }

    /// The canonical range list of the model, rebuilt from the flags.
    fn model_ranges(set: &[bool; UNITS]) -> Vec<AddrRange> {
        let mut out: Vec<AddrRange> = Vec::new();
        for (u, &on) in set.iter().enumerate() {
            if !on {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.limit == addr_of(u) => last.limit = addr_of(u + 1),
                _ => out.push(rng(addr_of(u), addr_of(u + 1))),
            }
        }
        out
    }

    /// The model's answer to every query at `addr`: find_succ, find_addr_greater_equal and
    /// contains.
    fn model_queries(
        set: &[bool; UNITS],
        ranges: &[AddrRange],
        addr: u64,
    ) -> (usize, Option<u64>, bool) {
        let succ = ranges.iter().filter(|r| r.base <= addr).count();
        let covered =
            |a: u64| a >= ORIGIN && a < addr_of(UNITS) && set[((a - ORIGIN) / UNIT) as usize];
        let ge = if covered(addr) {
            Some(addr)
        } else {
            ranges.iter().map(|r| r.base).find(|&b| b > addr)
        };
        (succ, ge, covered(addr))
    }

    #[test]
    fn random_against_model() {
        let (mut adds, mut empties, mut overlaps, mut fulls) = (0, 0, 0, 0);
        for seed in 1..=10u64 {
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut set = [false; UNITS];
            let mut a = AddrRanges::new();
            for _ in 0..3000 {
                match r.below(100) {
                    0..80 => {
                        let lo = r.below(UNITS as u64) as usize;
                        // Mostly short ranges, so the set fragments up to its capacity;
                        // sometimes reversed or empty ones.
                        let len = if r.below(10) == 0 {
                            r.below(40)
                        } else {
                            1 + r.below(2)
                        };
                        let hi = if r.below(30) == 0 {
                            lo.saturating_sub(len as usize)
                        } else {
                            (lo + len as usize).min(UNITS)
                        };
                        let new = rng(addr_of(lo), addr_of(hi));
                        let before = a.clone();
                        let got = a.add(new);
                        let want = if hi <= lo {
                            Err(RangeError::Empty { range: new })
                        } else if let Some(&existing) =
                            model_ranges(&set).iter().find(|m| m.overlaps(new))
                        {
                            Err(RangeError::Overlap { new, existing })
                        } else {
                            let mut after = set;
                            after[lo..hi].fill(true);
                            if model_ranges(&after).len() > MAX_ADDR_RANGES {
                                Err(RangeError::Full {
                                    capacity: MAX_ADDR_RANGES,
                                })
                            } else {
                                set = after;
                                Ok(())
                            }
                        };
                        assert_eq!(got, want, "add {new} to {before:?}");
                        match got {
                            Ok(()) => adds += 1,
                            Err(RangeError::Empty { .. }) => empties += 1,
                            Err(RangeError::Overlap { .. }) => overlaps += 1,
                            Err(RangeError::Full { .. }) => fulls += 1,
                        }
                        if got.is_err() {
                            assert_eq!(a, before);
                        }
                    }
                    80..90 => {
                        let n_bytes = r.below(6) * UNIT;
                        let got = a.remove_last(n_bytes);
                        let want = match model_ranges(&set).last() {
                            None => AddrRange::default(),
                            Some(&last) if last.size() > n_bytes => {
                                rng(last.limit - n_bytes, last.limit)
                            }
                            Some(&last) => last,
                        };
                        assert_eq!(got, want);
                        if want.size() > 0 {
                            let lo = ((want.base - ORIGIN) / UNIT) as usize;
                            let hi = ((want.limit - ORIGIN) / UNIT) as usize;
                            set[lo..hi].fill(false);
                        }
                    }
                    _ => {
                        // Biased high, so the set is not emptied too often.
                        let unit = UNITS as u64 - r.below(UNITS as u64 / 4) - 1;
                        let addr = ORIGIN + unit * UNIT + r.below(UNIT);
                        a.remove_greater_equal(addr);
                        // Units are whole, so a cut inside a unit keeps the lower part; the
                        // model cannot hold that, so cut on unit boundaries only.
                        let addr_cut = ORIGIN + unit * UNIT;
                        if addr != addr_cut {
                            a.remove_greater_equal(addr_cut);
                        }
                        set[unit as usize..].fill(false);
                    }
                }
                let ranges = model_ranges(&set);
                validate(&a, &ranges);
                for _ in 0..4 {
                    // Query anywhere in and just around the window, unaligned too.
                    let addr = ORIGIN - 2 * UNIT + r.below((UNITS as u64 + 4) * UNIT);
                    let (succ, ge, contains) = model_queries(&set, &ranges, addr);
                    assert_eq!(a.find_succ(addr), succ, "find_succ({addr:#x}) in {a:?}");
                    assert_eq!(a.find_addr_greater_equal(addr), ge, "{addr:#x} in {a:?}");
                    assert_eq!(a.contains(addr), contains, "contains({addr:#x}) in {a:?}");
                }
            }
        }
        // The run must have reached every outcome, or it tested less than it claims.
        assert!(adds > 1000 && empties > 0 && overlaps > 1000 && fulls > 0);
    }
}
