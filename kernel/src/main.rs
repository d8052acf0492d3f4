//! The kernel binary: boot, describe the machine, exit.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

use bootloader_api::BootInfo;
use kernel::memory_map::{self, Size};
use kernel::qemu::{QemuExitCode, exit_qemu};
use kernel::serial_println;

bootloader_api::entry_point!(kernel_main, config = &kernel::BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);

    let regions = &boot_info.memory_regions;
    serial_println!();
    serial_println!("=== kernel {} ===", env!("CARGO_PKG_VERSION"));
    serial_println!(
        "booted by bootloader {}.{}.{} via {}; kernel image {} at {:#x}",
        boot_info.api_version.version_major(),
        boot_info.api_version.version_minor(),
        boot_info.api_version.version_patch(),
        memory_map::firmware(regions),
        Size(boot_info.kernel_len),
        boot_info.kernel_addr,
    );
    match kernel::physical_memory_offset() {
        Some(offset) => serial_println!("physical memory mapped at {:#x}", offset.as_u64()),
        None => serial_println!("physical memory is not mapped"),
    }
    serial_println!("{}", kernel::smp::summary());
    serial_println!();
    memory_map::print(regions);
    serial_println!();

    allocator_demo();
    // Let the host photograph the final picture, or a person look at it, if they asked.
    kernel::screen::finish();

    let waited = kernel::interrupts::wait_ticks(2);
    serial_println!(
        "timer: {} ticks at {} Hz{}",
        kernel::interrupts::ticks(),
        kernel::interrupts::TIMER_HZ,
        if waited { "" } else { " (timer not running!)" }
    );
    serial_println!("kernel: all done, exiting QEMU with success");
    exit_qemu(QemuExitCode::Success)
}

