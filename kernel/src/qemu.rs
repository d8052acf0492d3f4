//! Ending the QEMU run with a status through the `isa-debug-exit` device.

use x86_64::instructions::port::Port;

/// I/O port of the `isa-debug-exit` device that `boot/` adds to every QEMU run.
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Values the kernel writes to `isa-debug-exit`. QEMU exits with `(value << 1) | 1`, so
/// `Success` becomes status 33 and `Failed` 35; `boot/` maps those to 0 and 1. Neither value
/// may be 0, because status 1 is also what QEMU itself returns on its own errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QemuExitCode {
    /// The kernel (or its test run) succeeded.
    Success = 0x10,
    /// The kernel (or its test run) failed.
    Failed = 0x11,
}

/// Ends the QEMU run with `code`. Outside QEMU (no device at port 0xf4) it halts forever.
pub fn exit_qemu(code: QemuExitCode) -> ! {
    let mut port = Port::<u32>::new(ISA_DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is the isa-debug-exit device; writing it stops the VM and has no
    // effect on memory. On a machine without the device the write goes nowhere.
    unsafe { port.write(code as u32) };
    crate::hlt_loop()
}
