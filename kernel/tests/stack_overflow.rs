//! A test kernel that overflows its stack: the guard page below the stack turns the
//! overflow into a page fault, which cannot be handled on the same stack, so it becomes a
//! double fault. The test passes if the double-fault handler runs on its own IST stack.

#![no_std]
#![no_main]

use bootloader_api::BootInfo;
use core::panic::PanicInfo;
use kernel::{serial_print, serial_println, testing};
use x86_64::structures::idt::InterruptStackFrame;

bootloader_api::entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    serial_print!("stack_overflow::double_fault_on_its_own_stack...\t");
    assert!(kernel::interrupts::set_double_fault_hook(on_double_fault));
    let depth = recurse(0);
    panic!("recursed {depth} times without a stack overflow");
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
    let stack = kernel::gdt::double_fault_stack();
    if stack.contains(&here) {
        serial_println!("[ok]");
        testing::finish(1, 0)
    } else {
        serial_println!("[failed]");
        serial_println!(
            "double-fault handler runs at {here:#x}, outside its stack {:#x}..{:#x}",
            stack.start,
            stack.end
        );
        testing::finish(0, 1)
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    serial_println!("[failed]");
    serial_println!("{info}");
    testing::finish(0, 1)
}
