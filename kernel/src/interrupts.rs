//! Interrupt descriptor table: CPU exceptions, the timers, the serial port and the local
//! APIC's own vectors. One IDT is shared by every CPU.
//!
//! Exceptions the kernel cannot recover from (double fault, page fault, general protection
//! fault) panic with a description of what happened; the panic handler prints it and ends
//! the QEMU run with failure. The timer counts ticks per CPU and calls an optional hook, so
//! tests can run code in interrupt context. Until `smp::init` has calibrated the local
//! APIC timer, the bootstrap CPU ticks from the PIT (IRQ 0 through the remapped PIC, EOI at
//! the PIC); after it, every CPU ticks from its own local APIC timer (EOI at the local
//! APIC), and IRQ 0 is masked. Serial input (IRQ 4) stays with the PICs, which deliver
//! only to the bootstrap CPU.

use crate::pic;
use crate::smp::{self, lapic};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{LazyLock, Once, RwLock};
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};

/// Rate at which every CPU's timer ticks.
pub const TIMER_HZ: u32 = 100;

/// Vector of every CPU's local APIC timer.
pub const APIC_TIMER_VECTOR: u8 = pic::PIC2_OFFSET + 8;
/// Vector of the local APIC's error interrupt.
pub const APIC_ERROR_VECTOR: u8 = 0xfe;
/// Vector the local APIC raises for an interrupt that went away (no EOI wanted).
pub const APIC_SPURIOUS_VECTOR: u8 = 0xff;

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
    idt[APIC_TIMER_VECTOR].set_handler_fn(apic_timer_handler);
    idt[smp::WAKE_VECTOR].set_handler_fn(wake_handler);
    idt[APIC_ERROR_VECTOR].set_handler_fn(apic_error_handler);
    idt[APIC_SPURIOUS_VECTOR].set_handler_fn(apic_spurious_handler);
    idt
});

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static APIC_SPURIOUS: AtomicU64 = AtomicU64::new(0);
static APIC_ERRORS: AtomicU64 = AtomicU64::new(0);
static TIMER_HOOK: RwLock<Option<fn()>> = RwLock::new(None);
static DOUBLE_FAULT_HOOK: Once<fn(&InterruptStackFrame) -> !> = Once::new();

/// Loads the IDT, remaps the PICs and starts the timer. Interrupts stay disabled; the
/// caller enables them.
pub fn init() {
    IDT.load();
    pic::init();
    pic::set_timer_hz(TIMER_HZ);
}

/// Loads the shared IDT on an application processor.
pub fn init_ap() {
    IDT.load();
}

/// Timer interrupts the bootstrap CPU has handled since boot: the kernel's clock, at
/// [`TIMER_HZ`].
pub fn ticks() -> u64 {
    ticks_on(0)
}

/// Timer interrupts CPU `cpu` has handled since it started (0 for a CPU that is not up).
pub fn ticks_on(cpu: usize) -> u64 {
    smp::CPUS
        .get(cpu)
        .map_or(0, |c| c.ticks.load(Ordering::Relaxed))
}

/// Breakpoint exceptions (`int3`) handled since boot.
pub fn breakpoints() -> u64 {
    BREAKPOINTS.load(Ordering::Relaxed)
}

/// Spurious interrupts from the PICs since boot.
pub fn spurious_interrupts() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Spurious interrupts from the local APICs, and local APIC error interrupts, since boot.
pub fn apic_spurious_and_errors() -> (u64, u64) {
    (
        APIC_SPURIOUS.load(Ordering::Relaxed),
        APIC_ERRORS.load(Ordering::Relaxed),
    )
}

/// Sets the function the timer handler calls on every tick of every CPU (in interrupt
/// context, with interrupts disabled on that CPU; several CPUs may run it at once), or
/// removes it with `None`. Returns the previous hook once no CPU runs it any more (so what
/// it holds is back when this returns). Not from the hook itself: it would wait for itself.
pub fn set_timer_hook(hook: Option<fn()>) -> Option<fn()> {
    // Each running hook holds a read guard: the write lock waits for them to finish. The
    // handler never waits for this lock (it skips a tick instead), and with interrupts off
    // the hook cannot start on this CPU while we wait.
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

/// One tick on this CPU: count it and run the hook.
fn tick() {
    smp::this_cpu().ticks.fetch_add(1, Ordering::Relaxed);
    // The read guard is held while the hook runs, so `set_timer_hook` can wait for it.
    if let Some(guard) = TIMER_HOOK.try_read()
        && let Some(hook) = *guard
    {
        hook();
    }
}

/// The PIT's tick (bootstrap CPU, before the local APIC timers take over).
extern "x86-interrupt" fn timer_handler(_stack_frame: InterruptStackFrame) {
    tick();
    pic::end_of_interrupt(0);
}

/// A CPU's local APIC timer tick.
extern "x86-interrupt" fn apic_timer_handler(_stack_frame: InterruptStackFrame) {
    tick();
    lapic::end_of_interrupt();
}

/// The IPI that wakes a CPU for a job: the job is in its mailbox, nothing to do here.
extern "x86-interrupt" fn wake_handler(_stack_frame: InterruptStackFrame) {
    lapic::end_of_interrupt();
}

extern "x86-interrupt" fn apic_error_handler(_stack_frame: InterruptStackFrame) {
    let status = lapic::read_error_status();
    APIC_ERRORS.fetch_add(1, Ordering::Relaxed);
    crate::serial_println!(
        "local APIC error on CPU {}: status {status:#x}",
        smp::cpu_id()
    );
    lapic::end_of_interrupt();
}

/// A spurious local APIC interrupt: counted, and not acknowledged (it never was in service).
extern "x86-interrupt" fn apic_spurious_handler(_stack_frame: InterruptStackFrame) {
    APIC_SPURIOUS.fetch_add(1, Ordering::Relaxed);
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
