//! The zones of physical memory, each its own [`PageAlloc`], behind one lock.
//!
//! Physical memory is split into three zones: `DMA` below 16 MiB (ISA devices), `DMA32`
//! below 4 GiB (32-bit devices) and `Normal` above. An ordinary request tries Normal, then
//! DMA32, then DMA, so the scarce low memory is used last; a request with an address
//! limit only looks in the zones below it. Inside a zone, Go's address-ordered first fit
//! decides. (One allocator with a top-down search for ordinary requests would also
//! protect low memory, but would give up Go's search address and page cache, which only
//! run bottom-up.)
//!
//! Lock order: a CPU's frame cache (`percpu.rs`), then [`ZONES`]. Code that holds `ZONES`
//! never takes a CPU's lock, and no code holds two CPUs' locks at once.

use pagealloc::{AddrRange, HandedOut, PageAlloc};
use spin::Once;

use super::lock::IrqMutex;

/// The end of the ISA DMA zone.
pub const DMA_LIMIT: u64 = 16 << 20;
/// The end of the 32-bit DMA zone.
pub const DMA32_LIMIT: u64 = 4 << 30;

/// A zone of physical memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Zone {
    /// Below 16 MiB.
    Dma = 0,
    /// From 16 MiB to 4 GiB.
    Dma32 = 1,
    /// From 4 GiB up.
    Normal = 2,
}

/// Zones in the kernel.
pub const ZONE_COUNT: usize = 3;

impl Zone {
    /// All zones, lowest first.
    pub const ALL: [Zone; ZONE_COUNT] = [Zone::Dma, Zone::Dma32, Zone::Normal];
    /// The order ordinary requests try the zones in: scarce low memory last.
    pub const FALLBACK: [Zone; ZONE_COUNT] = [Zone::Normal, Zone::Dma32, Zone::Dma];

    /// The zone's address range, `[base, limit)`.
    pub const fn range(self) -> (u64, u64) {
        match self {
            Zone::Dma => (0, DMA_LIMIT),
            Zone::Dma32 => (DMA_LIMIT, DMA32_LIMIT),
            Zone::Normal => (DMA32_LIMIT, 1 << 52),
        }
    }

    /// The zone that holds `addr`.
    pub const fn of(addr: u64) -> Zone {
        if addr < DMA_LIMIT {
            Zone::Dma
        } else if addr < DMA32_LIMIT {
            Zone::Dma32
        } else {
            Zone::Normal
        }
    }

    /// A short name for printing.
    pub const fn name(self) -> &'static str {
        match self {
            Zone::Dma => "DMA",
            Zone::Dma32 => "DMA32",
            Zone::Normal => "Normal",
        }
    }
}

/// One `T` per zone, indexed by [`Zone`] (not by number, so that a zone cannot be mixed
/// up with another index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerZone<T>(pub [T; ZONE_COUNT]);

impl<T> PerZone<T> {
    /// The values in zone order (DMA, DMA32, Normal).
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> core::ops::Index<Zone> for PerZone<T> {
    type Output = T;

    fn index(&self, z: Zone) -> &T {
        &self.0[z as usize]
    }
}

impl<T> core::ops::IndexMut<Zone> for PerZone<T> {
    fn index_mut(&mut self, z: Zone) -> &mut T {
        &mut self.0[z as usize]
    }
}

/// The page allocators of the zones.
pub struct Zones {
    /// One allocator per zone that has memory.
    pub zones: PerZone<Option<PageAlloc<'static>>>,
}

impl Zones {
    pub(super) const fn empty() -> Zones {
        Zones {
            zones: PerZone([None, None, None]),
        }
    }

    /// The allocator of zone `z`, if it has memory.
    pub fn zone(&self, z: Zone) -> Option<&PageAlloc<'static>> {
        self.zones[z].as_ref()
    }

    pub(super) fn zone_mut(&mut self, z: Zone) -> Option<&mut PageAlloc<'static>> {
        self.zones[z].as_mut()
    }
}

/// The zones' allocators. Taken for everything that changes a zone's tree: refills and
/// returns of CPU caches, runs of frames, constrained requests.
pub(super) static ZONES: IrqMutex<Zones> = IrqMutex::new(Zones::empty());

/// Each zone's handed-out bits, readable and changeable without [`ZONES`]: the per-CPU
/// paths hand out and take back single frames through them, lock-free.
static HANDED_OUT: Once<PerZone<Option<HandedOut<'static>>>> = Once::new();

/// Where the allocators' metadata lives; set once by `setup`.
static METADATA: Once<AddrRange> = Once::new();

/// Installs the zones' allocators (once, from `setup`).
pub(super) fn install(zones: Zones, metadata: AddrRange) {
    HANDED_OUT.call_once(|| {
        PerZone(
            zones
                .zones
                .0
                .each_ref()
                .map(|z| z.as_ref().map(PageAlloc::handed_out)),
        )
    });
    METADATA.call_once(|| metadata);
    *ZONES.lock() = zones;
}

/// Zone `z`'s handed-out bits, if the zone has memory.
pub(super) fn handed_out(z: Zone) -> Option<HandedOut<'static>> {
    HANDED_OUT.get().and_then(|h| h[z])
}

/// Where the allocators' metadata lives (empty before `mm::init` has placed it).
pub fn metadata_range() -> AddrRange {
    METADATA.get().copied().unwrap_or_default()
}
