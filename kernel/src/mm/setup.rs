//! Boot-time set-up: from the bootloader's memory map to working frame allocators.
//!
//! 1. Merge the usable regions of the memory map and split them into zones.
//! 2. Size each zone's metadata with `pagealloc`'s sizing function, take that many
//!    frames from the top of the highest usable region that has room, and zero them.
//! 3. Build one allocator per zone in those frames and `grow` it once per region, with
//!    the zeroed bits clear (boot memory is not known to be zero).
//! 4. Mark the metadata frames allocated, so they are never handed out.

use core::fmt;
use core::sync::atomic::AtomicU64;

use bootloader_api::BootInfo;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use pagealloc::{AddrRange, Contents, MetadataLayout, PageAlloc};
use spin::Once;
use x86_64::registers::control::Cr3;
use x86_64::{PhysAddr, VirtAddr};

use super::frames::FRAME_SIZE;
use super::zones::{self, Zone, Zones};
use super::{KERNEL_PML4, PHYS_OFFSET, heap, phys_to_virt};

/// Merged usable regions the kernel can keep track of.
pub const MAX_USABLE_REGIONS: usize = 64;
/// Regions of other kinds the kernel keeps for display and checks.
pub const MAX_RESERVED_REGIONS: usize = 128;

/// The memory map as the kernel keeps it.
pub struct Regions {
    usable: [AddrRange; MAX_USABLE_REGIONS],
    n_usable: usize,
    reserved: [(AddrRange, MemoryRegionKind); MAX_RESERVED_REGIONS],
    n_reserved: usize,
}

impl Regions {
    /// Usable RAM, merged, sorted, page aligned.
    pub fn usable(&self) -> &[AddrRange] {
        &self.usable[..self.n_usable]
    }

    /// Everything else the map lists (bootloader, kernel, firmware, ...), sorted.
    pub fn reserved(&self) -> &[(AddrRange, MemoryRegionKind)] {
        &self.reserved[..self.n_reserved]
    }
}

static REGIONS: Once<Regions> = Once::new();

/// The memory map recorded by [`init`].
pub fn regions() -> &'static Regions {
    REGIONS.get().expect("mm::init has not run")
}

/// What [`init`] did, for printing.
#[derive(Clone, Copy, Debug)]
pub struct InitReport {
    /// Bytes of usable RAM.
    pub usable_bytes: u64,
    /// Usable regions after merging.
    pub usable_regions: usize,
    /// `grow` calls made (one per region and zone it falls in).
    pub grow_calls: usize,
    /// Bytes of allocator metadata (summaries, chunk map, bitmaps).
    pub metadata_bytes: u64,
    /// Where the metadata lives, `[base, limit)`.
    pub metadata: AddrRange,
    /// Free frames right after set-up.
    pub free_pages: usize,
    /// Time set-up took, in TSC cycles.
    pub tsc_cycles: u64,
}

/// Why set-up failed.
#[derive(Clone, Copy, Debug)]
pub enum SetupError {
    /// The bootloader did not map physical memory.
    NoPhysicalMapping,
    /// More usable regions than the kernel keeps track of.
    TooManyRegions {
        /// The limit.
        max: usize,
    },
    /// No usable region can hold the metadata.
    NoRoomForMetadata {
        /// Bytes needed.
        needed: u64,
    },
    /// The allocator refused the metadata or a region.
    PageAlloc(&'static str),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::NoPhysicalMapping => {
                write!(f, "the bootloader did not map physical memory")
            }
            SetupError::TooManyRegions { max } => {
                write!(f, "more than {max} usable memory regions")
            }
            SetupError::NoRoomForMetadata { needed } => {
                write!(
                    f,
                    "no usable region can hold {needed} bytes of allocator metadata"
                )
            }
            SetupError::PageAlloc(what) => write!(f, "page allocator set-up: {what}"),
        }
    }
}

/// Per-zone sizes, decided before any metadata exists.
struct ZonePlan {
    regions: [AddrRange; MAX_USABLE_REGIONS],
    n: usize,
    layout: Option<MetadataLayout>,
}

