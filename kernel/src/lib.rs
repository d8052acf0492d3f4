//! A small x86_64 kernel for teaching: it boots through the `bootloader` crate (BIOS or
//! UEFI), prints over the serial port and tests itself in QEMU.
//!
//! The library holds everything; `main.rs` is the kernel binary, and each file in
//! `kernel/tests/` is a test kernel that links this library.

#![no_std]
#![cfg_attr(test, no_main)]
#![feature(abi_x86_interrupt)]
#![feature(custom_test_frameworks)]
#![test_runner(crate::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod fmtbuf;
pub mod gdt;
pub mod interrupts;
pub mod memory_map;
pub mod mm;
pub mod pic;
pub mod qemu;
pub mod ringbuf;
pub mod rng;
pub mod screen;
pub mod serial;
pub mod shell;
pub mod smp;
pub mod testing;

pub use bootloader_api;

use bootloader_api::BootInfo;
use bootloader_api::config::{BootloaderConfig, Mapping};
use spin::Once;
use x86_64::VirtAddr;

/// How the bootloader sets up the kernel: besides the defaults, all of physical memory is
/// mapped at an offset the bootloader chooses (memory management reaches frames through it).
pub const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    // Everything the bootloader places goes to the upper half: the lower half is for
    // user address spaces.
    config.mappings.dynamic_range_start = Some(0xffff_8000_0000_0000);
    config
};

static PHYSICAL_MEMORY_OFFSET: Once<VirtAddr> = Once::new();

/// Sets up the CPU and the machine: per-CPU data, GDT and TSS, IDT, PICs and timer, memory
/// management, the other CPUs ([`smp`]); then enables interrupts. Also sorts the memory
/// map by start address, records where physical memory is mapped, and hands the
/// framebuffer to [`screen`].
pub fn init(boot_info: &mut BootInfo) {
    // First: `smp::cpu_id` (used by locks and interrupt handlers) reads it.
    smp::init_bsp();
    gdt::init();
    interrupts::init();
    boot_info.memory_regions.sort_unstable_by_key(|r| r.start);
    if let Some(offset) = boot_info.physical_memory_offset.into_option() {
        PHYSICAL_MEMORY_OFFSET.call_once(|| VirtAddr::new(offset));
    }
    if let Err(e) = mm::init(boot_info) {
        panic!("memory management set-up failed: {e}");
    }
    smp::init(boot_info.rsdp_addr.into_option());
    // The picture of memory owns the framebuffer from here on.
    screen::init(boot_info.framebuffer.take());
    x86_64::instructions::interrupts::enable();
}

/// Virtual address at which physical address 0 is mapped (all of physical memory follows
/// it), once [`init`] has run.
pub fn physical_memory_offset() -> Option<VirtAddr> {
    PHYSICAL_MEMORY_OFFSET.get().copied()
}

/// Halts the CPU until the next interrupt, forever.
pub fn hlt_loop() -> ! {
    loop {
        x86_64::instructions::hlt();
    }
}

/// Panic handler of the kernel binary: print what happened and end the run with failure.
pub fn panic_and_exit(info: &core::panic::PanicInfo) -> ! {
    smp::enter_panic();
    serial_println!("KERNEL PANIC: {info}");
    qemu::exit_qemu(qemu::QemuExitCode::Failed)
}

#[cfg(test)]
test_entry_point!();

#[cfg(test)]
mod tests {
    #[test_case]
    fn physical_memory_is_mapped() {
        let offset = super::physical_memory_offset().expect("BOOTLOADER_CONFIG maps memory");
        assert_eq!(
            Some(offset.as_u64()),
            crate::testing::boot_info()
                .physical_memory_offset
                .into_option()
        );
    }
}
