//! The local APIC in xAPIC mode, reached through the physical-memory mapping.
//!
//! Each CPU sees its own local APIC at the same physical address, so this module keeps one
//! virtual address for all of them. Its registers are 32-bit and 16-byte apart.
//! (On real hardware the MTRRs make this range uncached whatever the page tables say.)

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::PhysAddr;
use x86_64::registers::model_specific::Msr;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

const REG_ID: usize = 0x20;
const REG_TPR: usize = 0x80;
const REG_EOI: usize = 0xb0;
const REG_SVR: usize = 0xf0;
const REG_ESR: usize = 0x280;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
const REG_LVT_TIMER: usize = 0x320;
const REG_LVT_LINT0: usize = 0x350;
const REG_LVT_LINT1: usize = 0x360;
const REG_LVT_ERROR: usize = 0x370;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const LVT_EXTINT: u32 = 0b111 << 8;
const LVT_NMI: u32 = 0b100 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
/// Divide the bus clock by 16 for the timer.
const TIMER_DIVIDE_BY_16: u32 = 0b0011;

/// Virtual address of the registers; 0 until [`init_bsp`].
static BASE: AtomicU64 = AtomicU64::new(0);

/// Why the local APIC cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicError {
    /// The CPU runs its local APIC in x2APIC mode, which this module does not drive.
    X2ApicMode,
    /// The firmware disabled the local APIC globally.
    Disabled,
}

impl core::fmt::Display for LapicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LapicError::X2ApicMode => write!(
                f,
                "the firmware left the local APIC in x2APIC mode, which this kernel does not drive"
            ),
            LapicError::Disabled => write!(f, "the firmware disabled the local APIC"),
        }
    }
}

/// Finds the bootstrap CPU's local APIC and enables it: spurious vector, error vector,
/// LINT0 as the PICs' virtual wire, LINT1 as NMI. Returns the registers' physical address.
pub fn init_bsp(spurious: u8, error: u8) -> Result<u64, LapicError> {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effect.
    let msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
    if msr & APIC_BASE_X2APIC != 0 {
        return Err(LapicError::X2ApicMode);
    }
    if msr & APIC_BASE_ENABLE == 0 {
        return Err(LapicError::Disabled);
    }
    let phys = msr & 0x000f_ffff_ffff_f000;
    BASE.store(
        crate::mm::phys_to_virt(PhysAddr::new(phys)).as_u64(),
        Ordering::Release,
    );
    init_this_cpu(spurious, error, true);
    Ok(phys)
}

/// Enables this CPU's local APIC (an application processor's after [`init_bsp`]).
pub fn init_this_cpu(spurious: u8, error: u8, bsp: bool) {
    write(REG_TPR, 0);
    write(REG_LVT_ERROR, u32::from(error));
    if bsp {
        // Keep the 8259 PICs' interrupts (COM1) arriving through LINT0 on this CPU.
        write(REG_LVT_LINT0, LVT_EXTINT);
        write(REG_LVT_LINT1, LVT_NMI);
    } else {
        write(REG_LVT_LINT0, LVT_MASKED);
        write(REG_LVT_LINT1, LVT_MASKED);
    }
    write(REG_SVR, SVR_ENABLE | u32::from(spurious));
    // Clear errors left from before (the ESR is written, then read).
    write(REG_ESR, 0);
    let _ = read(REG_ESR);
    end_of_interrupt();
}

fn reg(offset: usize) -> *mut u32 {
    let base = BASE.load(Ordering::Acquire);
    assert!(base != 0, "local APIC used before smp::init");
    (base as usize + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: `reg` points into this CPU's local APIC register page (mapped by the
    // physical-memory mapping); its registers are aligned u32s, reading them touches no
    // memory.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; writing a local APIC register affects interrupt delivery,
    // never memory.
    unsafe { reg(offset).write_volatile(value) }
}

/// Whether [`init_bsp`] found a usable local APIC.
pub fn is_enabled() -> bool {
    BASE.load(Ordering::Acquire) != 0
}

/// This CPU's local APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Acknowledges the interrupt in service on this CPU.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

/// Reads and clears the error status register.
pub fn read_error_status() -> u32 {
    write(REG_ESR, 0);
    read(REG_ESR)
}

/// Sends an interrupt command and waits until the local APIC has sent it.
fn send_ipi(apic_id: u32, command: u32) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // An interrupt handler sending its own IPI between the two writes would change
        // the destination: interrupts stay off.
        write(REG_ICR_HIGH, apic_id << 24);
        write(REG_ICR_LOW, command);
        while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
            core::hint::spin_loop();
        }
    });
}

/// Sends INIT (assert) to the CPU with `apic_id`: it resets and waits for a start-up IPI.
pub fn send_init(apic_id: u32) {
    send_ipi(apic_id, ICR_INIT | ICR_LEVEL_ASSERT);
}

/// Sends a start-up IPI: the CPU starts in real mode at physical `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_ipi(apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | u32::from(page));
}

/// Sends a fixed interrupt `vector` to the CPU with `apic_id`.
pub fn send_fixed(apic_id: u32, vector: u8) {
    send_ipi(apic_id, ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Starts the timer counting down from `u32::MAX` (divided by 16), masked, one-shot.
pub fn start_calibration(vector: u8) {
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(vector));
    write(REG_TIMER_INITIAL, u32::MAX);
}

/// Counts the timer went down since [`start_calibration`]; stops it.
pub fn stop_calibration() -> u32 {
    let left = read(REG_TIMER_CURRENT);
    write(REG_TIMER_INITIAL, 0);
    u32::MAX - left
}

/// Starts this CPU's timer: `vector` every `count` ticks of the bus clock divided by 16.
pub fn start_periodic_timer(vector: u8, count: u32) {
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
    write(REG_TIMER_INITIAL, count.max(1));
}
