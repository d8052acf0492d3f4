//! A test kernel that writes to its own (read-only) code: the page-fault handler must
//! report the faulting address and the error code, then fail through the panic handler.
//! The test passes if that report is right.

#![no_std]
#![no_main]

use bootloader_api::BootInfo;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::fmtbuf::FmtBuf;
use kernel::{serial_print, serial_println, testing};

bootloader_api::entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

static TARGET: AtomicU64 = AtomicU64::new(0);

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    serial_print!("page_fault::write_to_code_is_reported...\t");
    let target = main as *const () as *mut u8;
    TARGET.store(target as u64, Ordering::SeqCst);
    // SAFETY: none in the usual sense: the write is meant to fault. The bootloader maps
    // kernel code read-only with CR0.WP set, so the CPU stops it before memory changes,
    // and the page-fault handler never returns here.
    unsafe { target.write_volatile(0xcc) };
    serial_println!("[failed]");
    serial_println!("writing to kernel code at {target:p} did not fault");
    testing::finish(0, 1)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let message = FmtBuf::<1024>::format(format_args!("{}", info.message()));
    let message = message.as_str();
    let expected = FmtBuf::<64>::format(format_args!(
        "PAGE FAULT at address {:#x}, error code 0x3",
        TARGET.load(Ordering::SeqCst)
    ));
    // Error code 0x3: the page was present (protection violation) and the access a write.
    if message.contains(expected.as_str()) {
        serial_println!("[ok]");
        serial_println!("handler reported: {}", message.lines().next().unwrap_or(""));
        testing::finish(1, 0)
    } else {
        serial_println!("[failed]");
        serial_println!(
            "expected a report containing `{}`, got:\n{info}",
            expected.as_str()
        );
        testing::finish(0, 1)
    }
}