/// Sets up the frame allocator and the kernel heap from the bootloader's memory map.
pub fn init(boot_info: &BootInfo) -> Result<InitReport, SetupError> {
    let t0 = tsc();
    let offset = boot_info
        .physical_memory_offset
        .into_option()
        .ok_or(SetupError::NoPhysicalMapping)?;
    PHYS_OFFSET.call_once(|| VirtAddr::new(offset));
    KERNEL_PML4.call_once(|| Cr3::read().0);

    let regions = REGIONS.try_call_once(|| record_regions(&boot_info.memory_regions))?;
    let usable_bytes: u64 = regions.usable().iter().map(|r| r.size()).sum();

    // Size every zone's metadata.
    let mut plans: [ZonePlan; 3] = core::array::from_fn(|_| ZonePlan {
        regions: [AddrRange::default(); MAX_USABLE_REGIONS],
        n: 0,
        layout: None,
    });
    for (z, plan) in Zone::ALL.iter().zip(plans.iter_mut()) {
        let (lo, hi) = z.range();
        for r in regions.usable() {
            let clipped = AddrRange::new(r.base.max(lo), r.limit.min(hi));
            if clipped.size() > 0 {
                plan.regions[plan.n] = clipped;
                plan.n += 1;
            }
        }
        if plan.n > 0 {
            let layout = MetadataLayout::for_regions(&plan.regions[..plan.n])
                .map_err(|_| SetupError::PageAlloc("memory above the physical address space"))?;
            plan.layout = Some(layout);
        }
    }
    // One block of words for every zone; each zone's allocator splits its part itself.
    let words: usize = plans
        .iter()
        .filter_map(|p| p.layout)
        .map(|l| l.words())
        .sum();
    let total = (words * size_of::<AtomicU64>()) as u64;
    let needed = total.next_multiple_of(FRAME_SIZE);

    // Take the metadata from the top of the highest region with room: low memory is
    // scarce (DMA) and ordinary allocations start at the bottom of each zone.
    let home = regions
        .usable()
        .iter()
        .rev()
        .find(|r| r.size() >= needed)
        .ok_or(SetupError::NoRoomForMetadata { needed })?;
    let meta = AddrRange::new(home.limit - needed, home.limit);
    let block = phys_to_virt(PhysAddr::new(meta.base)).as_mut_ptr::<AtomicU64>();
    // SAFETY: `meta` lies in usable RAM that nothing uses yet (the frame allocator does
    // not exist), the physical memory mapping makes it writable at `block`, which is
    // frame-aligned (so aligned for `AtomicU64`), and `needed` bytes hold `words` words.
    // Zeroing it first makes every word an initialised `AtomicU64`. The slice is the
    // only reference to this memory for the rest of the kernel's life: the allocators
    // (and their handed-out handles) own it from here.
    let mut metadata: &'static mut [AtomicU64] = unsafe {
        core::ptr::write_bytes(block.cast::<u8>(), 0, needed as usize);
        core::slice::from_raw_parts_mut(block, words)
    };

    let mut zones = Zones::empty();
    let mut grow_calls = 0;
    for (z, plan) in Zone::ALL.iter().zip(plans.iter()) {
        let Some(layout) = plan.layout else { continue };
        let (mine, rest) = core::mem::take(&mut metadata).split_at_mut(layout.words());
        metadata = rest;
        let mut pa = PageAlloc::new(layout, mine)
            .map_err(|_| SetupError::PageAlloc("metadata smaller than its layout"))?;
        for r in &plan.regions[..plan.n] {
            pa.grow(*r, Contents::Unknown)
                .map_err(|_| SetupError::PageAlloc("a usable region was refused"))?;
            grow_calls += 1;
        }
        // The metadata's own frames must never be handed out.
        let (zlo, zhi) = z.range();
        let piece = AddrRange::new(meta.base.max(zlo), meta.limit.min(zhi));
        if piece.size() > 0 {
            pa.alloc_range(piece.base, (piece.size() / FRAME_SIZE) as usize)
                .map_err(|_| SetupError::PageAlloc("metadata frames were not free"))?;
        }
        zones.zones[*z] = Some(pa);
    }
    zones::install(zones, meta);
    heap::init();

    let free_pages = super::stats().free_pages;
    let report = InitReport {
        usable_bytes,
        usable_regions: regions.usable().len(),
        grow_calls,
        metadata_bytes: total,
        metadata: meta,
        free_pages,
        tsc_cycles: tsc() - t0,
    };
    REPORT.call_once(|| report);
    Ok(report)
}

static REPORT: Once<InitReport> = Once::new();

pub use super::zones::metadata_range;

/// What [`init`] reported, once it has run.
pub fn init_report() -> Option<InitReport> {
    REPORT.get().copied()
}

/// Merges the usable regions and keeps the others.
fn record_regions(map: &[MemoryRegion]) -> Result<Regions, SetupError> {
    let mut out = Regions {
        usable: [AddrRange::default(); MAX_USABLE_REGIONS],
        n_usable: 0,
        reserved: [(AddrRange::default(), MemoryRegionKind::Bootloader); MAX_RESERVED_REGIONS],
        n_reserved: 0,
    };
    let mut sorted_ok = true;
    let mut last = 0;
    for r in map {
        sorted_ok &= r.start >= last;
        last = r.start;
        if r.kind != MemoryRegionKind::Usable {
            if out.n_reserved < MAX_RESERVED_REGIONS {
                out.reserved[out.n_reserved] = (AddrRange::new(r.start, r.end), r.kind);
                out.n_reserved += 1;
            }
            continue;
        }
        // Only whole frames are usable.
        let base = r.start.next_multiple_of(FRAME_SIZE);
        let limit = r.end & !(FRAME_SIZE - 1);
        if base >= limit {
            continue;
        }
        if out.n_usable > 0 && out.usable[out.n_usable - 1].limit == base {
            out.usable[out.n_usable - 1].limit = limit;
            continue;
        }
        if out.n_usable == MAX_USABLE_REGIONS {
            return Err(SetupError::TooManyRegions {
                max: MAX_USABLE_REGIONS,
            });
        }
        out.usable[out.n_usable] = AddrRange::new(base, limit);
        out.n_usable += 1;
    }
    assert!(
        sorted_ok,
        "mm::init needs the memory map sorted by address (kernel::init sorts it)"
    );
    Ok(out)
}

/// The time-stamp counter.
pub fn tsc() -> u64 {
    // SAFETY: `rdtsc` has no side effects and exists on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}
