//! Global descriptor table and task state segment.
//!
//! Long mode ignores segmentation, but the CPU still needs a code segment, and the TSS is
//! where the interrupt stack table (IST) lives: the double-fault handler gets a stack of
//! its own there, so a kernel stack overflow ends in a report instead of a triple fault.
//! The bootstrap CPU uses the static tables below; each application processor gets its
//! own GDT and TSS ([`init_ap`]), with the same selectors.

use core::ops::Range;
use spin::LazyLock;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot used by the double-fault handler.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

const DOUBLE_FAULT_STACK_BYTES: usize = 5 * 4096;

#[repr(align(16))]
struct Stack(
    #[expect(dead_code, reason = "only the CPU touches the bytes")] [u8; DOUBLE_FAULT_STACK_BYTES],
);

// `static mut` puts the stack in writable memory. Rust code never reads or writes it: only
// its address is taken, and the CPU uses it as a stack.
static mut DOUBLE_FAULT_STACK: Stack = Stack([0; DOUBLE_FAULT_STACK_BYTES]);

/// Addresses `[start, end)` of the double-fault stack.
pub fn double_fault_stack() -> Range<u64> {
    let start = (&raw const DOUBLE_FAULT_STACK) as u64;
    start..start + DOUBLE_FAULT_STACK_BYTES as u64
}

static TSS: LazyLock<TaskStateSegment> = LazyLock::new(|| {
    let mut tss = TaskStateSegment::new();
    // Stacks grow down: the IST entry holds the stack's top.
    tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] =
        VirtAddr::new(double_fault_stack().end);
    tss
});

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static GDT: LazyLock<(GlobalDescriptorTable, Selectors)> = LazyLock::new(|| {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(&TSS));
    (gdt, Selectors { code, data, tss })
});

/// Loads the GDT and TSS and points every segment register at them.
pub fn init() {
    let (gdt, selectors) = &*GDT;
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which is 'static: a
    // 64-bit kernel code segment, a kernel data segment and a TSS whose stacks are 'static.
    // SS must be reloaded too: the bootloader's selector would index our table, and `iretq`
    // checks it.
    unsafe {
        CS::set_reg(selectors.code);
        SS::set_reg(selectors.data);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}

/// Loads a GDT and TSS of its own on an application processor, whose double-fault stack
/// ends at `double_fault_stack_top`. The selectors are the same as the bootstrap CPU's.
pub fn init_ap(double_fault_stack_top: VirtAddr) {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] = double_fault_stack_top;
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((code, data, tss_sel), (GDT.1.code, GDT.1.data, GDT.1.tss));
    let gdt: &'static GlobalDescriptorTable = alloc::boxed::Box::leak(alloc::boxed::Box::new(gdt));
    gdt.load();
    // SAFETY: as in `init`: the selectors index this CPU's GDT, just loaded and never
    // freed, whose TSS and stacks live as long as the kernel.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_sel);
    }
}

/// The bootstrap CPU's TSS's IST entry used for double faults (for tests and diagnostics).
pub fn double_fault_ist_top() -> VirtAddr {
    TSS.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn code_segment_is_ours() {
        assert_eq!(CS::get_reg(), GDT.1.code);
    }

    #[test_case]
    fn double_fault_stack_is_in_the_tss() {
        let stack = double_fault_stack();
        assert_eq!(double_fault_ist_top().as_u64(), stack.end);
        assert_eq!(stack.end % 16, 0, "stack top must be 16-byte aligned");
        assert_eq!(stack.end - stack.start, DOUBLE_FAULT_STACK_BYTES as u64);
    }
}
