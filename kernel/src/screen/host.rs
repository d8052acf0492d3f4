//! Talking to the host tool (`boot/`) about the picture, through two devices QEMU has:
//!
//! - **fw_cfg** (ports 0x510/0x511), QEMU's read-only configuration store: `boot` adds
//!   the files `opt/kernel/screendump` when it takes a screendump and
//!   `opt/kernel/display` when a window shows the screen. Without QEMU the signature
//!   check fails and nothing is requested.
//! - the **PS/2 keyboard controller** (ports 0x60/0x64): after taking a screendump,
//!   `boot` presses a key through QEMU's monitor (`sendkey`), which tells the kernel it
//!   may go on. In a window, a person presses the key. IRQ 1 stays masked: the kernel
//!   polls the controller's status.

use spin::Once;
use x86_64::instructions::port::Port;

use crate::interrupts;

/// fw_cfg's selector register (16 bits, write).
const FW_CFG_SELECTOR: u16 = 0x510;
/// fw_cfg's data register (8 bits, read).
const FW_CFG_DATA: u16 = 0x511;
/// Item holding "QEMU".
const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Item holding the directory of named files.
const FW_CFG_FILE_DIR: u16 = 0x0019;
/// Bytes of a file name in a directory entry.
const FW_CFG_NAME_BYTES: usize = 56;

/// The keyboard controller's data port.
const KBD_DATA: u16 = 0x60;
/// The keyboard controller's status port; bit 0 set: a byte waits at the data port.
const KBD_STATUS: u16 = 0x64;

/// fw_cfg file: the host takes a screendump when the kernel prints [`MARKER`].
pub const SCREENDUMP_FILE: &str = "opt/kernel/screendump";
/// fw_cfg file: a window shows the screen, so the kernel pauses to let people look.
pub const DISPLAY_FILE: &str = "opt/kernel/display";

/// The line the host waits for before it takes a screendump.
pub const MARKER: &str = "screen: drawn";

/// What the host asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Print [`MARKER`] and wait for the host's key once the picture is final.
    pub screendump: bool,
    /// Someone watches the screen in a window.
    pub display: bool,
}

static REQUESTS: Once<Requests> = Once::new();

/// What the host asked for (read from fw_cfg once).
pub fn requests() -> Requests {
    *REQUESTS.call_once(|| {
        if !fw_cfg_present() {
            return Requests::default();
        }
        Requests {
            screendump: fw_cfg_has_file(SCREENDUMP_FILE),
            display: fw_cfg_has_file(DISPLAY_FILE),
        }
    })
}

/// Reads the next byte of the selected fw_cfg item.
fn fw_cfg_byte() -> u8 {
    // SAFETY: reading fw_cfg's data port returns the next byte of the selected item; it
    // has no other effect (the DMA interface, which could write memory, is not used).
    unsafe { Port::<u8>::new(FW_CFG_DATA).read() }
}

fn fw_cfg_select(item: u16) {
    // SAFETY: writing the selector only chooses which item the data port reads.
    unsafe { Port::<u16>::new(FW_CFG_SELECTOR).write(item) }
}

fn fw_cfg_be32() -> u32 {
    u32::from_be_bytes([fw_cfg_byte(), fw_cfg_byte(), fw_cfg_byte(), fw_cfg_byte()])
}

fn fw_cfg_present() -> bool {
    fw_cfg_select(FW_CFG_SIGNATURE);
    [fw_cfg_byte(), fw_cfg_byte(), fw_cfg_byte(), fw_cfg_byte()] == *b"QEMU"
}

/// Whether fw_cfg's directory lists `name`. Entries are: size (4 bytes), item (2),
/// reserved (2), then the name, NUL padded; numbers are big-endian.
fn fw_cfg_has_file(name: &str) -> bool {
    fw_cfg_select(FW_CFG_FILE_DIR);
    let count = fw_cfg_be32();
    // QEMU keeps a few dozen files; a larger count means something else answers.
    for _ in 0..count.min(1024) {
        for _ in 0..8 {
            fw_cfg_byte();
        }
        let mut entry = [0u8; FW_CFG_NAME_BYTES];
        for b in &mut entry {
            *b = fw_cfg_byte();
        }
        let len = entry
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(FW_CFG_NAME_BYTES);
        if &entry[..len] == name.as_bytes() {
            return true;
        }
    }
    false
}

fn kbd_has_byte() -> bool {
    // SAFETY: reading the controller's status register has no side effect.
    unsafe { Port::<u8>::new(KBD_STATUS).read() & 1 != 0 }
}

fn kbd_read() -> u8 {
    // SAFETY: reading the data port takes the waiting byte out of the controller; the
    // kernel has no keyboard driver that could miss it.
    unsafe { Port::<u8>::new(KBD_DATA).read() }
}

/// Throws away bytes the keyboard controller holds (keys pressed earlier).
pub fn drain_keys() {
    for _ in 0..64 {
        if !kbd_has_byte() {
            return;
        }
        kbd_read();
    }
}

/// Waits up to `ticks` timer ticks for a key press; returns whether one came. Needs
/// interrupts enabled (the timer wakes the CPU to look).
pub fn wait_for_key(ticks: u64) -> bool {
    let end = interrupts::ticks() + ticks;
    // Each `hlt` returns at the next interrupt; the bound also ends the wait if the
    // timer stopped.
    for _ in 0..ticks.saturating_mul(100).max(100) {
        if kbd_has_byte() {
            // Let the rest of the key (its release) arrive, then drop it.
            interrupts::wait_ticks(2);
            drain_keys();
            return true;
        }
        if interrupts::ticks() >= end {
            break;
        }
        x86_64::instructions::hlt();
    }
    false
}
