//! The frame API: physical frames from the page allocator, for the rest of the kernel.
//!
//! Physical memory is split into three zones, each its own [`PageAlloc`]: `DMA` below
//! 16 MiB (ISA devices), `DMA32` below 4 GiB (32-bit devices) and `Normal` above. An
//! ordinary request tries Normal, then DMA32, then DMA, so the scarce low memory is
//! used last; a request with an address limit only looks in the zones below it. Inside
//! a zone, Go's address-ordered first fit decides. (One allocator with a top-down search
//! for ordinary requests would also protect low memory, but would give up Go's search
//! address and page cache, which only run bottom-up.)
//!
//! All zones sit behind one [`IrqMutex`]. Single frames come from a per-CPU
//! [`PageCache`] first, which needs only that CPU's own lock. A single frame that is freed
//! goes to its CPU's [`FreeBatch`]: it is checked like any free, reused by the next
//! single-frame allocation on that CPU, and returned to its zone in sorted batches.

use core::fmt;

use pagealloc::{
    AllocError, Allocation, Constraints, FREE_BATCH_PAGES, FreeBatch, InvariantError, PageAlloc,
    PageCache, RangeOpError,
};
use x86_64::PhysAddr;
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size2MiB, Size4KiB};

use super::lock::IrqMutex;
use super::phys_to_virt;

/// Bytes in a 4 KiB frame.
pub const FRAME_SIZE: u64 = 4096;
/// Pages in a 2 MiB frame.
pub const HUGE_FRAME_PAGES: usize = 512;
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

impl Zone {
    /// All zones, lowest first.
    pub const ALL: [Zone; 3] = [Zone::Dma, Zone::Dma32, Zone::Normal];
    /// The order ordinary requests try the zones in: scarce low memory last.
    pub const FALLBACK: [Zone; 3] = [Zone::Normal, Zone::Dma32, Zone::Dma];

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

/// The page allocators of the zones.
pub struct Zones {
    /// One allocator per zone that has memory.
    pub zones: [Option<PageAlloc<'static>>; 3],
}

impl Zones {
    const fn empty() -> Zones {
        Zones {
            zones: [None, None, None],
        }
    }

    fn zone_mut(&mut self, z: Zone) -> Option<&mut PageAlloc<'static>> {
        self.zones[z as usize].as_mut()
    }
}

/// The frame allocator. Lock order: a CPU's cache, then this.
pub(crate) static FRAMES: IrqMutex<Zones> = IrqMutex::new(Zones::empty());

/// CPUs the per-CPU caches are sized for.
pub const MAX_CPUS: usize = 4;

/// A CPU's page cache and the zone it came from.
struct CpuCache {
    zone: Zone,
    cache: PageCache,
    /// Single frames freed on this CPU, one batch per zone, reused before the cache.
    batches: [FreeBatch; 3],
}

impl CpuCache {
    const fn new() -> CpuCache {
        CpuCache {
            zone: Zone::Dma,
            cache: PageCache::new(0, 0, 0),
            batches: [FreeBatch::new(), FreeBatch::new(), FreeBatch::new()],
        }
    }

