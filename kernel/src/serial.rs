//! Serial console on COM1 (16550 UART), the kernel's only output.
//!
//! The port sits behind a spin lock shared by every CPU; a line is written whole under it.
//! Every print runs with interrupts disabled on its CPU, so an interrupt handler that
//! prints can never find the lock held by the code it interrupted on the same CPU (that
//! would spin forever). The lock remembers which CPU holds it: a CPU that panics while
//! printing takes it back instead of waiting for itself.
//!
//! Input is off until [`enable_input`]: then the UART raises IRQ 4 for every byte it
//! receives, the handler moves the bytes into a lock-free queue, and [`read_byte`] takes
//! them out, halting the CPU while there is nothing to read. When the queue is full the
//! handler leaves the rest in the UART and turns its receive interrupt off; the UART's
//! buffer fills, and QEMU then holds back further input until [`read_byte`] has made room
//! and turned the interrupt on again. So a burst longer than the queue loses nothing.

use crate::ringbuf::ByteRing;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::{LazyLock, Mutex, MutexGuard};
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::IER;
use uart_16550::{Config, Uart16550};

/// I/O base port of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// The PIC line COM1 interrupts on.
pub const COM1_IRQ: u8 = 4;

/// Bytes the receive queue holds: typing outpaces no reader, so a few lines suffice; a
/// longer burst waits in the UART (see the module's documentation).
pub const RX_CAPACITY: usize = 256;

/// Bytes received and not yet read.
static RX: ByteRing<RX_CAPACITY> = ByteRing::new();
/// The queue was full: the receive interrupt is off until [`read_byte`] makes room.
static RX_PAUSED: AtomicBool = AtomicBool::new(false);
/// Bytes dropped because [`RX`] was full.
static RX_DROPPED: AtomicU64 = AtomicU64::new(0);

/// COM1, configured on first use.
static COM1: LazyLock<Mutex<SerialPort>> = LazyLock::new(|| Mutex::new(SerialPort::com1()));
/// The CPU holding [`COM1`]'s lock, or `usize::MAX`.
static OWNER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// [`COM1`] locked by this CPU; interrupts must be off.
struct PortGuard(Option<MutexGuard<'static, SerialPort>>);

fn lock_port() -> PortGuard {
    let me = crate::smp::cpu_id();
    loop {
        if let Some(guard) = COM1.try_lock() {
            OWNER.store(me, Ordering::Relaxed);
            return PortGuard(Some(guard));
        }
        if OWNER.load(Ordering::Relaxed) == me && crate::smp::panicking_here() {
            // This CPU panicked while printing: the holder below us will never run again.
            // SAFETY: the only holder is this CPU's interrupted print, which never resumes
            // (the panic handler ends the run), so no one else uses the port.
            unsafe { COM1.force_unlock() };
        }
        core::hint::spin_loop();
    }
}

impl core::ops::Deref for PortGuard {
    type Target = SerialPort;
    fn deref(&self) -> &SerialPort {
        self.0.as_ref().expect("guard is present until drop")
    }
}

impl core::ops::DerefMut for PortGuard {
    fn deref_mut(&mut self) -> &mut SerialPort {
        self.0.as_mut().expect("guard is present until drop")
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        OWNER.store(usize::MAX, Ordering::Relaxed);
        drop(self.0.take());
    }
}

/// A UART that sends Rust strings unchanged (`\n` stays `\n`, so the host sees plain lines).
struct SerialPort(Uart16550<PioBackend>);

impl SerialPort {
    fn com1() -> Self {
        // SAFETY: 0x3f8..0x400 are COM1's registers on every PC and QEMU machine, and this
        // module is the only code in the kernel that touches them.
        let mut uart = unsafe { Uart16550::new_port(COM1_PORT) }.expect("COM1 port range is valid");
        // A missing UART leaves us without output; nothing better to do than carry on.
        let _ = uart.init(Config::default());
        SerialPort(uart)
    }
}

impl Write for SerialPort {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.send_bytes_exact(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments, newline: bool) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut port = lock_port();
        // `SerialPort::write_str` never fails, so only a failing `Display` impl can.
        let _ = port.write_fmt(args);
        if newline {
            let _ = port.write_str("\n");
        }
    });
}

/// Turns on serial input: the UART interrupts on received data, and IRQ 4 is unmasked at
/// the PIC. Bytes that arrived before are queued too.
pub fn enable_input() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut guard = lock_port();
        let port: &mut SerialPort = &mut guard;
        port.0.enable_interrupts(IER::DATA_READY);
        drain_receiver(port);
    });
    crate::pic::unmask(COM1_IRQ);
}

/// Called by the IRQ 4 handler: moves every byte the UART holds into the queue.
pub(crate) fn on_receive_interrupt() {
    // Everyone else takes this lock with interrupts off, so on this CPU it is free.
    drain_receiver(&mut lock_port());
}

fn drain_receiver(port: &mut SerialPort) {
    // Reading the data register until the UART is empty also clears its interrupt. Read
    // only what the queue has room for: the rest waits in the UART, which makes QEMU hold
    // back more input, and the interrupt stays off until `read_byte` has made room.
    while RX.len() < RX_CAPACITY {
        let Ok(byte) = port.0.try_receive_byte() else {
            return;
        };
        if !RX.push(byte) {
            RX_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    port.0.disable_interrupts(IER::DATA_READY);
    RX_PAUSED.store(true, Ordering::Relaxed);
}

/// After a read: takes input again once the queue is half empty. Interrupts must be off.
fn resume_receiver() {
    if RX_PAUSED.load(Ordering::Relaxed) && RX.len() <= RX_CAPACITY / 2 {
        // Interrupts are off, and every other user of the lock turns them off too.
        let mut port = COM1.lock();
        RX_PAUSED.store(false, Ordering::Relaxed);
        port.0.enable_interrupts(IER::DATA_READY);
        drain_receiver(&mut port);
    }
}

/// The next received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let byte = RX.pop();
        resume_receiver();
        byte
    })
}

/// The next received byte; halts the CPU until one arrives. Needs [`enable_input`] (and
/// interrupts enabled), or it waits forever.
pub fn read_byte() -> u8 {
    loop {
        // Check and halt with interrupts off, and let `sti; hlt` enable them: a byte that
        // arrives between the check and the halt then wakes the halt instead of being
        // noticed only at the next timer tick.
        x86_64::instructions::interrupts::disable();
        if let Some(byte) = RX.pop() {
            resume_receiver();
            x86_64::instructions::interrupts::enable();
            return byte;
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Bytes lost because the input queue was full (none since the receiver pauses; kept as
/// a check).
pub fn input_dropped() -> u64 {
    RX_DROPPED.load(Ordering::Relaxed)
}

/// Prints to COM1 (the host's terminal when run under `boot/`).
#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!($($arg)*), false)
    };
}

/// Prints to COM1, with a newline.
#[macro_export]
macro_rules! serial_println {
    () => {
        $crate::serial::_print(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::serial::_print(format_args!($($arg)*), true)
    };
}

#[cfg(test)]
mod tests {
    #[test_case]
    fn println_many_lines() {
        for i in 0..5 {
            serial_println!("serial line {i}");
        }
    }

    #[test_case]
    fn println_with_interrupts_disabled() {
        // Printing nests its own interrupt-free section inside this one: it must neither
        // deadlock nor turn interrupts back on when it is done.
        x86_64::instructions::interrupts::without_interrupts(|| {
            serial_println!("printing with interrupts off");
            assert!(!x86_64::instructions::interrupts::are_enabled());
        });
        assert!(x86_64::instructions::interrupts::are_enabled());
    }
}
