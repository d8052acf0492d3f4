//! A test kernel that passes only if its test panics: checks that a failed assertion
//! reaches the panic handler with its message.

#![no_std]
#![no_main]

use bootloader_api::BootInfo;
use core::panic::PanicInfo;
use kernel::fmtbuf::FmtBuf;
use kernel::{serial_print, serial_println, testing};

bootloader_api::entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    serial_print!("should_panic::failed_assertion_panics...\t");
    assert_eq!(1 + 1, 3, "arithmetic still works");
    serial_println!("[failed]");
    serial_println!("the assertion did not panic");
    testing::finish(0, 1)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let message = FmtBuf::<256>::format(format_args!("{}", info.message()));
    if message.as_str().contains("arithmetic still works") {
        serial_println!("[ok]");
        testing::finish(1, 0)
    } else {
        serial_println!("[failed]");
        serial_println!("panicked, but not with the expected message: {info}");
        testing::finish(0, 1)
    }
}