    /// Free frames this CPU holds.
    fn free_pages(&self) -> usize {
        self.cache.free_pages() + self.batches.iter().map(FreeBatch::len).sum::<usize>()
    }
}

static CACHES: [IrqMutex<CpuCache>; MAX_CPUS] = [
    IrqMutex::new(CpuCache::new()),
    IrqMutex::new(CpuCache::new()),
    IrqMutex::new(CpuCache::new()),
    IrqMutex::new(CpuCache::new()),
];

/// The index of the CPU this runs on. The kernel starts no other CPU yet; with SMP this
/// would read the local APIC id.
fn cpu_id() -> usize {
    0
}

/// Why a frame request or free failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// Memory management is not initialised yet.
    Uninitialised,
    /// No zone can satisfy the request.
    OutOfMemory {
        /// Pages requested.
        npages: usize,
        /// Alignment requested, in pages.
        align_pages: usize,
        /// The address the frames had to end below, if any.
        limit: Option<u64>,
        /// Free pages left in all zones and caches.
        free_pages: usize,
    },
    /// The allocator refused the request (zero pages, bad alignment, ...).
    Alloc(AllocError),
    /// The allocator refused a free (double free, foreign address, ...).
    Free(RangeOpError),
    /// A free of the allocator's own metadata frames.
    Metadata {
        /// The range being freed.
        base: u64,
        /// Its length in pages.
        npages: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::Uninitialised => write!(f, "frame allocator used before mm::init"),
            FrameError::OutOfMemory {
                npages,
                align_pages,
                limit,
                free_pages,
            } => {
                write!(f, "out of memory: no {npages} contiguous frames")?;
                if align_pages > 1 {
                    write!(f, " aligned to {align_pages} frames")?;
                }
                if let Some(l) = limit {
                    write!(f, " below {l:#x}")?;
                }
                write!(f, " ({free_pages} frames free)")
            }
            FrameError::Alloc(e) => write!(f, "frame allocator: {e}"),
            FrameError::Free(e) => write!(f, "frame allocator: {e}"),
            FrameError::Metadata { base, npages } => write!(
                f,
                "free of [{base:#x}, +{npages} frames): these frames hold the allocator's metadata"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// What to allocate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameRequest {
    /// Contiguous 4 KiB frames.
    pub npages: usize,
    /// Alignment of the first frame, in frames (a power of two).
    pub align_pages: usize,
    /// The frames must end at or below this address.
    pub limit: Option<u64>,
}

impl FrameRequest {
    /// `npages` contiguous frames anywhere.
    pub const fn pages(npages: usize) -> FrameRequest {
        FrameRequest {
            npages,
            align_pages: 1,
            limit: None,
        }
    }

    /// The same request, aligned.
    pub const fn aligned(self, align_pages: usize) -> FrameRequest {
        FrameRequest {
            align_pages,
            ..self
        }
    }

    /// The same request, ending at or below `limit`.
    pub const fn below(self, limit: u64) -> FrameRequest {
        FrameRequest {
            limit: Some(limit),
            ..self
        }
    }
}

/// Contiguous 4 KiB frames owned by their holder; dropping them frees them.
#[derive(Debug)]
#[must_use = "dropping frames frees them"]
pub struct Frames {
    start: PhysAddr,
    npages: usize,
    zeroed_pages: usize,
}

impl Frames {
    /// Physical address of the first frame.
    pub fn start_address(&self) -> PhysAddr {
        self.start
    }

    /// The first frame.
    pub fn start_frame(&self) -> PhysFrame {
        PhysFrame::containing_address(self.start)
    }

    /// Frames held.
    pub fn npages(&self) -> usize {
        self.npages
    }

    /// How many of the frames were known to be zero when allocated.
    pub fn zeroed_pages(&self) -> usize {
        self.zeroed_pages
    }

    /// The frames as a 2 MiB frame, if they are exactly one.
    pub fn huge_frame(&self) -> Option<PhysFrame<Size2MiB>> {
        let f = PhysFrame::<Size2MiB>::from_start_address(self.start).ok()?;
        (self.npages == HUGE_FRAME_PAGES).then_some(f)
    }

    /// The frames' memory, through the mapping of physical memory.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        let ptr = phys_to_virt(self.start).as_mut_ptr::<u8>();
        let len = self.npages * FRAME_SIZE as usize;
        // SAFETY: the frames are RAM that this handle owns alone (the allocator handed
        // them out once), and all of physical memory is mapped at the offset.
        unsafe { core::slice::from_raw_parts_mut(ptr, len) }
    }

    /// Fills the frames with zeros.
    pub fn zero(&mut self) {
        self.as_mut_bytes().fill(0);
        self.zeroed_pages = self.npages;
    }

    /// Gives up ownership without freeing, e.g. for a frame handed to a page table.
    pub fn into_raw(self) -> (PhysFrame, usize) {
        let raw = (self.start_frame(), self.npages);
        core::mem::forget(self);
        raw
    }

    /// Takes ownership of frames released with [`Frames::into_raw`].
    ///
    /// # Safety
    /// The frames must be allocated, and nothing else may use or free them afterwards.
    pub unsafe fn from_raw(start: PhysFrame, npages: usize) -> Frames {
        Frames {
            start: start.start_address(),
            npages,
            zeroed_pages: 0,
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        if let Err(e) = free_frames(self.start, self.npages) {
            panic!("dropping frames at {:#x}: {e}", self.start.as_u64());
        }
    }
}

/// Allocates frames as `req` says. Single unconstrained frames come from this CPU's page
/// cache; anything else from the zones, lowest fit in the first zone that has one.
pub fn alloc(req: FrameRequest) -> Result<Frames, FrameError> {
    if req.npages == 1 && req.align_pages == 1 && req.limit.is_none() {
        return alloc_one();
    }
    match alloc_from_zones(req) {
        // Free pages may sit in CPUs' caches and batches: return them and try once more.
        Err(FrameError::OutOfMemory { .. }) if flush_caches() > 0 => alloc_from_zones(req),
        r => r,
    }
}

/// One 4 KiB frame.
pub fn alloc_frame() -> Result<Frames, FrameError> {
    alloc(FrameRequest::pages(1))
}

/// `npages` contiguous 4 KiB frames.
pub fn alloc_frames(npages: usize) -> Result<Frames, FrameError> {
    alloc(FrameRequest::pages(npages))
}

/// One 2 MiB frame (512 frames, 2 MiB aligned).
pub fn alloc_huge_frame() -> Result<Frames, FrameError> {
    alloc(FrameRequest::pages(HUGE_FRAME_PAGES).aligned(HUGE_FRAME_PAGES))
}

/// Frames as `req` says, filled with zeros. Only frames not known to be zero are
/// cleared, outside the allocator's lock.
pub fn alloc_zeroed(req: FrameRequest) -> Result<Frames, FrameError> {
    if req.npages == 1 && req.align_pages == 1 && req.limit.is_none() {
        let mut f = alloc_one()?;
        if f.zeroed_pages == 0 {
            f.zero();
        }
        return Ok(f);
    }
    let mut dirty = DirtyRuns::default();
    let mut f = match alloc_from_zones_with(req, Some(&mut dirty)) {
        Err(FrameError::OutOfMemory { .. }) if flush_caches() > 0 => {
            dirty = DirtyRuns::default();
            alloc_from_zones_with(req, Some(&mut dirty))?
        }
        r => r?,
    };
    let start = f.start.as_u64();
    let bytes = f.as_mut_bytes();
    if dirty.overflow {
        bytes.fill(0);
    } else {
        for &(base, n) in &dirty.runs[..dirty.len] {
            let at = (base - start) as usize;
            bytes[at..at + n * FRAME_SIZE as usize].fill(0);
        }
    }
    f.zeroed_pages = f.npages;
    Ok(f)
}

/// The runs of an allocation that were not known to be zero, as the allocator reports
/// them under its lock, so they can be cleared after it is released.
#[derive(Default)]
struct DirtyRuns {
    runs: [(u64, usize); 16],
    len: usize,
    /// More runs than fit: clear everything.
    overflow: bool,
}

impl DirtyRuns {
    fn push(&mut self, base: u64, npages: usize) {
        if self.len == self.runs.len() {
            self.overflow = true;
        } else {
            self.runs[self.len] = (base, npages);
            self.len += 1;
        }
    }
}

/// Like [`alloc`], but always from the zones' allocators, never from a CPU's page cache,
/// so that every request shows in the allocators' summaries (the console uses this).
pub fn alloc_uncached(req: FrameRequest) -> Result<Frames, FrameError> {
    alloc_from_zones(req)
}

fn alloc_one() -> Result<Frames, FrameError> {
    let mut cpu = CACHES[cpu_id()].lock();
    // The most recently freed frame first (still warm); never a DMA one, which waits in
    // its batch for the zone.
    for z in [Zone::Normal, Zone::Dma32] {
        if let Some(addr) = cpu.batches[z as usize].alloc() {
            return Ok(Frames {
                start: PhysAddr::new(addr),
                npages: 1,
                zeroed_pages: 0,
            });
        }
    }
    if let Some(frames) = take_from_cache(&mut cpu) {
        return Ok(frames);
    }
    // Refill from the first zone in fallback order that has a free page.
    {
        let mut zones = FRAMES.lock();
        for z in Zone::FALLBACK {
            let Some(pa) = zones.zone_mut(z) else {
                continue;
            };
            let cache = pa.alloc_to_cache();
            if !cache.is_empty() {
                cpu.zone = z;
                cpu.cache = cache;
                break;
            }
        }
    }
    if let Some(frames) = take_from_cache(&mut cpu) {
        return Ok(frames);
    }
    drop(cpu);
    // Nothing in the zones: other CPUs' caches may still hold pages.
    if flush_caches() > 0 {
        return alloc_from_zones(FrameRequest::pages(1));
    }
    Err(out_of_memory(FrameRequest::pages(1)))
}

fn take_from_cache(cpu: &mut CpuCache) -> Option<Frames> {
    let (addr, zeroed) = cpu.cache.alloc(1)?;
    Some(Frames {
        start: PhysAddr::new(addr),
        npages: 1,
        zeroed_pages: zeroed,
    })
}

fn alloc_from_zones(req: FrameRequest) -> Result<Frames, FrameError> {
    alloc_from_zones_with(req, None)
}

fn alloc_from_zones_with(
    req: FrameRequest,
    mut dirty: Option<&mut DirtyRuns>,
) -> Result<Frames, FrameError> {
    let mut zones = FRAMES.lock();
    let mut initialised = false;
    for z in Zone::FALLBACK {
        let (zone_base, _) = z.range();
        if req.limit.is_some_and(|l| l <= zone_base) {
            continue;
        }
        let Some(pa) = zones.zone_mut(z) else {
            continue;
        };
        initialised = true;
        let c = Constraints {
            align_pages: req.align_pages,
            min_addr: 0,
            max_addr: req.limit.unwrap_or(Constraints::NONE.max_addr),
        };
        let result = match dirty.as_mut() {
            Some(d) => pa.alloc_constrained_with(req.npages, c, &mut |b, n| d.push(b, n)),
            None => pa.alloc_constrained(req.npages, c),
        };
        match result {
            Ok(Allocation {
                base,
                npages,
                zeroed_pages,
            }) => {
                return Ok(Frames {
                    start: PhysAddr::new(base),
                    npages,
                    zeroed_pages,
                });
            }
            Err(AllocError::OutOfMemory { .. }) => continue,
            Err(e) => return Err(FrameError::Alloc(e)),
        }
    }
    if !initialised && zones.zones.iter().all(Option::is_none) {
        return Err(FrameError::Uninitialised);
    }
    drop(zones);
    Err(out_of_memory(req))
}

fn out_of_memory(req: FrameRequest) -> FrameError {
    FrameError::OutOfMemory {
        npages: req.npages,
        align_pages: req.align_pages,
        limit: req.limit,
        free_pages: stats().free_pages,
    }
}

/// Frees `npages` frames at `start`. Refuses, with the allocator's error and without
/// changing anything, frames that are not allocated (a double free), not managed memory
/// (a foreign address), or the allocator's own metadata.
pub fn free_frames(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::Batch)
}

/// Like [`free_frames`] for frames whose contents the caller has zeroed (emptied page
/// tables, say): they go straight to their zone, marked as known to be zero, so that a
/// later zeroed allocation need not clear them again.
pub fn free_frames_zeroed(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::ZoneZeroed)
}

