//! Process address spaces: a top-level page table of their own whose upper half is the
//! kernel's, and whose lower half holds user pages.
//!
//! Every frame an address space uses (its tables and its user pages) comes from the
//! frame allocator, and dropping the address space returns every one of them.

use core::fmt;

use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MapToError, UnmapError};
use x86_64::structures::paging::{
    Mapper, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::frames::{self, FrameError, FrameRequest, Frames, global_frame_allocator};
use super::lock::IrqMutex;
use super::{kernel_pml4, mapper_for, phys_to_virt};

/// Top-level entries of the lower (user) half.
const USER_ENTRIES: usize = 256;

/// How many live address spaces [`for_each_live`] can report.
pub const MAX_TRACKED: usize = 32;

/// The top-level tables of the live address spaces, for code that looks at every page
/// table (the memory picture). An address space made while all slots are taken is not
/// tracked; nothing else depends on this list.
static LIVE: IrqMutex<[Option<PhysFrame>; MAX_TRACKED]> = IrqMutex::new([None; MAX_TRACKED]);

/// Calls `f` with the top-level table of every live address space (up to
/// [`MAX_TRACKED`]). None of them is dropped while `f` runs, which is with interrupts
/// off: keep it short.
pub fn for_each_live(mut f: impl FnMut(PhysFrame)) {
    for pml4 in LIVE.lock().iter().flatten() {
        f(*pml4);
    }
}

/// Why a mapping operation failed.
#[derive(Debug)]
pub enum MapError {
    /// The page is not in the user half of the address space.
    NotUserAddress(VirtAddr),
    /// No frame for the page or its tables.
    Frames(FrameError),
    /// The page is already mapped.
    AlreadyMapped(VirtAddr),
    /// The page is not mapped.
    NotMapped(VirtAddr),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NotUserAddress(a) => {
                write!(f, "{:#x} is not a user address (lower half)", a.as_u64())
            }
            MapError::Frames(e) => write!(f, "{e}"),
            MapError::AlreadyMapped(a) => write!(f, "{:#x} is already mapped", a.as_u64()),
            MapError::NotMapped(a) => write!(f, "{:#x} is not mapped", a.as_u64()),
        }
    }
}

/// An address space: a top-level page table that shares the kernel's upper half.
pub struct AddressSpace {
    pml4: PhysFrame,
}

impl AddressSpace {
    /// A new, empty address space.
    pub fn new() -> Result<AddressSpace, FrameError> {
        let frame = frames::alloc_zeroed(FrameRequest::pages(1))?;
        let (pml4, _) = frame.into_raw();
        // SAFETY: `pml4` was just allocated and zeroed (an empty table) and is ours alone;
        // the kernel's table is only read.
        unsafe {
            let new = &mut *phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>();
            let kernel = &*phys_to_virt(kernel_pml4().start_address()).as_ptr::<PageTable>();
            for i in USER_ENTRIES..512 {
                new[i] = kernel[i].clone();
            }
        }
        if let Some(slot) = LIVE.lock().iter_mut().find(|s| s.is_none()) {
            *slot = Some(pml4);
        }
        Ok(AddressSpace { pml4 })
    }

    /// The frame of the top-level table (what CR3 holds while this space is active).
    pub fn pml4_frame(&self) -> PhysFrame {
        self.pml4
    }

    /// Maps a fresh, zeroed frame at `page` with `flags` (plus present and user).
    pub fn map_user(&mut self, page: Page, flags: PageTableFlags) -> Result<PhysFrame, MapError> {
        let addr = page.start_address();
        if usize::from(page.p4_index()) >= USER_ENTRIES {
            return Err(MapError::NotUserAddress(addr));
        }
        // Zeroed, so nothing leaks from the frame's previous owner.
        let frame = frames::alloc_zeroed(FrameRequest::pages(1)).map_err(MapError::Frames)?;
        let phys = frame.start_frame();
        let table_flags =
            PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
        let flags = flags | PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE;
        // SAFETY: this address space's tables are changed only through `&mut self`.
        let mut mapper = unsafe { mapper_for(self.pml4) };
        // SAFETY: the page is in the user half, and the frame is fresh and ours alone.
        let result = unsafe {
            mapper.map_to_with_table_flags(
                page,
                phys,
                flags,
                table_flags,
                &mut global_frame_allocator(),
            )
        };
        match result {
            Ok(flush) => {
                let _ = frame.into_raw();
                if self.is_active() {
                    flush.flush();
                } else {
                    flush.ignore();
                }
                Ok(phys)
            }
            Err(MapToError::PageAlreadyMapped(_)) => Err(MapError::AlreadyMapped(addr)),
            Err(MapToError::ParentEntryHugePage) => Err(MapError::AlreadyMapped(addr)),
            Err(MapToError::FrameAllocationFailed) => {
                Err(MapError::Frames(FrameError::OutOfMemory {
                    npages: 1,
                    align_pages: 1,
                    limit: None,
                    free_pages: frames::stats().free_pages,
                }))
            }
        }
    }

