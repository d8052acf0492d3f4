//! Memory management: physical frames from the page allocator (`pagealloc`), the kernel
//! heap on top of them, and process address spaces.
//!
//! The bootloader maps all of physical memory at an offset in the upper half (see
//! [`crate::BOOTLOADER_CONFIG`]); the kernel reaches any frame, including the page
//! allocator's own metadata and every page table, through that mapping. The lower half
//! of the address space is left to user address spaces, which is why the mapping is at
//! an offset rather than at address 0.

pub mod address_space;
pub mod frames;
pub mod heap;
pub mod lock;
mod percpu;
pub mod poison;
pub mod setup;
mod stats;
mod zones;

use spin::Once;
use x86_64::structures::paging::{OffsetPageTable, PageTable, PhysFrame};
use x86_64::{PhysAddr, VirtAddr};

pub use address_space::AddressSpace;
pub use frames::{
    FRAME_SIZE, FrameError, FrameRequest, FrameStats, Frames, GlobalFrameAllocator, KernelFrames,
    Zone, alloc, alloc_frame, alloc_frames, alloc_huge_frame, alloc_zeroed, free_frames,
    global_frame_allocator, stats,
};
pub use pagealloc;
pub use setup::{InitReport, init, init_report};
pub use stats::{CpuStats, cpu_stats};

static PHYS_OFFSET: Once<VirtAddr> = Once::new();
static KERNEL_PML4: Once<PhysFrame> = Once::new();

/// Where physical address 0 is mapped. Panics before [`init`].
pub fn phys_offset() -> VirtAddr {
    *PHYS_OFFSET.get().expect("mm::init has not run")
}

/// The virtual address at which physical address `addr` can be reached.
pub fn phys_to_virt(addr: PhysAddr) -> VirtAddr {
    phys_offset() + addr.as_u64()
}

/// The kernel's own top-level page table (the one the bootloader left in CR3).
pub fn kernel_pml4() -> PhysFrame {
    *KERNEL_PML4.get().expect("mm::init has not run")
}

/// The physical address that the kernel's page tables map `addr` to, if any.
pub fn translate(addr: VirtAddr) -> Option<PhysAddr> {
    use x86_64::structures::paging::Translate;
    // SAFETY: the mapper only reads the tables and lives only for this call, which does
    // not allocate, so the heap (the only code that changes these tables) cannot grow.
    let mapper = unsafe { mapper_for(kernel_pml4()) };
    mapper.translate_addr(addr)
}

/// A mapper over the page table whose top level is in `pml4`.
///
/// # Safety
/// `pml4` must be a valid top-level page table that nothing else changes while the
/// mapper lives.
pub(crate) unsafe fn mapper_for(pml4: PhysFrame) -> OffsetPageTable<'static> {
    let table = phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>();
    // SAFETY: the caller guarantees exclusive use of a valid table, which the physical
    // memory mapping makes reachable at this address.
    unsafe { OffsetPageTable::new(&mut *table, phys_offset()) }
}
