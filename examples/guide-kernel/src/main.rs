//! The kernel of `kernel/pagealloc/GUIDE.md` section 10: the smallest kernel booted by
//! bootloader 0.11 that builds a `pagealloc::PageAlloc` over the usable memory and hands out
//! frames through `x86_64`'s frame traits. The guide quotes this file; `./run-qemu.sh test`
//! boots it (`cargo kguide`) and checks both its output and that the quotes are verbatim.
//!
//! It then tests what the guide promises: a page mapped with frames from the allocator
//! works, and every frame the allocator hands out lies in usable memory, away from the
//! kernel image, the boot information and the live page tables (it writes to all of them).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt::{self, Write};

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use bootloader_api::{BootInfo, entry_point};
use core::sync::atomic::AtomicU64;

use pagealloc::{AddrRange, Constraints, Contents, MetadataLayout, PageAlloc};
use x86_64::instructions::port::Port;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags,
    PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

const PAGE: u64 = 4096;

/// Writes to COM1 (a real kernel uses the `uart_16550` crate; this stays short).
struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: 0x3f8 (data) and 0x3fd (line status) are COM1's registers.
            unsafe {
                while Port::<u8>::new(0x3fd).read() & 0x20 == 0 {}
                Port::<u8>::new(0x3f8).write(b);
            }
        }
        Ok(())
    }
}

/// `println!` on COM1.
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = writeln!(Serial, $($arg)*);
    }};
}

// Step 0: ask the bootloader to map all physical memory (at an address it picks); the
// allocator's metadata and every frame are reached through that mapping.
const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};
entry_point!(main, config = &CONFIG);

/// Usable regions this kernel keeps track of (no heap yet, so a fixed array).
const MAX_REGIONS: usize = 64;

fn main(boot_info: &'static mut BootInfo) -> ! {
    let phys_offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("CONFIG asks the bootloader to map physical memory");

    // Step 1: the usable regions, in whole pages, without page 0.
    let mut regions = [AddrRange::new(0, 0); MAX_REGIONS];
    let usable = usable_regions(&boot_info.memory_regions, &mut regions);

    // Step 2: size the metadata for the usable memory (nothing else is ever grown).
    let layout = MetadataLayout::for_regions(usable).expect("memory inside the address space");
    let bytes = (layout.bytes() as u64).next_multiple_of(PAGE);

    // Step 3: take the metadata from the top of the highest usable region with room,
    // reach it through the physical-memory mapping, build and grow the allocator, and
    // reserve the metadata's own frames.
    let home = usable
        .iter()
        .rev()
        .find(|r| r.size() >= bytes)
        .expect("a usable region big enough for the metadata");
    let meta = AddrRange::new(home.limit - bytes, home.limit);
    // SAFETY: `meta` is usable RAM that nothing uses yet (no allocator exists that could
    // have handed it out), and CONFIG made the bootloader map all physical memory at
    // `phys_offset`. It is page aligned, so aligned for `AtomicU64`, and holds
    // `layout.words()` of them; zeroing it first makes each an initialised value. Only
    // the allocator uses this memory from now on.
    let metadata = unsafe {
        let words = (phys_offset + meta.base) as *mut AtomicU64;
        core::ptr::write_bytes(words, 0, layout.words());
        core::slice::from_raw_parts_mut(words, layout.words())
    };
    // The crate splits the words into its arrays itself.
    let mut pa = PageAlloc::new(layout, metadata).expect("metadata as long as the layout says");
    for r in usable {
        pa.grow(*r, Contents::Unknown) // boot RAM is not known to be zero
            .expect("usable regions do not overlap");
    }
    pa.alloc_range(meta.base, (bytes / PAGE) as usize)
        .expect("the metadata frames are free");

    println!(
        "guide-kernel: {} usable regions, {} frames; metadata {} bytes at {:#x}..{:#x}",
        usable.len(),
        pa.total_pages(),
        bytes,
        meta.base,
        meta.limit
    );
    let mut frames = Frames(pa);
    map_a_page(&mut frames, phys_offset);
    hand_out_everything(
        &mut frames,
        phys_offset,
        boot_info.kernel_addr,
        boot_info.kernel_len,
    );
    let huge: PhysFrame<Size2MiB> = frames.allocate_frame().expect("a free 2 MiB frame");
    println!("guide-kernel: a 2 MiB frame at {:#x}", huge.start_address());
    frames
        .0
        .check_invariants()
        .expect("the allocator's invariants");
    println!("guide-kernel: invariants hold; every check passed");
    exit_qemu(0x10)
}

/// Step 1: the usable regions of the memory map, page aligned, page 0 left out (so that
/// physical address 0 is never a frame), into `out`. A region that starts where the one
/// before it ended joins it.
fn usable_regions<'a>(map: &[MemoryRegion], out: &'a mut [AddrRange]) -> &'a [AddrRange] {
    let mut n = 0;
    for r in map.iter().filter(|r| r.kind == MemoryRegionKind::Usable) {
        let base = r.start.max(PAGE).next_multiple_of(PAGE);
        let limit = r.end & !(PAGE - 1);
        if base >= limit {
            continue;
        }
        if n > 0 && out[n - 1].limit == base {
            out[n - 1].limit = limit; // UEFI's map has many neighbours: join them
        } else {
            assert!(n < out.len(), "more than {} usable regions", out.len());
            out[n] = AddrRange::new(base, limit);
            n += 1;
        }
    }
    &out[..n]
}

