//! Per-CPU data, reached through the `GS` segment base.
//!
//! Every CPU's `IA32_GS_BASE` points at its own [`PerCpu`] block in [`CPUS`], so the CPU's
//! index is one `gs:`-relative load. The bootstrap CPU sets its base first thing in
//! `kernel::init`; an application processor gets its base from the trampoline before it
//! runs any Rust code. Until the bootstrap CPU has done so, [`cpu_id`] answers 0 without
//! touching `GS` (an early panic must not fault).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::GsBase;

use super::MAX_CPUS;

/// A job posted to a CPU: the caller waits until it has run, so the reference outlives
/// its use although its type says `'static`.
#[derive(Clone, Copy)]
pub(super) struct Job(pub(super) &'static (dyn Fn(usize) + Sync));

/// One CPU's block. `id` comes first: [`cpu_id`] reads it at `gs:[0]`.
#[repr(C)]
pub(crate) struct PerCpu {
    /// Index of this CPU (0 = bootstrap CPU, then start order).
    pub(super) id: AtomicUsize,
    /// Local APIC id.
    pub(super) apic_id: AtomicU32,
    /// Whether the CPU is up and taking jobs.
    pub(super) online: AtomicBool,
    /// Timer interrupts handled on this CPU.
    pub(crate) ticks: AtomicU64,
    /// Number of jobs posted to this CPU so far.
    pub(super) posted: AtomicU64,
    /// Number of posted jobs it has finished.
    pub(super) done: AtomicU64,
    /// The job to run when `posted` moves past `done`.
    pub(super) job: spin::Mutex<Option<Job>>,
    /// Whether the CPU is running a posted job (a job must not post jobs).
    pub(super) in_job: AtomicBool,
}

impl PerCpu {
    const fn new() -> PerCpu {
        PerCpu {
            id: AtomicUsize::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            job: spin::Mutex::new(None),
            in_job: AtomicBool::new(false),
        }
    }
}

/// Every CPU's block, indexed by CPU index.
pub(crate) static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Set once the bootstrap CPU's `GS` base points at its block.
static GS_READY: AtomicBool = AtomicBool::new(false);

const _: () = assert!(core::mem::offset_of!(PerCpu, id) == 0);

/// Points this CPU's `GS` base at `CPUS[0]`. Called first thing by `kernel::init`.
pub(super) fn init_bsp() {
    CPUS[0].id.store(0, Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(&CPUS[0]));
    GS_READY.store(true, Ordering::Release);
}

/// The value an application processor's `GS` base must hold.
pub(super) fn gs_base_for(cpu: usize) -> u64 {
    CPUS[cpu].id.store(cpu, Ordering::Relaxed);
    &raw const CPUS[cpu] as u64
}

/// Index of the CPU this runs on: 0 for the bootstrap CPU, then 1, 2, ... in start order.
#[inline]
pub fn cpu_id() -> usize {
    if !GS_READY.load(Ordering::Relaxed) {
        return 0;
    }
    let id: usize;
    // SAFETY: once GS_READY is set, every CPU's GS base points at its `PerCpu`, whose
    // first field is the index: the bootstrap CPU's since `init_bsp`, an application
    // processor's since its trampoline, before any Rust code ran there.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr gs:[0]",
            out(reg) id,
            options(nostack, readonly, preserves_flags)
        );
    }
    id
}

/// This CPU's block.
pub(crate) fn this_cpu() -> &'static PerCpu {
    &CPUS[cpu_id()]
}
