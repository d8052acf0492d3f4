//! The frame API: physical frames from the page allocator, for the rest of the kernel.
//!
//! Frames come from three zones (`zones.rs`), each its own [`pagealloc::PageAlloc`].
//! Single frames go through the CPU's own cache and batch (`percpu.rs`) without the
//! zones' lock; runs of frames, aligned or address-limited requests go to the zones under
//! their lock. Every free is checked: a frame that is free, held by some CPU's cache or
//! batch, or never was managed memory is refused with an error, and nothing changes.
//! Freed frames are poisoned in debug builds (`poison.rs`).

use core::fmt;

use pagealloc::{AllocError, Allocation, Constraints, RangeOpError};
use pagealloc_x86_64::FrameSource;
use x86_64::PhysAddr;
use x86_64::structures::paging::{PhysFrame, Size2MiB};

use super::percpu;
use super::phys_to_virt;
use super::poison;
pub use super::stats::{
    FrameStats, ZoneStats, assert_invariants, check_invariants, cpu_stats, for_each_held_frame,
    held_by_a_cpu, stats, with_zones,
};
pub use super::zones::{DMA_LIMIT, DMA32_LIMIT, PerZone, Zone, Zones};
use super::zones::{ZONES, metadata_range};

/// Bytes in a 4 KiB frame.
pub const FRAME_SIZE: u64 = 4096;
/// Pages in a 2 MiB frame.
pub const HUGE_FRAME_PAGES: usize = 512;

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
        /// Free pages left in all zones and CPU caches (the caches were flushed first).
        free_pages: usize,
    },
    /// The allocator refused the request (zero pages, bad alignment, ...).
    Alloc(AllocError),
    /// The allocator refused a free (double free, foreign address, ...).
    Free(RangeOpError),
    /// A frame about to be handed out was written to after it was freed (see
    /// `poison.rs`).
    WriteAfterFree(super::poison::WriteAfterFree),
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
            FrameError::WriteAfterFree(w) => write!(f, "frame allocator: {w}"),
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

    /// Splits the frames in two: `self` keeps the first `npages`, the rest is returned;
    /// `None` (and nothing changes) unless `0 < npages < self.npages()`. Each part counts
    /// as known zero only if all of the frames were.
    pub fn split_off(&mut self, npages: usize) -> Option<Frames> {
        if npages == 0 || npages >= self.npages {
            return None;
        }
        let all_zero = self.zeroed_pages == self.npages;
        let tail = Frames {
            start: self.start + npages as u64 * FRAME_SIZE,
            npages: self.npages - npages,
            zeroed_pages: if all_zero { self.npages - npages } else { 0 },
        };
        self.npages = npages;
        self.zeroed_pages = if all_zero { npages } else { 0 };
        Some(tail)
    }

    /// Frees the frames straight to their zone, as [`free_uncached`] does; on a refusal
    /// the handle comes back with the error, still owning the frames.
    pub fn free_uncached(self) -> Result<(), (Frames, FrameError)> {
        match free_uncached(self.start, self.npages) {
            Ok(()) => {
                core::mem::forget(self);
                Ok(())
            }
            Err(e) => Err((self, e)),
        }
    }

    /// Gives up ownership without freeing, e.g. for a frame handed to a page table.
    pub fn into_raw(self) -> (PhysFrame, usize) {
        let raw = (self.start_frame(), self.npages);
        core::mem::forget(self);
        raw
    }

    /// Takes ownership of frames released with [`Frames::into_raw`]. Only memory
    /// management may do this (page tables it frees, the heap's rollback): anywhere else
    /// a handle could be forged for frames someone else owns.
    ///
    /// # Safety
    /// The frames must be allocated, and nothing else may use or free them afterwards.
    pub(in crate::mm) unsafe fn from_raw(start: PhysFrame, npages: usize) -> Frames {
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

/// Allocates frames as `req` says. Single unconstrained frames come from this CPU's cache;
/// anything else from the zones, lowest fit in the first zone that has one.
pub fn alloc(req: FrameRequest) -> Result<Frames, FrameError> {
    let f = if is_single(req) {
        alloc_one()?
    } else {
        match alloc_from_zones(req, None) {
            // Free frames may sit in CPUs' caches and batches: return them, try once more.
            Err(FrameError::OutOfMemory { .. }) if percpu::flush_all() > 0 => {
                alloc_from_zones(req, None)?
            }
            r => r?,
        }
    };
    checked(f)
}

fn is_single(req: FrameRequest) -> bool {
    req.npages == 1 && req.align_pages == 1 && req.limit.is_none()
}

/// Hands `f` out only if no one wrote to its frames while they were free.
fn checked(f: Frames) -> Result<Frames, FrameError> {
    let (base, npages) = (f.start.as_u64(), f.npages);
    match poison::check(base, npages) {
        Ok(()) => Ok(f),
        Err(w) => {
            // Keep the frames out of circulation: they hold someone's stray write.
            core::mem::forget(f);
            Err(FrameError::WriteAfterFree(w))
        }
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
/// checked for poison and cleared, outside the allocator's lock.
pub fn alloc_zeroed(req: FrameRequest) -> Result<Frames, FrameError> {
    if is_single(req) {
        let f = alloc_one()?;
        let mut f = if f.zeroed_pages == 0 { checked(f)? } else { f };
        if f.zeroed_pages == 0 {
            f.zero();
        }
        return Ok(f);
    }
    let mut dirty = DirtyRuns::default();
    let f = match alloc_from_zones(req, Some(&mut dirty)) {
        Err(FrameError::OutOfMemory { .. }) if percpu::flush_all() > 0 => {
            dirty = DirtyRuns::default();
            alloc_from_zones(req, Some(&mut dirty))?
        }
        r => r?,
    };
    let mut f = if dirty.overflow { checked(f)? } else { f };
    let start = f.start.as_u64();
    if !dirty.overflow {
        for &(base, n) in &dirty.runs[..dirty.len] {
            if let Err(w) = poison::check(base, n) {
                core::mem::forget(f);
                return Err(FrameError::WriteAfterFree(w));
            }
        }
    }
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
    checked(alloc_from_zones(req, None)?)
}

fn alloc_one() -> Result<Frames, FrameError> {
    let frame = |(addr, zeroed): (u64, bool)| Frames {
        start: PhysAddr::new(addr),
        npages: 1,
        zeroed_pages: usize::from(zeroed),
    };
    if let Some(got) = percpu::alloc_one() {
        return Ok(frame(got));
    }
    if ZONES.lock().zones.iter().all(Option::is_none) {
        return Err(FrameError::Uninitialised);
    }
    // Nothing in the zones: other CPUs' caches may still hold frames.
    if percpu::flush_all() > 0 {
        return alloc_from_zones(FrameRequest::pages(1), None);
    }
    Err(out_of_memory(FrameRequest::pages(1)))
}

fn alloc_from_zones(
    req: FrameRequest,
    mut dirty: Option<&mut DirtyRuns>,
) -> Result<Frames, FrameError> {
    let mut zones = ZONES.lock();
    if zones.zones.iter().all(Option::is_none) {
        return Err(FrameError::Uninitialised);
    }
    for z in Zone::FALLBACK {
        let (zone_base, _) = z.range();
        if req.limit.is_some_and(|l| l <= zone_base) {
            continue;
        }
        let Some(pa) = zones.zone_mut(z) else {
            continue;
        };
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
/// changing anything, frames that are not handed out (free, or held by a CPU's cache or
/// batch: a double free), not managed memory (a foreign address), or the allocator's own
/// metadata. A single frame goes to this CPU's batch without the zones' lock.
pub fn free_frames(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::Batch)
}

/// Like [`free_frames`] for frames whose contents the caller has zeroed (emptied page
/// tables, say): they go straight to their zone, marked as known to be zero, so that a
/// later zeroed allocation need not clear them again.
pub fn free_frames_zeroed(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::ZoneZeroed)
}

/// Like [`free_frames`], but a single frame too goes straight back to its zone's
/// allocator, never to a CPU's batch, so that every free shows in the allocators'
/// summaries at once (the console uses this, with [`alloc_uncached`]).
pub fn free_uncached(start: PhysAddr, npages: usize) -> Result<(), FrameError> {
    free_frames_to(start, npages, FreeTo::Zone)
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

fn free_frames_to(start: PhysAddr, npages: usize, to: FreeTo) -> Result<(), FrameError> {
    let base = start.as_u64();
    let limit = base.saturating_add((npages as u64).saturating_mul(FRAME_SIZE));
    // The metadata's frames are never handed out, never freed.
    let meta = metadata_range();
    if npages > 0 && base < meta.limit && meta.base < limit {
        return Err(FrameError::Metadata { base, npages });
    }
    let z = Zone::of(base);
    if to == FreeTo::Batch && npages == 1 {
        return percpu::free_one(z, base).map_err(|e| explain(z, base, npages, e));
    }
    if poison::ENABLED && to != FreeTo::ZoneZeroed {
        // Poison only frames the free will accept: check first, under the lock.
        check_free(z, base, npages)?;
        poison::fill(base, npages);
    }
    let mut zones = ZONES.lock();
    let pa = zones
        .zone_mut(z)
        .ok_or(FrameError::Free(RangeOpError::NotGrown {
            base,
            npages,
            page: base,
        }))?;
    let freed = if to == FreeTo::ZoneZeroed {
        pa.free_zeroed(base, npages)
    } else {
        pa.free(base, npages)
    };
    freed.map_err(FrameError::Free)
}

/// Whether zone `z` would accept a free of `[base, +npages)` now.
fn check_free(z: Zone, base: u64, npages: usize) -> Result<(), FrameError> {
    let zones = ZONES.lock();
    match zones.zone(z) {
        Some(pa) => pa.check_free(base, npages).map_err(FrameError::Free),
        None => Err(FrameError::Free(RangeOpError::NotGrown {
            base,
            npages,
            page: base,
        })),
    }
}

/// Turns a lock-free refusal into the zone's precise reason (not grown, free, or held
/// by a cache or batch), under the zones' lock.
fn explain(z: Zone, base: u64, npages: usize, lock_free: RangeOpError) -> FrameError {
    match check_free(z, base, npages) {
        Err(e) => e,
        // The frame changed hands since: the lock-free reason is the one that held.
        Ok(()) => FrameError::Free(lock_free),
    }
}

/// Returns every CPU's cached and batched frames to the zones. Returns how many frames
/// came back.
pub fn flush_caches() -> usize {
    percpu::flush_all()
}

/// The kernel's frames as a source for `pagealloc_x86_64`: the zones with their per-CPU
/// caches and batches (the frame API above), so page tables take frames on the same
/// paths as everything else.
#[derive(Clone, Copy, Debug)]
pub struct KernelFrames;

impl FrameSource for KernelFrames {
    type Error = FrameError;

    fn alloc_4k(&self) -> Option<u64> {
        alloc_frame()
            .ok()
            .map(|f| f.into_raw().0.start_address().as_u64())
    }

    fn alloc_2m(&self) -> Option<u64> {
        let f = alloc_huge_frame().ok()?;
        let huge = f.huge_frame().expect("a 2 MiB-aligned run of 512 frames");
        let _ = f.into_raw();
        Some(huge.start_address().as_u64())
    }

    fn free(&self, base: u64, npages: usize) -> Result<(), FrameError> {
        free_frames(PhysAddr::new(base), npages)
    }

    /// A refused free changed nothing; the trait cannot report it, so say so.
    fn refused(&self, base: u64, npages: usize, err: FrameError) {
        crate::serial_println!("frame deallocator: {npages} frames at {base:#x}: {err}");
    }
}

/// `x86_64`'s frame traits (4 KiB and 2 MiB) on top of the frame API, for its page-table
/// code. Frames it allocates belong to whoever maps them (here: the page tables).
pub type GlobalFrameAllocator = pagealloc_x86_64::Frames<KernelFrames>;

/// The allocator to hand to `x86_64`'s mapper.
pub const fn global_frame_allocator() -> GlobalFrameAllocator {
    pagealloc_x86_64::Frames(KernelFrames)
}
