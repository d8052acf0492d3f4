//! The adapter over a locked allocator: frames come out aligned and in address order,
//! go back, and a refused free reaches `FrameSource::refused`.

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use pagealloc::{AddrRange, Contents, MetadataLayout, PageAlloc, RangeOpError};
use pagealloc_x86_64::{FrameSource, Frames};
use spin::Mutex;
use x86_64::PhysAddr;
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size2MiB, Size4KiB};

const MIB: u64 = 1 << 20;

fn zone(region: AddrRange) -> Mutex<PageAlloc<'static>> {
    let layout = MetadataLayout::for_regions(&[region]).unwrap();
    let md = Vec::leak((0..layout.words()).map(|_| AtomicU64::new(0)).collect());
    let mut pa = PageAlloc::new(layout, md).unwrap();
    pa.grow(region, Contents::Unknown).unwrap();
    Mutex::new(pa)
}

#[test]
fn huge_frames_are_aligned_and_exhaust_cleanly() {
    // 3 MiB to 9 MiB holds exactly two aligned 2 MiB frames (4 and 6 MiB).
    let z = zone(AddrRange::new(3 * MIB, 9 * MIB));
    let mut f = Frames(&z);
    let a: PhysFrame<Size2MiB> = f.allocate_frame().unwrap();
    let b: PhysFrame<Size2MiB> = f.allocate_frame().unwrap();
    assert_eq!(
        (a.start_address().as_u64(), b.start_address().as_u64()),
        (4 * MIB, 6 * MIB)
    );
    assert_eq!(FrameAllocator::<Size2MiB>::allocate_frame(&mut f), None);
    // Small frames still come from the unaligned rest, lowest first.
    let s: PhysFrame<Size4KiB> = f.allocate_frame().unwrap();
    assert_eq!(s.start_address().as_u64(), 3 * MIB);
    unsafe { f.deallocate_frame(a) };
    assert_eq!(
        FrameAllocator::<Size2MiB>::allocate_frame(&mut f).map(|p| p.start_address().as_u64()),
        Some(4 * MIB)
    );
}

#[test]
#[should_panic(expected = "is not allocated (double free?)")]
fn a_double_free_panics_by_default() {
    let z = zone(AddrRange::new(0, 2 * MIB));
    let mut f = Frames(&z);
    let a: PhysFrame<Size4KiB> = f.allocate_frame().unwrap();
    unsafe {
        f.deallocate_frame(a);
        f.deallocate_frame(a);
    }
}

/// A source that records refused frees instead of panicking.
struct Logging<'a> {
    zone: &'a Mutex<PageAlloc<'static>>,
    refused: RefCell<Vec<(u64, usize, RangeOpError)>>,
}

impl FrameSource for Logging<'_> {
    type Error = RangeOpError;

    fn alloc_4k(&self) -> Option<u64> {
        self.zone.alloc_4k()
    }
    fn alloc_2m(&self) -> Option<u64> {
        self.zone.alloc_2m()
    }
    fn free(&self, base: u64, npages: usize) -> Result<(), RangeOpError> {
        self.zone.free(base, npages)
    }
    fn refused(&self, base: u64, npages: usize, err: RangeOpError) {
        self.refused.borrow_mut().push((base, npages, err));
    }
}

#[test]
fn a_refused_free_reaches_the_hook_and_changes_nothing() {
    let z = zone(AddrRange::new(0, 4 * MIB));
    let src = Logging {
        zone: &z,
        refused: RefCell::new(Vec::new()),
    };
    let mut f = Frames(&src);
    let free_before = z.lock().free_pages();
    let never: PhysFrame<Size2MiB> = PhysFrame::from_start_address(PhysAddr::new(2 * MIB)).unwrap();
    unsafe { f.deallocate_frame(never) };
    let log = src.refused.borrow();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].0, log[0].1), (2 * MIB, 512));
    assert!(matches!(log[0].2, RangeOpError::NotAllocated { page, .. } if page == 2 * MIB));
    assert_eq!(z.lock().free_pages(), free_before);
}
