//! Reading and printing the bootloader's memory map.
//!
//! `crate::init` sorts the map by start address; the functions here expect that order.

use crate::fmtbuf::FmtBuf;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use core::fmt;

/// Size of a frame (a 4 KiB page of physical memory): the kernel's one constant for it.
pub use crate::mm::FRAME_SIZE as FRAME_BYTES;

/// A byte count shown with a binary unit: `512 B`, `639 KiB`, `1.5 MiB`, `4 GiB`. One
/// decimal, truncated, and only when it is not zero. Honours width and alignment flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        let bytes = self.0;
        let text: FmtBuf<32> = match UNITS.iter().find(|(_, shift)| bytes >> shift != 0) {
            None => FmtBuf::format(format_args!("{bytes} B")),
            Some(&(unit, shift)) => {
                let whole = bytes >> shift;
                let rest = bytes & ((1 << shift) - 1);
                // rest < 2^40, so `rest * 10` cannot overflow.
                let tenths = (rest * 10) >> shift;
                if tenths == 0 {
                    FmtBuf::format(format_args!("{whole} {unit}"))
                } else {
                    FmtBuf::format(format_args!("{whole}.{tenths} {unit}"))
                }
            }
        };
        f.pad(text.as_str())
    }
}

/// A region kind in words. Unknown firmware types show their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub MemoryRegionKind);

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            MemoryRegionKind::Usable => "usable",
            MemoryRegionKind::Bootloader => "bootloader (kernel, page tables, boot info)",
            MemoryRegionKind::UnknownBios(t) => match t {
                2 => "reserved (BIOS)",
                3 => "ACPI reclaimable (BIOS)",
                4 => "ACPI NVS (BIOS)",
                5 => "bad memory (BIOS)",
                7 => "persistent memory (BIOS)",
                _ => {
                    return f
                        .pad(FmtBuf::<32>::format(format_args!("BIOS E820 type {t}")).as_str());
                }
            },
            MemoryRegionKind::UnknownUefi(t) => match t {
                0 => "reserved (UEFI)",
                1 => "UEFI loader code",
                2 => "UEFI loader data",
                3 => "UEFI boot services code",
                4 => "UEFI boot services data",
                5 => "UEFI runtime services code",
                6 => "UEFI runtime services data",
                7 => "conventional (UEFI)",
                8 => "unusable (UEFI)",
                9 => "ACPI reclaimable (UEFI)",
                10 => "ACPI NVS (UEFI)",
                11 => "memory-mapped I/O (UEFI)",
                12 => "memory-mapped port space (UEFI)",
                13 => "PAL code (UEFI)",
                14 => "persistent memory (UEFI)",
                _ => {
                    return f
                        .pad(FmtBuf::<32>::format(format_args!("UEFI memory type {t}")).as_str());
                }
            },
            _ => "unknown",
        };
        f.pad(name)
    }
}

/// Neighbouring regions of one kind joined into one span `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Kind shared by all joined regions.
    pub kind: MemoryRegionKind,
    /// How many regions of the map were joined.
    pub regions: usize,
}

impl Span {
    /// Bytes in the span.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the span holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Joins regions that touch (`end == next.start`) and share a kind. `regions` must be
/// sorted by start address.
pub fn merged(regions: &[MemoryRegion]) -> impl Iterator<Item = Span> + '_ {
    let mut rest = regions.iter().peekable();
    core::iter::from_fn(move || {
        let first = rest.next()?;
        let mut span = Span {
            start: first.start,
            end: first.end,
            kind: first.kind,
            regions: 1,
        };
        while let Some(next) = rest.next_if(|r| r.start == span.end && r.kind == span.kind) {
            span.end = next.end;
            span.regions += 1;
        }
        Some(span)
    })
}

/// Totals of the usable memory in a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsableSummary {
    /// Bytes in usable regions.
    pub bytes: u64,
    /// Whole 4 KiB frames inside usable regions.
    pub frames: u64,
    /// Usable spans after joining neighbours.
    pub spans: usize,
    /// The largest usable span, if any.
    pub largest: Option<Span>,
    /// One past the highest usable byte.
    pub top: u64,
}

/// Adds up the usable memory of a map sorted by start address.
pub fn usable_summary(regions: &[MemoryRegion]) -> UsableSummary {
    let mut summary = UsableSummary::default();
    for region in regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
    {
        summary.bytes += region.end - region.start;
        let first_frame = region.start.div_ceil(FRAME_BYTES);
        let end_frame = region.end / FRAME_BYTES;
        summary.frames += end_frame.saturating_sub(first_frame);
        summary.top = summary.top.max(region.end);
    }
    for span in merged(regions).filter(|s| s.kind == MemoryRegionKind::Usable) {
        summary.spans += 1;
        if summary.largest.is_none_or(|l| span.len() > l.len()) {
            summary.largest = Some(span);
        }
    }
    summary
}

/// Which firmware booted us, judged by the region kinds only that firmware reports.
pub fn firmware(regions: &[MemoryRegion]) -> &'static str {
    if regions
        .iter()
        .any(|r| matches!(r.kind, MemoryRegionKind::UnknownUefi(_)))
    {
        "UEFI"
    } else if regions
        .iter()
        .any(|r| matches!(r.kind, MemoryRegionKind::UnknownBios(_)))
    {
        "BIOS"
    } else {
        "unknown"
    }
}

