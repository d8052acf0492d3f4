//! A test kernel that passes only if a panic on an application processor reaches the panic
//! handler on that CPU, with its message, while that CPU holds the serial port's lock (the
//! panic comes from inside a `serial_println!`): the report must not wait for itself. The
//! other CPUs then panic inside a print too: they must stop without a word and without
//! keeping the port's lock. Run at 2 CPUs (see run-qemu.sh); at 1 CPU the bootstrap CPU
//! panics instead.

#![no_std]
#![no_main]

use bootloader_api::BootInfo;
use core::fmt;
use core::panic::PanicInfo;
use kernel::fmtbuf::FmtBuf;
use kernel::{serial_print, serial_println, smp, testing};

bootloader_api::entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

/// Panics when printed.
struct PanicsWhenShown;

impl fmt::Display for PanicsWhenShown {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("shown on CPU {}", smp::cpu_id())
    }
}

/// The CPU the panic is expected on.
fn target() -> usize {
    smp::cpus_online() - 1
}

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    serial_print!("smp_panic::a_panic_on_an_ap_is_reported...\t");
    smp::run_on_all_cpus(&|cpu| {
        if cpu != target() {
            while smp::panicking_cpu().is_none() {
                core::hint::spin_loop();
            }
        }
        serial_println!("{}", PanicsWhenShown);
    });
    serial_println!("[failed]");
    serial_println!("the job did not panic");
    testing::finish(0, 1)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // What the kernel's panic handlers do first: prints "panicked on CPU n" (and would
    // wait forever on the serial lock if it did not take it back).
    smp::enter_panic();
    let message = FmtBuf::<256>::format(format_args!("{}", info.message()));
    let want = FmtBuf::<64>::format(format_args!("shown on CPU {}", target()));
    if smp::cpu_id() == target() && message.as_str() == want.as_str() {
        serial_println!("[ok]");
        testing::finish(1, 0)
    } else {
        serial_println!("[failed]");
        serial_println!("panicked on CPU {}, not as expected: {info}", smp::cpu_id());
        testing::finish(0, 1)
    }
}
