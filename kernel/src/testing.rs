//! The in-kernel test framework (`custom_test_frameworks`).
//!
//! Every test prints its name, runs, and prints `[ok]`. The run ends with the line
//! `kernel: N passed, M failed` and a QEMU exit status. A failing test panics; the panic
//! handler prints `[failed]` and the message, then the same final line: with no unwinding
//! in the kernel, the first failure ends the run.
//!
//! A test kernel under `kernel/tests/` starts with [`test_entry_point!`](crate::test_entry_point).

use crate::qemu::{QemuExitCode, exit_qemu};
use crate::{serial_print, serial_println};
use bootloader_api::BootInfo;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Once;

static TOTAL: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);
static BOOT_INFO: Once<&'static BootInfo> = Once::new();

/// Something the test runner can run: every `#[test_case] fn`.
pub trait Testable {
    /// Runs the test, printing its name and `[ok]`; a failure panics.
    fn run(&self);
}

impl<T: Fn()> Testable for T {
    fn run(&self) {
        serial_print!("{}...\t", core::any::type_name::<T>());
        self();
        serial_println!("[ok]");
    }
}

/// The test runner: runs every test, prints the summary line and exits QEMU.
pub fn run_tests(tests: &[&dyn Testable]) {
    TOTAL.store(tests.len(), Ordering::Relaxed);
    let plural = if tests.len() == 1 { "" } else { "s" };
    serial_println!("running {} test{plural}", tests.len());
    for test in tests {
        test.run();
        PASSED.fetch_add(1, Ordering::Relaxed);
    }
    finish(tests.len(), 0);
}

/// Prints the final `kernel: N passed, M failed` line and exits QEMU: success when nothing
/// failed.
pub fn finish(passed: usize, failed: usize) -> ! {
    serial_println!("kernel: {passed} passed, {failed} failed");
    exit_qemu(if failed == 0 {
        QemuExitCode::Success
    } else {
        QemuExitCode::Failed
    })
}

/// Panic handler for test kernels: the running test failed.
pub fn panic_handler(info: &PanicInfo) -> ! {
    crate::smp::enter_panic();
    serial_println!("[failed]");
    serial_println!();
    serial_println!("{info}");
    serial_println!();
    let passed = PASSED.load(Ordering::Relaxed);
    let not_run = TOTAL.load(Ordering::Relaxed).saturating_sub(passed + 1);
    if not_run > 0 {
        let plural = if not_run == 1 { "" } else { "s" };
        serial_println!(
            "{not_run} more test{plural} not run: a test run stops at its first failure"
        );
    }
    finish(passed, 1)
}

/// Records the boot information for tests (done by [`test_entry_point!`](crate::test_entry_point)).
pub fn set_boot_info(boot_info: &'static BootInfo) {
    BOOT_INFO.call_once(|| boot_info);
}

/// The boot information of this test kernel.
///
/// # Panics
/// Before [`set_boot_info`].
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO
        .get()
        .expect("test_entry_point! records the boot info")
}

/// Defines the entry point and panic handler of a test kernel whose tests run through the
/// crate-level `test_main` of `#![reexport_test_harness_main = "test_main"]`:
/// `kernel::init`, record the boot info, run the tests, exit QEMU.
#[macro_export]
macro_rules! test_entry_point {
    () => {
        $crate::bootloader_api::entry_point!(
            __test_kernel_main,
            config = &$crate::BOOTLOADER_CONFIG
        );

        fn __test_kernel_main(boot_info: &'static mut $crate::bootloader_api::BootInfo) -> ! {
            $crate::init(boot_info);
            $crate::testing::set_boot_info(boot_info);
            test_main();
            // `test_main` ends the QEMU run; only a broken harness gets here.
            $crate::testing::finish(0, 1)
        }

        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo) -> ! {
            $crate::testing::panic_handler(info)
        }
    };
}
