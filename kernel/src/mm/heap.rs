//! The kernel heap: `linked_list_allocator` over a virtual region whose pages are backed
//! by frames from the page allocator and mapped on demand.
//!
//! The heap starts at [`HEAP_INITIAL_BYTES`]. When an allocation does not fit, more
//! frames are mapped at the heap's end (at least doubling it) and the heap is extended,
//! up to [`HEAP_MAX_BYTES`]; past that, or when frames run out, the allocation fails
//! with a message naming the layout and the heap's size, and Rust's allocation-error
//! handler panics. Freed heap memory is reused but never unmapped.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};

use linked_list_allocator::Heap;
use x86_64::VirtAddr;
use x86_64::structures::paging::{Mapper, Page, PageTableFlags, Size4KiB};

use super::frames::{self, FRAME_SIZE, global_frame_allocator};
use super::lock::IrqMutex;
use super::{kernel_pml4, mapper_for};

/// Where the heap starts. One top-level entry (512 GiB) of the upper half that the
/// bootloader leaves alone; `init` checks that it is unused.
pub const HEAP_START: u64 = 0xffff_c000_0000_0000;
/// Bytes mapped at start.
pub const HEAP_INITIAL_BYTES: usize = 64 * 1024;
/// The most the heap grows to.
pub const HEAP_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The kernel's global allocator.
pub struct KernelHeap {
    state: IrqMutex<HeapState>,
}

struct HeapState {
    heap: Heap,
    mapped: usize,
}

/// Heap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes mapped and managed.
    pub size: usize,
    /// Bytes in use.
    pub used: usize,
    /// The most the heap may grow to.
    pub max: usize,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    state: IrqMutex::new(HeapState {
        heap: Heap::empty(),
        mapped: 0,
    }),
};

/// Maps the initial heap. Called by `mm::init`.
pub(super) fn init() {
    let mut st = HEAP.state.lock();
    assert!(st.mapped == 0, "kernel heap initialised twice");
    // SAFETY: only the heap changes the kernel's page tables, under this lock.
    let mapper = unsafe { mapper_for(kernel_pml4()) };
    let entry = &mapper.level_4_table()
        [Page::<Size4KiB>::containing_address(VirtAddr::new(HEAP_START)).p4_index()];
    assert!(
        entry.is_unused(),
        "the heap's top-level page-table entry is already in use"
    );
    let mapped = map_pages(HEAP_START, HEAP_INITIAL_BYTES);
    assert_eq!(
        mapped, HEAP_INITIAL_BYTES,
        "no frames for the initial kernel heap"
    );
    // SAFETY: [HEAP_START, +HEAP_INITIAL_BYTES) was just mapped, writable, for the heap only.
    unsafe { st.heap.init(HEAP_START as *mut u8, HEAP_INITIAL_BYTES) };
    st.mapped = HEAP_INITIAL_BYTES;
}

/// The heap's counts.
pub fn stats() -> HeapStats {
    let st = HEAP.state.lock();
    HeapStats {
        size: st.heap.size(),
        used: st.heap.used(),
        max: HEAP_MAX_BYTES,
    }
}

/// Maps frames at `[start, start + bytes)`; returns how many bytes were mapped before
/// frames or page tables ran out.
fn map_pages(start: u64, bytes: usize) -> usize {
    // SAFETY: only the heap changes the kernel's page tables, and the caller holds the
    // heap's lock.
    let mut mapper = unsafe { mapper_for(kernel_pml4()) };
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    let mut done = 0;
    while done < bytes {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(start + done as u64));
        let Ok(frame) = frames::alloc_frame() else {
            break;
        };
        let (frame, _) = frame.into_raw();
        // SAFETY: the page lies in the heap's region, which nothing else maps, and the
        // frame was just allocated for it alone.
        match unsafe { mapper.map_to(page, frame, flags, &mut global_frame_allocator()) } {
            Ok(flush) => flush.flush(),
            Err(_) => {
                // SAFETY: the frame came from `into_raw` above and was not mapped.
                drop(unsafe { frames::Frames::from_raw(frame, 1) });
                break;
            }
        }
        done += FRAME_SIZE as usize;
    }
    done
}

impl HeapState {
    /// Grows the heap so that `layout` fits; returns whether it grew enough.
    fn grow_for(&mut self, layout: Layout) -> bool {
        // Room for the request, its alignment and the allocator's bookkeeping.
        let need = (layout.size() + layout.align() + 64).next_multiple_of(FRAME_SIZE as usize);
        let room = HEAP_MAX_BYTES - self.mapped;
        let want = need.max(self.mapped).min(room);
        if want < need {
            return false;
        }
        let got = map_pages(HEAP_START + self.mapped as u64, want);
        if got > 0 {
            // SAFETY: the `got` bytes after the heap's top were just mapped for it.
            unsafe { self.heap.extend(got) };
            self.mapped += got;
        }
        got >= need
    }
}

// SAFETY: allocations come from `linked_list_allocator`, which hands out disjoint
// blocks of mapped heap memory that fit the layout; the lock serialises all access.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut st = self.state.lock();
        loop {
            if let Ok(p) = st.heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            if !st.grow_for(layout) {
                crate::serial_println!(
                    "kernel heap: cannot allocate {} bytes (align {}): heap is {} of at most {} bytes, {} in use",
                    layout.size(),
                    layout.align(),
                    st.heap.size(),
                    HEAP_MAX_BYTES,
                    st.heap.used()
                );
                // One more try: growth may have mapped some pages even if not all.
                return st
                    .heap
                    .allocate_first_fit(layout)
                    .map_or(null_mut(), NonNull::as_ptr);
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes a block this allocator returned, with its layout.
            unsafe { self.state.lock().heap.deallocate(p, layout) };
        }
    }
}