/// Where a free goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FreeTo {
    /// Single frames to this CPU's batch, runs to their zone.
    Batch,
    /// Everything to its zone.
    Zone,
    /// Everything to its zone, marked as known to be zero.
    ZoneZeroed,
}

/// Like [`free_frames`], but a single frame too goes straight back to its zone's
/// allocator, never to a CPU's batch, so that every free shows in the allocators'
/// summaries at once (the console uses this, with [`alloc_uncached`]).
pub fn free_uncached(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::Zone)
}

fn free_frames_to(start: PhysAddr, npages: usize, to: FreeTo) -> Result<(), FrameError> {
    let base = start.as_u64();
    let limit = base.saturating_add(npages as u64 * FRAME_SIZE);
    // The metadata's frames are never handed out, never freed.
    let meta = super::setup::metadata_range();
    if base < meta.limit && meta.base < limit {
        return Err(FrameError::Metadata { base, npages });
    }
    // The zones' bitmaps show frames that a CPU holds free as allocated: ask the CPUs.
    if let Some(page) = held_by_a_cpu(base, limit) {
        return Err(FrameError::Free(RangeOpError::NotAllocated {
            base,
            npages,
            page,
        }));
    }
    let z = Zone::of(base);
    let not_grown = FrameError::Free(RangeOpError::NotGrown {
        base,
        npages,
        page: base,
    });
    if to == FreeTo::Batch && npages == 1 {
        // Single frames go to this CPU's batch, which checks them like a free.
        let mut cpu = CACHES[cpu_id()].lock();
        let mut zones = FRAMES.lock();
        let pa = zones.zone_mut(z).ok_or(not_grown)?;
        return cpu.batches[z as usize]
            .free(pa, base)
            .map_err(FrameError::Free);
    }
    let mut zones = FRAMES.lock();
    let pa = zones.zone_mut(z).ok_or(not_grown)?;
    let freed = if to == FreeTo::ZoneZeroed {
        pa.free_zeroed(base, npages)
    } else {
        pa.free(base, npages)
    };
    freed.map_err(FrameError::Free)
}