// Step 4: x86_64's frame traits on the allocator. (A kernel with interrupts or several
// CPUs keeps the allocator in a static behind a spin lock, taken with interrupts off.)
struct Frames<'m>(PageAlloc<'m>);

// SAFETY: the allocator hands out each free frame once, and only grown (usable) memory.
unsafe impl FrameAllocator<Size4KiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let a = self.0.alloc(1).ok()?;
        Some(PhysFrame::containing_address(PhysAddr::new(a.base)))
    }
}

// SAFETY: as above; the constraint makes the 512 frames one aligned 2 MiB frame.
unsafe impl FrameAllocator<Size2MiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size2MiB>> {
        let a = self
            .0
            .alloc_constrained(512, Constraints::aligned(512))
            .ok()?;
        PhysFrame::from_start_address(PhysAddr::new(a.base)).ok()
    }
}

impl FrameDeallocator<Size4KiB> for Frames<'_> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // The trait cannot report errors; a refused free changed nothing.
        if let Err(e) = self.0.free(frame.start_address().as_u64(), 1) {
            panic!("frame deallocator: {e}");
        }
    }
}

/// Maps a fresh page in the live page tables with frames from the allocator (for the page
/// and for the page tables the mapping needs), writes through it, and unmaps it.
fn map_a_page(frames: &mut Frames, phys_offset: u64) {
    let l4_phys = Cr3::read().0.start_address().as_u64();
    // SAFETY: CR3 holds the live PML4, mapped at `phys_offset + l4_phys`; nothing else
    // touches the page tables while this mapper exists.
    let mut mapper = unsafe {
        let l4 = &mut *((phys_offset + l4_phys) as *mut PageTable);
        OffsetPageTable::new(l4, VirtAddr::new(phys_offset))
    };
    // A page in the first unused top-level entry of the lower half: nothing lives there.
    let l4_index = (1..256)
        .find(|&i| mapper.level_4_table()[i].is_unused())
        .expect("an unused top-level entry");
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new((l4_index as u64) << 39));
    let before = frames.0.free_pages();
    let frame: PhysFrame<Size4KiB> = frames.allocate_frame().expect("a frame");
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the page was unmapped and the frame is ours alone.
    unsafe { mapper.map_to(page, frame, flags, frames) }
        .expect("an unmapped page")
        .flush();
    let through_page = page.start_address().as_mut_ptr::<u64>();
    let through_phys = (phys_offset + frame.start_address().as_u64()) as *const u64;
    // SAFETY: both point at the frame just mapped, which nothing else uses.
    let read = unsafe {
        through_page.write_volatile(0xdead_beef);
        through_phys.read_volatile()
    };
    assert_eq!(read, 0xdead_beef, "the write through the new page");
    let tables = before - frames.0.free_pages() - 1;
    let (frame, flush) = mapper.unmap(page).expect("the page just mapped");
    flush.flush();
    // SAFETY: the frame is unmapped and nothing refers to it.
    unsafe { frames.deallocate_frame(frame) };
    println!(
        "guide-kernel: mapped page {:#x} to frame {:#x} ({tables} new page tables from the allocator), wrote and read back through both",
        page.start_address(),
        frame.start_address()
    );
}

/// Allocates every free frame, checks it is usable memory and none of the kernel image
/// or the live PML4, writes all of it, chains the frames through their first word, then
/// checks the chain and frees them all.
fn hand_out_everything(frames: &mut Frames, phys_offset: u64, kernel_addr: u64, kernel_len: u64) {
    let pml4 = Cr3::read().0.start_address().as_u64();
    let kernel = kernel_addr..kernel_addr + kernel_len;
    let free = frames.0.free_pages();
    let mut head = None;
    let mut n = 0u64;
    while let Some(frame) = FrameAllocator::<Size4KiB>::allocate_frame(frames) {
        let addr = frame.start_address().as_u64();
        assert!(
            !kernel.contains(&addr),
            "frame {addr:#x} is in the kernel image"
        );
        assert_ne!(addr, pml4, "frame {addr:#x} is the live PML4");
        let p = (phys_offset + addr) as *mut u64;
        // SAFETY: the allocator handed this frame out to us alone; it is mapped at `p`.
        unsafe {
            core::ptr::write_bytes(p.cast::<u8>(), 0xa5, PAGE as usize);
            p.write(head.unwrap_or(u64::MAX));
        }
        head = Some(addr);
        n += 1;
    }
    assert_eq!(n as usize, free, "every free frame handed out");
    let mut next = head;
    while let Some(addr) = next {
        let p = (phys_offset + addr) as *const u64;
        // SAFETY: a frame we hold, written above.
        let (link, last) = unsafe { (p.read(), p.add(511).read()) };
        assert_eq!(
            last, 0xa5a5_a5a5_a5a5_a5a5,
            "frame {addr:#x} was overwritten"
        );
        // SAFETY: we are done with this frame.
        unsafe { frames.deallocate_frame(PhysFrame::containing_address(PhysAddr::new(addr))) };
        next = (link != u64::MAX).then_some(link);
    }
    assert_eq!(frames.0.free_pages(), free, "every frame came back");
    println!(
        "guide-kernel: handed out all {n} free frames, wrote each; none in the kernel image at {:#x} or the PML4 at {pml4:#x}; all freed",
        kernel.start
    );
}

/// Ends the QEMU run: `boot` turns 0x10 into success, anything else into failure.
fn exit_qemu(code: u32) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device, which `boot` adds to every run.
    unsafe { Port::<u32>::new(0xf4).write(code) };
    loop {
        x86_64::instructions::hlt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("guide-kernel: {info}");
    exit_qemu(0x11)
}