/// Shows the page allocator at work: what set-up did, a few allocations and frees, the
/// heap growing, an address space created and dropped, and the free count coming back.
fn allocator_demo() {
    use alloc::vec::Vec;
    use kernel::mm::{self, AddressSpace, FrameRequest, Zone};
    use kernel::screen;
    use x86_64::VirtAddr;
    use x86_64::structures::paging::{Page, PageTableFlags};

    let r = mm::init_report().expect("kernel::init sets up memory management");
    serial_println!("== page allocator ==");
    serial_println!(
        "usable memory {} in {} regions; {} grow calls (one per region and zone it falls in)",
        Size(r.usable_bytes),
        r.usable_regions,
        r.grow_calls
    );
    serial_println!(
        "metadata {} at [{:#x}, {:#x}) = {} per GiB; set-up took {} TSC cycles",
        Size(r.metadata_bytes),
        r.metadata.base,
        r.metadata.limit,
        Size(((r.metadata_bytes as u128) << 30).div_ceil(r.usable_bytes as u128) as u64),
        r.tsc_cycles
    );
    let s = mm::stats();
    for z in Zone::ALL {
        let zs = s.zones[z];
        if zs.total_pages > 0 {
            serial_println!(
                "  zone {:<6} {:>8} frames, {:>8} free, largest free run {} frames",
                z.name(),
                zs.total_pages,
                zs.free_pages,
                zs.largest_free_run
            );
        }
    }
    match screen::info() {
        Ok(info) => {
            serial_println!("screen: a picture of physical memory on the framebuffer, {info}")
        }
        Err(why) => serial_println!("screen: no picture of memory: {why}"),
    }
    screen::show(
        "memory management set up: the kernel heap, and the allocator's metadata at the top",
    );

    serial_println!();
    serial_println!("== the heap grows on demand ==");
    let before = mm::heap::stats();
    let v: Vec<u64> = (0..128 * 1024).collect();
    let after = mm::heap::stats();
    screen::show("a Vec of 1 MiB: the heap grew on demand");
    serial_println!(
        "a Vec of {} u64s: heap {} -> {} ({} in use)",
        v.len(),
        Size(before.size as u64),
        Size(after.size as u64),
        Size(after.used as u64)
    );
    drop(v);
    serial_println!(
        "dropped: {} in use; the heap keeps its pages for reuse",
        Size(mm::heap::stats().used as u64)
    );

    serial_println!();
    serial_println!("== frames ==");
    let baseline = mm::stats().free_pages;
    serial_println!("free frames: {baseline}");
    let one = mm::alloc_frame().expect("a frame");
    serial_println!(
        "1 frame            -> {:#x} (from this CPU's page cache, which takes 64 frames from the zone at once)",
        one.start_address()
    );
    let three = mm::alloc_frames(3).expect("3 frames");
    serial_println!("3 frames           -> {:#x}", three.start_address());
    let huge = mm::alloc_huge_frame().expect("a 2 MiB frame");
    serial_println!("2 MiB frame        -> {:#x}", huge.start_address());
    let dma = mm::alloc(FrameRequest::pages(4).below(16 << 20)).expect("DMA frames");
    serial_println!(
        "4 frames < 16 MiB  -> {:#x} (zone {}; this kernel manages page 0 like any other frame)",
        dma.start_address(),
        Zone::of(dma.start_address().as_u64()).name()
    );
    screen::show("holding 1 frame, 3 frames, a 2 MiB frame and 4 frames below 16 MiB");
    // The picture with the most to see: this is the one `--screendump` saves.
    screen::offer_screendump();
    let three_at = three.start_address();
    drop(three);
    let two = mm::alloc_frames(2).expect("2 frames");
    serial_println!(
        "freed the 3; 2 frames -> {:#x} (first fit reuses the hole)",
        two.start_address()
    );
    let err = mm::free_frames(three_at + 8192u64, 1).expect_err("a free frame");
    serial_println!("free of a free frame -> error: {err}");
    serial_println!("free frames now: {}", mm::stats().free_pages);
    drop((one, two, huge, dma));
    screen::show("all those frames freed");

    if kernel::smp::cpus_online() > 1 {
        several_cpus();
    }

    serial_println!();
    serial_println!("== an address space ==");
    let mut space = AddressSpace::new().expect("an address space");
    let flags = PageTableFlags::WRITABLE;
    for i in 0..16u64 {
        let page = Page::containing_address(VirtAddr::new(0x40_0000 + i * 4096));
        space.map_user(page, flags).expect("map a user page");
    }
    let sum = space.with_active(|| {
        let p = 0x40_0000 as *mut u64;
        // SAFETY: the active address space maps these 16 pages, writable, zeroed.
        unsafe {
            p.write_volatile(42);
            p.add(512 * 15).write_volatile(8);
            p.read_volatile() + p.add(512 * 15).read_volatile()
        }
    });
    serial_println!(
        "PML4 at {:#x}; mapped 16 user pages at 0x400000, switched CR3, wrote and read back {sum}",
        space.pml4_frame().start_address()
    );
    screen::show("an address space: its page tables and 16 user pages");
    serial_println!(
        "free frames with the address space: {}",
        mm::stats().free_pages
    );
    drop(space);
    screen::show("the address space dropped: every frame back");
    let end = mm::stats().free_pages;
    serial_println!(
        "dropped it: free frames {end} (baseline {baseline}{})",
        if end == baseline {
            ", all back"
        } else {
            ", LEAK"
        }
    );
    match mm::frames::check_invariants() {
        Ok(()) => serial_println!("allocator invariants: ok"),
        Err((z, e)) => panic!("allocator invariants broken in zone {}: {e}", z.name()),
    }
    assert_eq!(end, baseline, "frames leaked");
    serial_println!();
}

/// Every CPU takes two single frames at once, each from its own page cache.
fn several_cpus() {
    use core::sync::atomic::{AtomicU64, Ordering};
    use kernel::{mm, smp};

    serial_println!();
    serial_println!("== several CPUs ==");
    let got: [[AtomicU64; 2]; smp::MAX_CPUS] =
        [const { [AtomicU64::new(0), AtomicU64::new(0)] }; smp::MAX_CPUS];
    smp::run_on_all_cpus(&|cpu| {
        for slot in &got[cpu] {
            let (frame, _) = mm::alloc_frame().expect("a frame").into_raw();
            slot.store(frame.start_address().as_u64(), Ordering::Relaxed);
        }
    });
    for (cpu, pair) in got.iter().enumerate().take(smp::cpus_online()) {
        let (a, b) = (
            pair[0].load(Ordering::Relaxed),
            pair[1].load(Ordering::Relaxed),
        );
        serial_println!("CPU {cpu}: 2 frames -> {a:#x}, {b:#x} (from its own page cache)");
    }
    let held = mm::cpu_stats().map(|c| c.held_pages);
    smp::run_on_all_cpus(&|cpu| {
        for slot in &got[cpu] {
            let addr = x86_64::PhysAddr::new(slot.load(Ordering::Relaxed));
            mm::free_frames(addr, 1).expect("free a frame");
        }
    });
    let n = smp::cpus_online();
    serial_println!(
        "freed on the CPUs that took them; free frames held per CPU before the frees: {:?}",
        &held[..n]
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_and_exit(info)
}