/// The first frame of `[base, limit)` that some CPU holds free: in its page cache, or in
/// a batch of freed frames. Takes the CPUs' locks: do not call it under the zones' lock.
pub fn held_by_a_cpu(base: u64, limit: u64) -> Option<u64> {
    let mut first = None;
    for c in &CACHES {
        let cpu = c.lock();
        let block = cpu.cache.base();
        let mut bits = cpu.cache.cache();
        while bits != 0 {
            let page = block + u64::from(bits.trailing_zeros()) * FRAME_SIZE;
            bits &= bits - 1;
            if base <= page && page < limit {
                first = Some(first.map_or(page, |f: u64| f.min(page)));
            }
        }
        for batch in &cpu.batches {
            for page in batch.pages() {
                if base <= page && page < limit {
                    first = Some(first.map_or(page, |f: u64| f.min(page)));
                }
            }
        }
    }
    first
}

/// Returns every CPU's cached pages to the zones. Returns how many pages came back.
pub fn flush_caches() -> usize {
    let mut returned = 0;
    for c in &CACHES {
        let mut cpu = c.lock();
        let n = cpu.free_pages();
        if n == 0 {
            continue;
        }
        let mut zones = FRAMES.lock();
        for z in Zone::ALL {
            if let Some(pa) = zones.zone_mut(z) {
                cpu.batches[z as usize].flush(pa);
            }
        }
        let zone = cpu.zone;
        if let Some(pa) = zones.zone_mut(zone) {
            cpu.cache
                .flush(pa)
                .unwrap_or_else(|e| panic!("flushing a page cache into {}: {e}", zone.name()));
        }
        returned += n;
    }
    returned
}