    /// Unmaps `page` and frees its frame. Page-table frames are kept until the address
    /// space is dropped.
    pub fn unmap_user(&mut self, page: Page) -> Result<(), MapError> {
        let addr = page.start_address();
        if usize::from(page.p4_index()) >= USER_ENTRIES {
            return Err(MapError::NotUserAddress(addr));
        }
        // SAFETY: this address space's tables are changed only through `&mut self`.
        let mut mapper = unsafe { mapper_for(self.pml4) };
        let (frame, flush): (PhysFrame<Size4KiB>, _) = match mapper.unmap(page) {
            Ok(x) => x,
            Err(UnmapError::PageNotMapped) => return Err(MapError::NotMapped(addr)),
            Err(_) => return Err(MapError::NotMapped(addr)),
        };
        if self.is_active() {
            flush.flush();
        } else {
            flush.ignore();
        }
        // SAFETY: user frames are mapped only here, by `map_user`, which gave up their
        // ownership to this table; the entry is now gone.
        drop(unsafe { Frames::from_raw(frame, 1) });
        Ok(())
    }

    /// The physical address `addr` maps to, if any.
    pub fn translate(&self, addr: VirtAddr) -> Option<PhysAddr> {
        // SAFETY: reading only; `&self` keeps the tables unchanged.
        let mapper = unsafe { mapper_for(self.pml4) };
        mapper.translate_addr(addr)
    }

    /// Whether CR3 points at this address space.
    pub fn is_active(&self) -> bool {
        Cr3::read().0 == self.pml4
    }

    /// Runs `f` with this address space active, then switches back to the one that was.
    pub fn with_active<R>(&self, f: impl FnOnce() -> R) -> R {
        let (previous, flags) = Cr3::read();
        // SAFETY: the upper half, where the kernel's code, data, stacks and the physical
        // memory mapping live, is the kernel's own, so the kernel keeps running unchanged;
        // the previous table is restored before returning.
        unsafe { Cr3::write(self.pml4, flags) };
        let r = f();
        // SAFETY: `previous` was active a moment ago.
        unsafe { Cr3::write(previous, flags) };
        r
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        assert!(!self.is_active(), "dropping the active address space");
        // Untracked first, so nobody walks the tables while they are freed.
        if let Some(slot) = LIVE.lock().iter_mut().find(|s| **s == Some(self.pml4)) {
            *slot = None;
        }
        // SAFETY: the lower half's tables and frames belong to this address space alone,
        // and nothing uses them any more; the upper half's entries are copies of the
        // kernel's, so clearing them leaves the kernel's own tables alone.
        unsafe {
            let pml4 = &mut *phys_to_virt(self.pml4.start_address()).as_mut_ptr::<PageTable>();
            for entry in pml4.iter_mut().take(USER_ENTRIES) {
                if !entry.is_unused() {
                    free_table(entry.addr(), 3);
                    entry.set_unused();
                }
            }
            // With the kernel's half cleared too, the table is all zero: the next zeroed
            // allocation that gets it need not clear it.
            pml4.zero();
        }
        free_empty_table(self.pml4);
    }
}

/// Frees a page-table frame whose entries are all unused (zero).
fn free_empty_table(frame: PhysFrame) {
    if let Err(e) = frames::free_frames_zeroed(frame.start_address(), 1) {
        panic!("freeing page-table frame {:#x}: {e}", frame.start_address());
    }
}

/// Frees the table at `table` (level 3 = PDPT ... level 1 = PT), everything below it,
/// and the frames its leaf entries map.
///
/// # Safety
/// The table and everything it maps must be owned by the address space being dropped.
unsafe fn free_table(table: PhysAddr, level: u8) {
    // SAFETY: the caller owns the table.
    let t = unsafe { &mut *phys_to_virt(table).as_mut_ptr::<PageTable>() };
    for entry in t.iter_mut() {
        if entry.is_unused() {
            continue;
        }
        if level == 1 {
            // SAFETY: a leaf entry of a user table maps a frame from `map_user`.
            drop(unsafe { Frames::from_raw(PhysFrame::containing_address(entry.addr()), 1) });
        } else {
            assert!(
                !entry.flags().contains(PageTableFlags::HUGE_PAGE),
                "user address spaces map only 4 KiB pages"
            );
            // SAFETY: a non-leaf entry points at a table this address space allocated.
            unsafe { free_table(entry.addr(), level - 1) };
        }
        entry.set_unused();
    }
    // Every entry is unused now: the frame is all zero.
    free_empty_table(PhysFrame::containing_address(table));
}
