//! A test kernel that overflows an application processor's stack: the unmapped guard page
//! below it turns the overflow into a page fault, which cannot be handled on the same
//! stack, so it becomes a double fault. The test passes if the double-fault handler runs
//! on that CPU, on the CPU's own IST stack (its own TSS). Run at 2 CPUs (see run-qemu.sh);
//! at 1 CPU the bootstrap CPU overflows instead.

#![no_std]
#![no_main]

use bootloader_api::BootInfo;
use core::panic::PanicInfo;
use kernel::{serial_print, serial_println, smp, testing};
use x86_64::structures::idt::InterruptStackFrame;

bootloader_api::entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

/// The CPU that overflows its stack.
fn target() -> usize {
    smp::cpus_online() - 1
}

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    serial_print!("smp_stack_overflow::double_fault_on_the_aps_own_stack...\t");
    assert!(kernel::interrupts::set_double_fault_hook(on_double_fault));
    let _ = smp::run_on_cpu(target(), &|_| {
        let depth = recurse(0);
        panic!("recursed {depth} times without a stack overflow");
    });
    panic!("the job returned");
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // A local the optimiser cannot drop, and work after the call, so the recursion is
    // neither removed nor turned into a loop.
    let frame = core::hint::black_box([depth; 8]);
    recurse(depth + 1) + frame[0]
}

fn on_double_fault(_frame: &InterruptStackFrame) -> ! {
    let marker = 0u8;
    let here = &raw const marker as u64;
    let cpu = smp::cpu_id();
    let stack = if cpu == 0 {
        kernel::gdt::double_fault_stack()
    } else {
        smp::ap_double_fault_stack(cpu).expect("an AP's double-fault stack")
    };
    if cpu == target() && stack.contains(&here) {
        serial_println!("[ok]");
        testing::finish(1, 0)
    } else {
        serial_println!("[failed]");
        serial_println!(
            "double fault on CPU {cpu} (expected {}) at {here:#x}, its stack is {:#x}..{:#x}",
            target(),
            stack.start,
            stack.end
        );
        testing::finish(0, 1)
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    smp::enter_panic();
    serial_println!("[failed]");
    serial_println!("{info}");
    testing::finish(0, 1)
}