/// Frames the CPUs hold free (in page caches and batches of freed frames); the zones'
/// bitmaps show them allocated.
pub struct CpuHeldFrames {
    blocks: [(u64, u64); MAX_CPUS],
    singles: [u64; MAX_CPUS * 3 * FREE_BATCH_PAGES],
    n_singles: usize,
}

impl CpuHeldFrames {
    /// `(base, free)` pairs: the address of a 64-frame block and a bit per frame of it
    /// that a CPU holds free.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let block_bytes = 64 * FRAME_SIZE;
        let singles = self.singles[..self.n_singles]
            .iter()
            .map(move |&p| (p & !(block_bytes - 1), 1u64 << ((p / FRAME_SIZE) % 64)));
        self.blocks.iter().copied().chain(singles)
    }
}

/// What the CPUs hold free, read under their locks.
pub fn cached_blocks() -> CpuHeldFrames {
    let mut held = CpuHeldFrames {
        blocks: [(0, 0); MAX_CPUS],
        singles: [0; MAX_CPUS * 3 * FREE_BATCH_PAGES],
        n_singles: 0,
    };
    for (i, c) in CACHES.iter().enumerate() {
        let cpu = c.lock();
        held.blocks[i] = (cpu.cache.base(), cpu.cache.cache());
        for page in cpu.batches.iter().flat_map(FreeBatch::pages) {
            held.singles[held.n_singles] = page;
            held.n_singles += 1;
        }
    }
    held
}

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
    /// Free pages held by CPU caches.
    pub cached_pages: usize,
    /// Pages handed out.
    pub used_pages: usize,
    /// Bytes of allocator metadata.
    pub metadata_bytes: usize,
    /// The longest free run in any zone.
    pub largest_free_run: usize,
    /// Per zone, lowest first.
    pub zones: [ZoneStats; 3],
}

