//! Per-CPU frame caches: the single-frame path that does not touch the zones' lock.
//!
//! Each CPU owns a [`PageCache`] (free frames of one 64-frame block it took from a zone)
//! and one [`FreeBatch`] per zone (single frames freed on it). A single-frame allocation
//! takes the most recently freed frame from a batch, else a frame from the cache; a
//! single-frame free goes into the batch of the frame's zone. Both are lock-free with
//! respect to the zones: the only shared state they touch is the zone's handed-out bit
//! of that one frame, changed with one atomic operation. That bit is what makes a free
//! safe without a global lock: of two CPUs (or a CPU and its own interrupt handler)
//! freeing the same frame, exactly one clears it and wins; the other is refused.
//!
//! The zones' lock is taken only to refill an empty cache, to return half of a full
//! batch, and to explain a refused free.
//!
//! Each CPU's state sits behind its own [`IrqMutex`]: interrupts are off while it is
//! held, so an interrupt handler on the same CPU cannot find it locked; other CPUs take
//! it only to flush it (out of memory) or to count what it holds (statistics).
//! Lock order: a CPU's lock, then the zones' lock (see `zones.rs`).

use pagealloc::{FreeBatch, PageCache};

use super::lock::IrqMutex;
use super::zones::{self, PerZone, ZONES, Zone};
use crate::smp::{MAX_CPUS, cpu_id};

/// What one CPU holds.
pub(super) struct CpuFrames {
    /// The zone the page cache came from.
    zone: Zone,
    /// Free frames of one 64-frame block, taken from `zone`.
    cache: Option<PageCache<'static>>,
    /// Single frames freed on this CPU, one batch per zone.
    batches: PerZone<FreeBatch<'static>>,
    /// Single frames this CPU handed out and took back (for the console).
    pub(super) allocs: u64,
    pub(super) frees: u64,
}

impl CpuFrames {
    const fn new() -> CpuFrames {
        CpuFrames {
            zone: Zone::Dma,
            cache: None,
            batches: PerZone([FreeBatch::new(), FreeBatch::new(), FreeBatch::new()]),
            allocs: 0,
            frees: 0,
        }
    }

    /// Free frames this CPU holds.
    pub(super) fn held_pages(&self) -> usize {
        self.cache.as_ref().map_or(0, PageCache::free_pages)
            + self.batches.iter().map(FreeBatch::len).sum::<usize>()
    }

    /// Calls `f(page)` for every free frame this CPU holds.
    pub(super) fn for_each_held(&self, mut f: impl FnMut(u64)) {
        if let Some(c) = &self.cache {
            let mut bits = c.cache();
            while bits != 0 {
                f(c.base() + u64::from(bits.trailing_zeros()) * super::FRAME_SIZE);
                bits &= bits - 1;
            }
        }
        for b in self.batches.iter() {
            b.pages().for_each(&mut f);
        }
    }

    /// One frame from a batch or the cache, without the zones' lock. Returns the frame
    /// and whether it is known to be zero.
    fn take(&mut self) -> Option<(u64, bool)> {
        // The most recently freed frame first (still warm); never a DMA one, which waits
        // in its batch for the zone.
        for z in [Zone::Normal, Zone::Dma32] {
            if let Some(addr) = self.batches[z].alloc() {
                return Some((addr, false));
            }
        }
        let (addr, zeroed) = self.cache.as_mut()?.alloc(1)?;
        Some((addr, zeroed == 1))
    }
}

/// A CPU's state on a cache line of its own, so CPUs do not slow each other down.
#[repr(align(64))]
struct PerCpu(IrqMutex<CpuFrames>);

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu(IrqMutex::new(CpuFrames::new())) }; MAX_CPUS];

fn this_cpu() -> &'static IrqMutex<CpuFrames> {
    &CPUS[cpu_id()].0
}

/// One frame for this CPU: from its batches or cache, refilling the cache from the
/// first zone in fallback order that has a free frame. `None` when no zone has one
/// (other CPUs may still hold free frames).
pub(super) fn alloc_one() -> Option<(u64, bool)> {
    let mut cpu = this_cpu().lock();
    if let Some(got) = cpu.take() {
        cpu.allocs += 1;
        return Some(got);
    }
    {
        let mut zones = ZONES.lock();
        // The old cache is empty (`take` found nothing in it): nothing to return.
        cpu.cache = None;
        for z in Zone::FALLBACK {
            let Some(pa) = zones.zone_mut(z) else {
                continue;
            };
            let cache = pa.alloc_to_cache();
            if !cache.is_empty() {
                cpu.zone = z;
                cpu.cache = Some(cache);
                break;
            }
        }
    }
    let got = cpu.take()?;
    cpu.allocs += 1;
    Some(got)
}

/// Frees the single frame at `addr` of zone `z` into this CPU's batch for that zone.
/// `Err` carries the crate's lock-free refusal; the caller explains it.
pub(super) fn free_one(z: Zone, addr: u64) -> Result<(), pagealloc::RangeOpError> {
    let owner = zones::handed_out(z).ok_or(pagealloc::RangeOpError::NotGrown {
        base: addr,
        npages: 1,
        page: addr,
    })?;
    let mut cpu = this_cpu().lock();
    let batch = &mut cpu.batches[z];
    if batch.is_full() {
        let mut zones = ZONES.lock();
        let pa = zones
            .zone_mut(z)
            .expect("a zone with handed-out bits has an allocator");
        batch
            .return_half(pa)
            .unwrap_or_else(|e| panic!("returning a CPU's free batch to {}: {e}", z.name()));
    }
    batch.free(owner, addr)?;
    cpu.frees += 1;
    // The frame is in this CPU's batch now, out of everyone else's reach while the lock
    // is held: safe to fill.
    super::poison::fill(addr, 1);
    Ok(())
}

/// Returns every CPU's cached and batched frames to the zones. Returns how many came
/// back.
pub(super) fn flush_all() -> usize {
    let mut returned = 0;
    for c in &CPUS {
        let mut cpu = c.0.lock();
        let n = cpu.held_pages();
        if n == 0 {
            continue;
        }
        let mut zones = ZONES.lock();
        let cpu = &mut *cpu;
        for z in Zone::ALL {
            if let Some(pa) = zones.zone_mut(z) {
                cpu.batches[z]
                    .flush(pa)
                    .unwrap_or_else(|e| panic!("flushing a free batch into {}: {e}", z.name()));
            }
        }
        if let Some(mut cache) = cpu.cache.take()
            && let Some(pa) = zones.zone_mut(cpu.zone)
        {
            cache
                .flush(pa)
                .unwrap_or_else(|e| panic!("flushing a page cache into {}: {e}", cpu.zone.name()));
        }
        returned += n;
    }
    returned
}

/// Calls `f(cpu, state)` for every CPU slot, each under its own lock.
pub(super) fn for_each_cpu(mut f: impl FnMut(usize, &CpuFrames)) {
    for (i, c) in CPUS.iter().enumerate() {
        f(i, &c.0.lock());
    }
}