/// Prints the map as a table of merged spans, then the usable totals.
pub fn print(regions: &[MemoryRegion]) {
    let spans = merged(regions).count();
    crate::serial_println!(
        "memory map: {} regions from the bootloader, {} after joining neighbours of one kind",
        regions.len(),
        spans
    );
    crate::serial_println!(
        "  {:<18}  {:<18}  {:>10}  kind",
        "start",
        "end (exclusive)",
        "size"
    );
    for span in merged(regions) {
        crate::serial_println!(
            "  {:#018x}  {:#018x}  {:>10}  {}",
            span.start,
            span.end,
            Size(span.len()),
            Kind(span.kind)
        );
    }
    let usable = usable_summary(regions);
    crate::serial_println!(
        "usable memory: {} in {} spans ({} frames of 4 KiB), highest usable address {:#x}",
        Size(usable.bytes),
        usable.spans,
        usable.frames,
        usable.top
    );
    if let Some(largest) = usable.largest {
        crate::serial_println!(
            "largest usable span: {} at {:#x}..{:#x}",
            Size(largest.len()),
            largest.start,
            largest.end
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: fmt::Arguments) -> FmtBuf<64> {
        FmtBuf::format(args)
    }

    fn region(start: u64, end: u64, kind: MemoryRegionKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    const USABLE: MemoryRegionKind = MemoryRegionKind::Usable;
    const LOADER: MemoryRegionKind = MemoryRegionKind::Bootloader;

    #[test_case]
    fn size_uses_binary_units() {
        let cases: [(u64, &str); 9] = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (639 * 1024, "639 KiB"),
            ((1 << 20) - 1, "1023.9 KiB"),
            (512 << 20, "512 MiB"),
            ((3 << 30) + (1 << 29), "3.5 GiB"),
            (5 << 40, "5 TiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                text(format_args!("{}", Size(bytes))).as_str(),
                want,
                "{bytes} bytes"
            );
        }
        assert_eq!(
            text(format_args!("[{:>8}]", Size(4096))).as_str(),
            "[   4 KiB]"
        );
    }

    #[test_case]
    fn kinds_have_names() {
        assert_eq!(text(format_args!("{}", Kind(USABLE))).as_str(), "usable");
        let acpi = Kind(MemoryRegionKind::UnknownBios(3));
        assert_eq!(
            text(format_args!("{acpi}")).as_str(),
            "ACPI reclaimable (BIOS)"
        );
        let odd = Kind(MemoryRegionKind::UnknownUefi(0x8000_0001));
        assert_eq!(
            text(format_args!("{odd}")).as_str(),
            "UEFI memory type 2147483649"
        );
    }

    #[test_case]
    fn merged_joins_touching_regions_of_one_kind() {
        let map = [
            region(0, 0x1000, LOADER),
            region(0x1000, 0x9f000, USABLE),
            region(0x9f000, 0xa0000, USABLE),
            // A hole before this one: not joined even though the kind matches.
            region(0x100000, 0x200000, USABLE),
            region(0x200000, 0x300000, LOADER),
            region(0x300000, 0x400000, USABLE),
        ];
        let mut spans = merged(&map);
        assert_eq!(
            spans.next().map(|s| (s.start, s.end, s.regions)),
            Some((0, 0x1000, 1))
        );
        assert_eq!(
            spans.next(),
            Some(Span {
                start: 0x1000,
                end: 0xa0000,
                kind: USABLE,
                regions: 2
            })
        );
        assert_eq!(
            spans.next().map(|s| (s.start, s.end)),
            Some((0x100000, 0x200000))
        );
        assert_eq!(spans.next().map(|s| s.kind), Some(LOADER));
        assert_eq!(spans.next().map(|s| s.start), Some(0x300000));
        assert_eq!(spans.next(), None);
        assert_eq!(merged(&[]).count(), 0);
    }

    #[test_case]
    fn usable_summary_counts_whole_frames() {
        let map = [
            region(0, 0x1000, LOADER),
            // Not page-aligned at either end: holds one whole frame (0x2000..0x3000).
            region(0x1800, 0x3800, USABLE),
            region(0x100000, 0x500000, USABLE),
            region(0x500000, 0x600000, USABLE),
        ];
        let summary = usable_summary(&map);
        assert_eq!(summary.bytes, 0x2000 + 0x500000);
        assert_eq!(summary.frames, 1 + 0x500);
        assert_eq!(summary.spans, 2);
        assert_eq!(
            summary.largest.map(|s| (s.start, s.end)),
            Some((0x100000, 0x600000))
        );
        assert_eq!(summary.top, 0x600000);
        assert_eq!(usable_summary(&[]), UsableSummary::default());
    }

    #[test_case]
    fn firmware_is_told_by_region_kinds() {
        assert_eq!(
            firmware(&[region(0, 1, MemoryRegionKind::UnknownBios(2))]),
            "BIOS"
        );
        assert_eq!(
            firmware(&[region(0, 1, MemoryRegionKind::UnknownUefi(0))]),
            "UEFI"
        );
        assert_eq!(firmware(&[region(0, 1, USABLE)]), "unknown");
    }

    #[test_case]
    fn boot_memory_map_is_sorted_and_disjoint() {
        let regions = &crate::testing::boot_info().memory_regions;
        assert!(!regions.is_empty());
        for pair in regions.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "{:?} overlaps {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(
            usable_summary(regions).bytes > 64 << 20,
            "QEMU gets at least 128 MiB"
        );
    }
}
