#![doc = include_str!("../README.md")]
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::Display;

use pagealloc::{Constraints, PageAlloc, RangeOpError};
use x86_64::PhysAddr;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, PageSize, PhysFrame, Size2MiB, Size4KiB,
};

/// Pages of 4 KiB in a 2 MiB frame.
const HUGE_PAGES: usize = (Size2MiB::SIZE / Size4KiB::SIZE) as usize;

/// Where [`Frames`] takes frames from and returns them to.
///
/// Implementations hand out only frames that nobody else uses, and each at most once
/// until it is freed: [`Frames`] promises the same to the `x86_64` crate on that basis.
/// `pagealloc` keeps that promise for every `PageAlloc` (its handed-out bits refuse to
/// hand a page out twice), so an implementation that only forwards to one is correct.
pub trait FrameSource {
    /// Why a free was refused.
    type Error: Display;

    /// The address of a free 4 KiB frame, now handed out; `None` when memory is full.
    fn alloc_4k(&self) -> Option<u64>;

    /// The address of 512 free frames aligned to 2 MiB, now handed out; `None` when no
    /// such run is free.
    fn alloc_2m(&self) -> Option<u64>;

    /// Takes back `npages` frames from `base`, which must all be handed out.
    fn free(&self, base: u64, npages: usize) -> Result<(), Self::Error>;

    /// Called when [`FrameDeallocator::deallocate_frame`], which cannot return an error,
    /// had a free refused (nothing was changed). Panics by default: the caller broke the
    /// trait's contract (a double free, or a frame this allocator never handed out).
    fn refused(&self, base: u64, npages: usize, err: Self::Error) {
        panic!("pagealloc-x86_64: free of {npages} frames at {base:#x} refused: {err}");
    }
}

impl<S: FrameSource + ?Sized> FrameSource for &S {
    type Error = S::Error;

    fn alloc_4k(&self) -> Option<u64> {
        (**self).alloc_4k()
    }

    fn alloc_2m(&self) -> Option<u64> {
        (**self).alloc_2m()
    }

    fn free(&self, base: u64, npages: usize) -> Result<(), S::Error> {
        (**self).free(base, npages)
    }

    fn refused(&self, base: u64, npages: usize, err: S::Error) {
        (**self).refused(base, npages, err)
    }
}

/// One allocator behind a spin lock: every call takes the lock once.
impl<'m> FrameSource for spin::Mutex<PageAlloc<'m>> {
    type Error = RangeOpError;

    fn alloc_4k(&self) -> Option<u64> {
        self.lock().alloc(1).ok().map(|a| a.base)
    }

    fn alloc_2m(&self) -> Option<u64> {
        self.lock()
            .alloc_constrained(HUGE_PAGES, Constraints::aligned(HUGE_PAGES))
            .ok()
            .map(|a| a.base)
    }

    fn free(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.lock().free(base, npages)
    }
}

/// The `x86_64` crate's frame allocator and deallocator over a [`FrameSource`], for
/// 4 KiB and 2 MiB frames.
#[derive(Clone, Copy, Debug)]
pub struct Frames<S>(pub S);

// SAFETY: `FrameSource` implementations hand out only unused frames, each once until it
// is freed (see the trait), and `alloc_4k` gives page-aligned addresses.
unsafe impl<S: FrameSource> FrameAllocator<Size4KiB> for Frames<S> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let base = self.0.alloc_4k()?;
        Some(PhysFrame::from_start_address(PhysAddr::new(base)).expect("a 4 KiB-aligned frame"))
    }
}

// SAFETY: as above; `alloc_2m` gives 512 unused frames aligned to 2 MiB.
unsafe impl<S: FrameSource> FrameAllocator<Size2MiB> for Frames<S> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size2MiB>> {
        let base = self.0.alloc_2m()?;
        Some(PhysFrame::from_start_address(PhysAddr::new(base)).expect("a 2 MiB-aligned frame"))
    }
}

impl<S: FrameSource> FrameDeallocator<Size4KiB> for Frames<S> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let base = frame.start_address().as_u64();
        if let Err(e) = self.0.free(base, 1) {
            self.0.refused(base, 1, e);
        }
    }
}

impl<S: FrameSource> FrameDeallocator<Size2MiB> for Frames<S> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size2MiB>) {
        let base = frame.start_address().as_u64();
        if let Err(e) = self.0.free(base, HUGE_PAGES) {
            self.0.refused(base, HUGE_PAGES, e);
        }
    }
}
