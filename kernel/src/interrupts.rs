//! Interrupt descriptor table: CPU exceptions, the timer and the serial port.
//!
//! Exceptions the kernel cannot recover from (double fault, page fault, general protection
//! fault) panic with a description of what happened; the panic handler prints it and ends
//! the QEMU run with failure. The timer (IRQ 0 through the remapped PIC) counts ticks and
//! calls an optional hook, so tests can run code in interrupt context.

use crate::pic;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{LazyLock, Once, RwLock};
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};

/// Rate at which [`init`] programs the timer.
pub const TIMER_HZ: u32 = 100;

/// Vectors of the hardware interrupts the kernel handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum InterruptIndex {
    /// IRQ 0: PIT channel 0.
    Timer = pic::PIC1_OFFSET,
    /// IRQ 4: COM1, the serial port (only once `serial::enable_input` unmasked it).
    Com1 = pic::PIC1_OFFSET + crate::serial::COM1_IRQ,
    /// IRQ 7: lowest priority of the master PIC, where its spurious interrupts arrive.
    Irq7 = pic::PIC1_OFFSET + 7,
    /// IRQ 15: lowest priority of the slave PIC, where its spurious interrupts arrive.
    Irq15 = pic::PIC2_OFFSET + 7,
}

static IDT: LazyLock<InterruptDescriptorTable> = LazyLock::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    idt.breakpoint.set_handler_fn(breakpoint_handler);
    idt.page_fault.set_handler_fn(page_fault_handler);
    idt.general_protection_fault
        .set_handler_fn(general_protection_fault_handler);
    let double_fault = idt.double_fault.set_handler_fn(double_fault_handler);
    // SAFETY: `gdt::init` fills this IST slot with a stack that nothing else uses, and
    // `crate::init` loads the GDT before the IDT.
    unsafe { double_fault.set_stack_index(crate::gdt::DOUBLE_FAULT_IST_INDEX) };
    idt[InterruptIndex::Timer as u8].set_handler_fn(timer_handler);
    idt[InterruptIndex::Com1 as u8].set_handler_fn(com1_handler);
    idt[InterruptIndex::Irq7 as u8].set_handler_fn(irq7_handler);
    idt[InterruptIndex::Irq15 as u8].set_handler_fn(irq15_handler);
    idt
});

static TICKS: AtomicU64 = AtomicU64::new(0);
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static TIMER_HOOK: RwLock<Option<fn()>> = RwLock::new(None);
static DOUBLE_FAULT_HOOK: Once<fn(&InterruptStackFrame) -> !> = Once::new();

/// Loads the IDT, remaps the PICs and starts the timer. Interrupts stay disabled; the
/// caller enables them.
pub fn init() {
    IDT.load();
    pic::init();
    pic::set_timer_hz(TIMER_HZ);
}

/// Timer interrupts since boot.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Breakpoint exceptions (`int3`) handled since boot.
pub fn breakpoints() -> u64 {
    BREAKPOINTS.load(Ordering::Relaxed)
}

