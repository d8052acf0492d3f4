//! The legacy interrupt hardware of a PC: the two cascaded 8259 PICs and the 8254 PIT.
//!
//! At power-on the master PIC delivers IRQs 0..7 on vectors 8..15, which collide with CPU
//! exceptions (8 is the double fault). [`init`] moves IRQs 0..15 to vectors 32..47 and
//! masks every line except the timer (IRQ 0); [`unmask`] enables more, [`mask`] disables
//! one (`smp::init` masks IRQ 0 once the local APIC timers tick). [`set_timer_hz`] programs the PIT's channel 0,
//! which drives IRQ 0.
//!
//! All port I/O of this module goes through [`outb`]/[`inb`], which accept only the fixed
//! set of ports in [`IoPort`].

use x86_64::instructions::port::Port;

/// Vector of IRQ 0 after [`init`].
pub const PIC1_OFFSET: u8 = 32;
/// Vector of IRQ 8 after [`init`].
pub const PIC2_OFFSET: u8 = PIC1_OFFSET + 8;

/// The PIT's input clock.
pub const PIT_BASE_HZ: u32 = 1_193_182;

/// The ports this module may touch. None of them can affect memory.
#[derive(Clone, Copy)]
#[repr(u16)]
enum IoPort {
    Pic1Command = 0x20,
    Pic1Data = 0x21,
    Pic2Command = 0xa0,
    Pic2Data = 0xa1,
    PitChannel0 = 0x40,
    PitCommand = 0x43,
    /// POST diagnostic port: writing it only wastes a little time, which old PICs need
    /// between initialisation words.
    Post = 0x80,
}

fn outb(port: IoPort, value: u8) {
    // SAFETY: `IoPort` lists only PIC, PIT and POST-code ports; writing them reprograms
    // interrupt delivery or the timer but can never read or write memory.
    unsafe { Port::<u8>::new(port as u16).write(value) }
}

fn inb(port: IoPort) -> u8 {
    // SAFETY: as in `outb`; reading these ports has no side effect on memory.
    unsafe { Port::<u8>::new(port as u16).read() }
}

fn io_wait() {
    outb(IoPort::Post, 0);
}

const ICW1_INIT_WITH_ICW4: u8 = 0x11;
const ICW3_MASTER_SLAVE_ON_IRQ2: u8 = 1 << 2;
const ICW3_SLAVE_ID: u8 = 2;
const ICW4_8086_MODE: u8 = 0x01;
const OCW2_END_OF_INTERRUPT: u8 = 0x20;
const OCW3_READ_ISR: u8 = 0x0b;

/// Mask bits after [`init`]: only IRQ 0 (the timer) is enabled.
pub const PIC1_MASK: u8 = !0b0000_0001;
/// Mask bits of the slave after [`init`]: all its lines disabled.
pub const PIC2_MASK: u8 = 0xff;

/// Remaps both PICs to vectors 32..47 and masks every line except the timer.
///
/// Call with interrupts disabled (the IDT must have handlers for the unmasked vectors
/// before interrupts are enabled).
pub fn init() {
    // Initialisation sequence: ICW1 starts it, then ICW2 (vector offset), ICW3 (wiring of
    // the cascade), ICW4 (mode) go to the data port.
    outb(IoPort::Pic1Command, ICW1_INIT_WITH_ICW4);
    io_wait();
    outb(IoPort::Pic2Command, ICW1_INIT_WITH_ICW4);
    io_wait();
    outb(IoPort::Pic1Data, PIC1_OFFSET);
    io_wait();
    outb(IoPort::Pic2Data, PIC2_OFFSET);
    io_wait();
    outb(IoPort::Pic1Data, ICW3_MASTER_SLAVE_ON_IRQ2);
    io_wait();
    outb(IoPort::Pic2Data, ICW3_SLAVE_ID);
    io_wait();
    outb(IoPort::Pic1Data, ICW4_8086_MODE);
    io_wait();
    outb(IoPort::Pic2Data, ICW4_8086_MODE);
    io_wait();
    outb(IoPort::Pic1Data, PIC1_MASK);
    outb(IoPort::Pic2Data, PIC2_MASK);
}

/// The current mask registers `(master, slave)`; a set bit disables that IRQ line.
pub fn masks() -> (u8, u8) {
    (inb(IoPort::Pic1Data), inb(IoPort::Pic2Data))
}

