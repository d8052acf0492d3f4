//! The smallest test kernel: boots, initialises, and runs a few checks of the booted
//! machine. `./run-qemu.sh test` runs it at several memory sizes.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

use bootloader_api::info::MemoryRegionKind;
use kernel::memory_map::{self, Size};
use kernel::serial_println;

kernel::test_entry_point!();

#[test_case]
fn serial_println_works() {
    serial_println!("serial_println works after boot");
}

#[test_case]
fn memory_map_has_usable_memory() {
    let regions = &kernel::testing::boot_info().memory_regions;
    let usable = memory_map::usable_summary(regions);
    serial_println!(
        "{} usable in {} spans, top {:#x} ",
        Size(usable.bytes),
        usable.spans,
        usable.top
    );
    assert!(
        usable.bytes >= 64 << 20,
        "only {} usable",
        Size(usable.bytes)
    );
    assert!(
        regions
            .iter()
            .any(|r| r.kind == MemoryRegionKind::Bootloader)
    );
}

#[test_case]
fn physical_memory_is_mapped() {
    assert!(kernel::physical_memory_offset().is_some());
}

#[test_case]
fn timer_runs() {
    assert!(kernel::interrupts::wait_ticks(2));
}