/// Spurious interrupts from the PICs since boot.
pub fn spurious_interrupts() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Sets the function the timer handler calls on every tick (in interrupt context, with
/// interrupts disabled), or removes it with `None`. Returns the previous hook.
pub fn set_timer_hook(hook: Option<fn()>) -> Option<fn()> {
    // The handler never waits for this lock (it skips a tick instead), and with interrupts
    // off it cannot run on this CPU while we hold it.
    x86_64::instructions::interrupts::without_interrupts(|| {
        core::mem::replace(&mut *TIMER_HOOK.write(), hook)
    })
}

/// Makes the double-fault handler call `hook` (on the double-fault stack) instead of
/// panicking. Only the first call has an effect; returns whether this call set it.
pub fn set_double_fault_hook(hook: fn(&InterruptStackFrame) -> !) -> bool {
    let mut set = false;
    DOUBLE_FAULT_HOOK.call_once(|| {
        set = true;
        hook
    });
    set
}

/// Halts until the timer has ticked `n` more times. Needs interrupts enabled. Returns
/// `false` if it gave up: a bounded number of wake-ups passed without enough ticks.
pub fn wait_ticks(n: u64) -> bool {
    let target = ticks() + n;
    // Each `hlt` returns on some interrupt; only the timer is unmasked, so this bound is
    // generous.
    for _ in 0..n.saturating_mul(100).max(100) {
        if ticks() >= target {
            return true;
        }
        x86_64::instructions::hlt();
    }
    ticks() >= target
}

extern "x86-interrupt" fn breakpoint_handler(stack_frame: InterruptStackFrame) {
    BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
    crate::serial_println!(
        "EXCEPTION: BREAKPOINT at {:#x}",
        stack_frame.instruction_pointer.as_u64()
    );
}

extern "x86-interrupt" fn double_fault_handler(
    stack_frame: InterruptStackFrame,
    error_code: u64,
) -> ! {
    if let Some(hook) = DOUBLE_FAULT_HOOK.get() {
        hook(&stack_frame);
    }
    panic!("EXCEPTION: DOUBLE FAULT (error code {error_code:#x})\n{stack_frame:#?}");
}

extern "x86-interrupt" fn page_fault_handler(
    stack_frame: InterruptStackFrame,
    error_code: PageFaultErrorCode,
) {
    // CR2 holds the address whose access faulted; read it raw so a non-canonical value is
    // still shown.
    let address = Cr2::read_raw();
    panic!(
        "EXCEPTION: PAGE FAULT at address {address:#x}, error code {:#x} ({error_code:?})\n\
         {stack_frame:#?}",
        error_code.bits()
    );
}

extern "x86-interrupt" fn general_protection_fault_handler(
    stack_frame: InterruptStackFrame,
    error_code: u64,
) {
    // A non-zero code is the selector index involved.
    panic!("EXCEPTION: GENERAL PROTECTION FAULT (error code {error_code:#x})\n{stack_frame:#?}");
}

extern "x86-interrupt" fn timer_handler(_stack_frame: InterruptStackFrame) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    // Copy the hook out so the lock is not held while it runs.
    let hook = TIMER_HOOK.try_read().and_then(|hook| *hook);
    if let Some(hook) = hook {
        hook();
    }
    pic::end_of_interrupt(0);
}

extern "x86-interrupt" fn com1_handler(_stack_frame: InterruptStackFrame) {
    crate::serial::on_receive_interrupt();
    pic::end_of_interrupt(crate::serial::COM1_IRQ);
}

extern "x86-interrupt" fn irq7_handler(_stack_frame: InterruptStackFrame) {
    if pic::handle_irq7_or_irq15(7) {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
    }
}

extern "x86-interrupt" fn irq15_handler(_stack_frame: InterruptStackFrame) {
    if pic::handle_irq7_or_irq15(15) {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test_case]
    fn breakpoint_returns() {
        let before = breakpoints();
        x86_64::instructions::interrupts::int3();
        assert_eq!(breakpoints(), before + 1);
    }

    #[test_case]
    fn interrupts_are_enabled_after_init() {
        assert!(x86_64::instructions::interrupts::are_enabled());
    }

    #[test_case]
    fn timer_ticks_advance() {
        let before = ticks();
        assert!(wait_ticks(3), "timer stuck at {} ticks", ticks());
        assert!(ticks() >= before + 3);
    }

    static HOOK_CALLS: AtomicU64 = AtomicU64::new(0);

    fn count_hook_call() {
        // Runs in interrupt context: interrupts are off while a handler runs.
        assert!(!x86_64::instructions::interrupts::are_enabled());
        HOOK_CALLS.fetch_add(1, Ordering::Relaxed);
    }

    #[test_case]
    fn timer_hook_runs_in_interrupt_context() {
        assert!(set_timer_hook(Some(count_hook_call)).is_none());
        assert!(wait_ticks(3));
        assert!(set_timer_hook(None).is_some());
        let calls = HOOK_CALLS.load(Ordering::Relaxed);
        assert!(calls >= 3, "hook ran {calls} times in 3 ticks");
        // Removed: no more calls.
        assert!(wait_ticks(2));
        assert_eq!(HOOK_CALLS.load(Ordering::Relaxed), calls);
    }
}
