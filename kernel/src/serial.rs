//! Serial console on COM1 (16550 UART), the kernel's only output.
//!
//! The port sits behind a spin lock. Every print runs with interrupts disabled, so an
//! interrupt handler that prints can never find the lock held by the code it interrupted
//! (on this single-CPU kernel that would spin forever).

use core::fmt::{self, Write};
use spin::{LazyLock, Mutex};
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// I/O base port of COM1.
pub const COM1_PORT: u16 = 0x3f8;

/// COM1, configured on first use.
static COM1: LazyLock<Mutex<SerialPort>> = LazyLock::new(|| Mutex::new(SerialPort::com1()));

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
        let mut port = COM1.lock();
        // `SerialPort::write_str` never fails, so only a failing `Display` impl can.
        let _ = port.write_fmt(args);
        if newline {
            let _ = port.write_str("\n");
        }
    });
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