/// Enables IRQ line `irq` (0..15). A line of the slave PIC also needs IRQ 2, the
/// cascade, on the master. The IDT must have a handler for the line's vector.
pub fn unmask(irq: u8) {
    assert!(irq < 16, "IRQ {irq} does not exist");
    x86_64::instructions::interrupts::without_interrupts(|| {
        let (master, slave) = masks();
        if irq < 8 {
            outb(IoPort::Pic1Data, master & !(1 << irq));
        } else {
            outb(IoPort::Pic2Data, slave & !(1 << (irq - 8)));
            outb(IoPort::Pic1Data, master & !(1 << 2));
        }
    });
}

/// Disables IRQ line `irq` (0..15).
pub fn mask(irq: u8) {
    assert!(irq < 16, "IRQ {irq} does not exist");
    x86_64::instructions::interrupts::without_interrupts(|| {
        let (master, slave) = masks();
        if irq < 8 {
            outb(IoPort::Pic1Data, master | 1 << irq);
        } else {
            outb(IoPort::Pic2Data, slave | 1 << (irq - 8));
        }
    });
}

/// Acknowledges `irq` (0..15) so the PICs deliver the next interrupt of its priority.
pub fn end_of_interrupt(irq: u8) {
    if irq >= 8 {
        outb(IoPort::Pic2Command, OCW2_END_OF_INTERRUPT);
    }
    outb(IoPort::Pic1Command, OCW2_END_OF_INTERRUPT);
}

/// In-service register of both PICs, slave in the high byte.
fn in_service() -> u16 {
    outb(IoPort::Pic1Command, OCW3_READ_ISR);
    outb(IoPort::Pic2Command, OCW3_READ_ISR);
    // After OCW3 the command ports read back the ISR (the data ports always read the masks).
    u16::from(inb(IoPort::Pic1Command)) | u16::from(inb(IoPort::Pic2Command)) << 8
}

/// Handles an interrupt on IRQ 7 or IRQ 15, the lowest-priority line of each PIC, which
/// the PICs also raise for a request that went away before it was acknowledged (a
/// "spurious" interrupt). A spurious IRQ must not be acknowledged at the PIC that raised it,
/// but a spurious IRQ 15 was still forwarded by the master, which needs its EOI.
/// Returns whether the interrupt was spurious.
pub fn handle_irq7_or_irq15(irq: u8) -> bool {
    debug_assert!(irq == 7 || irq == 15);
    let real = in_service() & (1 << irq) != 0;
    if real {
        end_of_interrupt(irq);
    } else if irq == 15 {
        outb(IoPort::Pic1Command, OCW2_END_OF_INTERRUPT);
    }
    !real
}

/// Programs PIT channel 0 (IRQ 0) to fire `hz` times a second, as closely as its 16-bit
/// divisor allows (19..=1_193_182 Hz). Returns the rate actually programmed.
pub fn set_timer_hz(hz: u32) -> u32 {
    let divisor = (PIT_BASE_HZ / hz.max(1)).clamp(1, 0xffff);
    // Command byte fields: channel (bits 7-6), access (5-4), mode (3-1), BCD (0).
    const CHANNEL_0: u8 = 0b00 << 6;
    const LOW_THEN_HIGH_BYTE: u8 = 0b11 << 4;
    const MODE_2_RATE_GENERATOR: u8 = 0b010 << 1;
    outb(
        IoPort::PitCommand,
        CHANNEL_0 | LOW_THEN_HIGH_BYTE | MODE_2_RATE_GENERATOR,
    );
    outb(IoPort::PitChannel0, divisor as u8);
    outb(IoPort::PitChannel0, (divisor >> 8) as u8);
    PIT_BASE_HZ / divisor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn only_the_timer_is_unmasked() {
        // Once the local APIC timers tick, the PIT's line is masked too.
        let timer = if crate::smp::lapic_timer() { 1 } else { 0 };
        assert_eq!(masks(), (PIC1_MASK | timer, PIC2_MASK));
    }

    #[test_case]
    fn no_irq_left_in_service() {
        // Every handler sent its EOI; while no handler runs, nothing is in service.
        x86_64::instructions::interrupts::without_interrupts(|| assert_eq!(in_service(), 0));
    }
}
