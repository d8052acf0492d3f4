//! The kernel binary: boot, describe the machine, exit.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

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
    serial_println!();
    memory_map::print(regions);
    serial_println!();

    // Memory management is initialised here (kernel::mm::init(boot_info), a later issue).

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

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_and_exit(info)
}
