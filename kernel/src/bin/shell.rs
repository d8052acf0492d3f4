//! The memory console: boots like the kernel binary, then waits for commands on the
//! serial port (`./run-qemu.sh --shell`). See `kernel::shell`.
//!
//! A second binary rather than a mode of the first: bootloader 0.11 passes the kernel no
//! command line to choose a mode with, and the kernel binary stays a demo that runs by
//! itself and exits, which its boot test relies on.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use bootloader_api::BootInfo;

bootloader_api::entry_point!(shell_main, config = &kernel::BOOTLOADER_CONFIG);

fn shell_main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    let boot_info: &'static BootInfo = boot_info;
    kernel::shell::run(&boot_info.memory_regions)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_and_exit(info)
}
