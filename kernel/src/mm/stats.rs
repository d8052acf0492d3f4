//! Counting and inspecting the frame allocator: statistics, the consistency check, and
//! what the CPUs hold (for the console and the picture; never on an allocation path).

use pagealloc::InvariantError;

use super::percpu;
use super::zones::{PerZone, ZONES, Zone, Zones};
use crate::smp::MAX_CPUS;

/// Counts for one zone.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ZoneStats {
    /// Pages grown into the zone.
    pub total_pages: usize,
    /// Free pages in the zone's allocator (not counting caches).
    pub free_pages: usize,
    /// The longest free run.
    pub largest_free_run: usize,
    /// Bytes of metadata.
    pub metadata_bytes: usize,
}

/// Counts for the whole frame allocator.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FrameStats {
    /// Pages managed.
    pub total_pages: usize,
    /// Free pages, including those in CPU caches.
    pub free_pages: usize,
    /// Free pages held by CPU caches and batches.
    pub cached_pages: usize,
    /// Pages handed out.
    pub used_pages: usize,
    /// Bytes of allocator metadata.
    pub metadata_bytes: usize,
    /// The longest free run in any zone.
    pub largest_free_run: usize,
    /// Per zone, lowest first.
    pub zones: PerZone<ZoneStats>,
}

/// The allocator's counts. Each CPU is read under its own lock, then the zones under
/// theirs: with several CPUs at work the sum is a moment's picture, not an exact one.
pub fn stats() -> FrameStats {
    let mut cached_pages = 0;
    percpu::for_each_cpu(|_, cpu| cached_pages += cpu.held_pages());
    let zones = ZONES.lock();
    let mut s = FrameStats {
        cached_pages,
        ..FrameStats::default()
    };
    for z in Zone::ALL {
        if let Some(pa) = zones.zone(z) {
            let zs = ZoneStats {
                total_pages: pa.total_pages(),
                free_pages: pa.free_pages(),
                largest_free_run: pa.largest_free_run(),
                metadata_bytes: pa.layout().bytes(),
            };
            s.total_pages += zs.total_pages;
            s.free_pages += zs.free_pages;
            s.metadata_bytes += zs.metadata_bytes;
            s.largest_free_run = s.largest_free_run.max(zs.largest_free_run);
            s.zones[z] = zs;
        }
    }
    s.free_pages += cached_pages;
    s.used_pages = s.total_pages - s.free_pages;
    s
}

/// One CPU's frame counts.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CpuStats {
    /// Free frames it holds in its page cache and batches.
    pub held_pages: usize,
    /// Single frames it handed out from its cache and batches.
    pub allocs: u64,
    /// Single frames freed into its batches.
    pub frees: u64,
}

/// Per-CPU counts, indexed by CPU number (slots of CPUs that never ran are zero).
pub fn cpu_stats() -> [CpuStats; MAX_CPUS] {
    let mut out = [CpuStats::default(); MAX_CPUS];
    percpu::for_each_cpu(|i, cpu| {
        out[i] = CpuStats {
            held_pages: cpu.held_pages(),
            allocs: cpu.allocs,
            frees: cpu.frees,
        };
    });
    out
}

/// Runs the allocator's full consistency check on every zone.
pub fn check_invariants() -> Result<(), (Zone, InvariantError)> {
    let zones = ZONES.lock();
    for z in Zone::ALL {
        if let Some(pa) = zones.zone(z) {
            pa.check_invariants().map_err(|e| (z, e))?;
        }
    }
    Ok(())
}

/// Panics, naming the zone, if [`check_invariants`] finds a broken invariant (for tests).
pub fn assert_invariants() {
    if let Err((z, e)) = check_invariants() {
        panic!("invariants broken in zone {}: {e}", z.name());
    }
}

/// Calls `f` with the allocator of each zone that has memory, under the lock. Keep `f`
/// short: interrupts are off.
pub fn with_zones<R>(f: impl FnOnce(&Zones) -> R) -> R {
    f(&ZONES.lock())
}

/// The first frame of `[base, limit)` that some CPU holds free, in its page cache or a
/// batch. For inspection only (the console): a free never needs it, since the zones'
/// handed-out bits already say whether a frame may be freed. Takes the CPUs' locks one
/// at a time: do not call it under the zones' lock.
pub fn held_by_a_cpu(base: u64, limit: u64) -> Option<u64> {
    let mut first: Option<u64> = None;
    for_each_held_frame(|_, page| {
        if base <= page && page < limit {
            first = Some(first.map_or(page, |f| f.min(page)));
        }
    });
    first
}

/// Calls `f(cpu, frame)` for every free frame a CPU holds in its page cache or batches
/// (the zones' bitmaps show them allocated). Each CPU is visited under its own lock, with
/// interrupts off: keep `f` short, and do not allocate in it (growing the heap would take
/// that CPU's lock again).
pub fn for_each_held_frame(mut f: impl FnMut(usize, u64)) {
    percpu::for_each_cpu(|i, cpu| cpu.for_each_held(|page| f(i, page)));
}