/// The allocator's counts. The caches are read first, then the zones.
pub fn stats() -> FrameStats {
    let cached_pages: usize = CACHES.iter().map(|c| c.lock().free_pages()).sum();
    let zones = FRAMES.lock();
    let mut s = FrameStats {
        cached_pages,
        ..FrameStats::default()
    };
    for z in Zone::ALL {
        if let Some(pa) = &zones.zones[z as usize] {
            let zs = ZoneStats {
                total_pages: pa.total_pages(),
                free_pages: pa.free_pages(),
                largest_free_run: pa.largest_free_run(),
                metadata_bytes: pa.metadata_bytes(),
            };
            s.total_pages += zs.total_pages;
            s.free_pages += zs.free_pages;
            s.metadata_bytes += zs.metadata_bytes;
            s.largest_free_run = s.largest_free_run.max(zs.largest_free_run);
            s.zones[z as usize] = zs;
        }
    }
    s.free_pages += cached_pages;
    s.used_pages = s.total_pages - s.free_pages;
    s
}

/// Runs the allocator's full consistency check on every zone.
pub fn check_invariants() -> Result<(), (Zone, InvariantError)> {
    let zones = FRAMES.lock();
    for z in Zone::ALL {
        if let Some(pa) = &zones.zones[z as usize] {
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
    f(&FRAMES.lock())
}

/// `x86_64`'s frame traits on top of the frame API, for its page-table code. Frames it
/// allocates belong to whoever maps them (here: the page tables).
pub struct GlobalFrameAllocator;

// SAFETY: every frame returned is allocated from the page allocator and handed out once.
unsafe impl FrameAllocator<Size4KiB> for GlobalFrameAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        alloc_frame().ok().map(|f| f.into_raw().0)
    }
}

// SAFETY: as above; a 2 MiB frame is 512 frames aligned to 2 MiB.
unsafe impl FrameAllocator<Size2MiB> for GlobalFrameAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size2MiB>> {
        let f = alloc_huge_frame().ok()?;
        let huge = f.huge_frame().expect("a 2 MiB-aligned run of 512 frames");
        let _ = f.into_raw();
        Some(huge)
    }
}

impl FrameDeallocator<Size4KiB> for GlobalFrameAllocator {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // The trait cannot report an error; a refused free changes nothing, so say so.
        if let Err(e) = free_frames(frame.start_address(), 1) {
            crate::serial_println!("frame deallocator: {e}");
        }
    }
}
