//! Several CPUs: the application processors (APs) started from ACPI's MADT, per-CPU data
//! through `GS`, each CPU's local APIC timer, and jobs run on every CPU at once.
//!
//! How a CPU comes up (all in [`init`], on the bootstrap CPU, before `kernel::init` turns
//! interrupts on for good):
//! 1. [`acpi`] finds the MADT from the RSDP the bootloader found and lists the CPUs;
//! 2. [`lapic`] enables the bootstrap CPU's local APIC; its timer and the TSC are
//!    calibrated once against the PIT's interrupts (median of three 30 ms runs). The PIT's
//!    IRQ 0 is masked after that: every CPU, the bootstrap one included, ticks from its
//!    own local APIC timer at [`TIMER_HZ`](crate::interrupts::TIMER_HZ);
//! 3. each AP gets a stack and a double-fault stack in a region of the kernel's address
//!    space with unmapped guard pages around them;
//! 4. [`trampoline`] copies the real-mode start-up code into a frame below 1 MiB (taken
//!    from the page allocator with its address limit) and builds temporary page tables;
//! 5. one AP after the other: INIT, 10 ms, start-up IPI, 200 us, a second start-up IPI if
//!    it has not started, then at most [`AP_START_TIMEOUT_MS`] for it to report in. It
//!    runs [`ap_entry`]: the kernel's CR3, its own GDT and TSS, the shared IDT, its local
//!    APIC and timer; then it idles with `hlt`, waiting for jobs. A CPU that does not
//!    report in is sent INIT again (so it cannot run the freed code later) and reported
//!    by APIC id;
//! 6. the trampoline frame and the temporary tables go back to the allocator.
//!
//! [`run_on_all_cpus`] and [`run_on_cpu`] post a job to each CPU's mailbox and wake it
//! with an IPI. A panic on any CPU is reported as "panicked on CPU n" and ends the run
//! like a panic on the bootstrap CPU.

pub mod acpi;
pub mod lapic;
mod percpu;
pub mod trampoline;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, Once};
use x86_64::VirtAddr;
use x86_64::structures::paging::{Mapper, Page, PageTableFlags, Size4KiB};

use crate::interrupts::{self, APIC_ERROR_VECTOR, APIC_SPURIOUS_VECTOR, APIC_TIMER_VECTOR};
use crate::mm::{self, global_frame_allocator};
use crate::serial_println;
use percpu::Job;
pub use percpu::cpu_id;
pub(crate) use percpu::{CPUS, this_cpu};

/// The most CPUs the kernel runs on; every per-CPU array is this long. CPUs beyond it are
/// reported and left alone.
pub const MAX_CPUS: usize = 16;

/// How long an AP has, after the second start-up IPI, to report in. APs report in after
/// 1-20 ms under QEMU; with 8 CPUs on a busy 2-core host one took 88 ms, so the bound is
/// generous (it only costs time when a CPU is really missing).
pub const AP_START_TIMEOUT_MS: u64 = 500;

/// Vector of the IPI that wakes a CPU for a job.
pub const WAKE_VECTOR: u8 = 0xf0;

/// PIT ticks over which the local APIC timer and the TSC are calibrated (three times).
const CALIBRATION_TICKS: u64 = 3;

/// Pages of each AP's kernel stack (a guard page below it stays unmapped).
pub const AP_STACK_PAGES: u64 = 16;
/// Pages of each AP's double-fault stack (with its own guard page below).
const AP_DF_STACK_PAGES: u64 = 5;
/// Virtual space per AP: guard, stack, guard, double-fault stack, rest unmapped.
const SLOT_PAGES: u64 = 32;

static ONLINE: AtomicUsize = AtomicUsize::new(1);
static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
static LAPIC_TIMER: AtomicBool = AtomicBool::new(false);
static STACK_REGION: AtomicU64 = AtomicU64::new(0);
static REPORT: Once<SmpReport> = Once::new();
/// Held while jobs are out, so two callers cannot mix their jobs.
static RUN_LOCK: Mutex<()> = Mutex::new(());
/// The CPU that is reporting a panic, or `usize::MAX`.
static PANICKING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// What [`init`] found and did.
#[derive(Clone, Debug, Default)]
pub struct SmpReport {
    /// Why only the bootstrap CPU runs (no MADT, no local APIC, no memory...), if so.
    pub problem: Option<String>,
    /// CPUs the MADT lists (enabled or online-capable).
    pub listed: usize,
    /// APIC ids of CPUs that did not report in within the timeout.
    pub not_answering: Vec<u32>,
    /// APIC ids of CPUs not started: beyond [`MAX_CPUS`], or not addressable in xAPIC mode.
    pub not_started: Vec<u32>,
    /// Physical address of the start-up code's frame (returned to the allocator since).
    pub trampoline: Option<u64>,
    /// Whether the trampoline frame and the temporary page tables were freed.
    pub temporary_frames_freed: bool,
    /// Local APIC timer counts (bus clock / 16) per tick.
    pub timer_count: u32,
    /// TSC cycles per millisecond.
    pub tsc_per_ms: u64,
    /// Microseconds from INIT until each started AP reported in, in start order.
    pub start_us: Vec<u64>,
}

/// Sets up the bootstrap CPU's per-CPU data (`GS` base). `kernel::init` calls it first.
pub fn init_bsp() {
    percpu::init_bsp();
}

/// CPUs running (1 until [`init`] has started the others).
pub fn cpus_online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The local APIC id of CPU `cpu`, if it is online.
pub fn apic_id(cpu: usize) -> Option<u32> {
    (cpu < cpus_online()).then(|| CPUS[cpu].apic_id.load(Ordering::Relaxed))
}

/// The local APIC id read from this CPU's own local APIC (`None` without one).
pub fn current_apic_id() -> Option<u32> {
    lapic::is_enabled().then(lapic::id)
}

/// Whether the CPUs tick from their local APIC timers (else the bootstrap CPU alone ticks
/// from the PIT).
pub fn lapic_timer() -> bool {
    LAPIC_TIMER.load(Ordering::Acquire)
}

/// What [`init`] found and did; `None` before it ran.
pub fn report() -> Option<&'static SmpReport> {
    REPORT.get()
}

/// The banner line: "4 CPUs up (APIC ids 0, 1, 2, 3)", and the CPUs left out.
pub fn summary() -> Summary {
    Summary
}

/// See [`summary`].
pub struct Summary;

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = cpus_online();
        write!(f, "{n} CPU{} up (APIC id", if n == 1 { "" } else { "s" })?;
        if n > 1 {
            write!(f, "s")?;
        }
        for cpu in 0..n {
            let sep = if cpu == 0 { " " } else { ", " };
            write!(f, "{sep}{}", apic_id(cpu).unwrap_or(0))?;
        }
        write!(f, ")")?;
        if let Some(r) = report() {
            if let Some(p) = &r.problem {
                write!(f, "; {p}")?;
            }
            if !r.not_answering.is_empty() {
                write!(f, "; no answer from APIC ids {:?}", r.not_answering)?;
            }
            if !r.not_started.is_empty() {
                write!(f, "; not started: APIC ids {:?}", r.not_started)?;
            }
        }
        Ok(())
    }
}

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only reads the time-stamp counter into edx:eax.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Microseconds since `start` (a TSC value), once the TSC is calibrated.
fn micros_since(start: u64) -> u64 {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed).max(1);
    rdtsc().saturating_sub(start) * 1000 / per_ms
}

/// Spins for `us` microseconds (TSC, calibrated against the PIT).
fn delay_us(us: u64) {
    let start = rdtsc();
    while micros_since(start) < us {
        core::hint::spin_loop();
    }
}

/// Finds the CPUs, switches every CPU's timer to its local APIC and starts the APs.
/// Called by `kernel::init` after memory management, with interrupts off (it turns them
/// on for the calibration only). Without a MADT or a local APIC, only the bootstrap CPU
/// runs and the PIT keeps ticking.
pub fn init(rsdp_addr: Option<u64>) {
    let mut report = SmpReport::default();
    CPUS[0].online.store(true, Ordering::Release);
    if let Err(problem) = init_inner(rsdp_addr, &mut report) {
        serial_println!("smp: {problem}; running on the bootstrap CPU only");
        report.problem = Some(problem);
    }
    REPORT.call_once(|| report);
}

fn init_inner(rsdp_addr: Option<u64>, report: &mut SmpReport) -> Result<(), String> {
    let madt = acpi::read_madt(rsdp_addr).map_err(|e| format!("{e}"))?;
    report.listed = madt.cpus.len();
    lapic::init_bsp(APIC_SPURIOUS_VECTOR, APIC_ERROR_VECTOR).map_err(|e| format!("{e}"))?;
    let bsp = lapic::id();
    CPUS[0].apic_id.store(bsp, Ordering::Relaxed);

    let (count, tsc_per_ms) = calibrate().ok_or("the PIT does not tick: cannot calibrate")?;
    TIMER_COUNT.store(count, Ordering::Relaxed);
    TSC_PER_MS.store(tsc_per_ms, Ordering::Relaxed);
    report.timer_count = count;
    report.tsc_per_ms = tsc_per_ms;
    lapic::start_periodic_timer(APIC_TIMER_VECTOR, count);
    crate::pic::mask(0);
    LAPIC_TIMER.store(true, Ordering::Release);

    let mut todo = Vec::new();
    for cpu in madt.cpus.iter().filter(|c| c.apic_id != bsp) {
        // xAPIC destinations are 8 bits, 0xff is broadcast.
        if cpu.apic_id >= 0xff || todo.len() + 1 >= MAX_CPUS {
            report.not_started.push(cpu.apic_id);
        } else {
            todo.push(cpu.apic_id);
        }
    }
    if !report.not_started.is_empty() {
        serial_println!(
            "smp: not starting CPUs with APIC ids {:?} (at most {MAX_CPUS} CPUs, APIC ids below 255)",
            report.not_started
        );
    }
    if todo.is_empty() {
        return Ok(());
    }
    map_stacks(todo.len()).map_err(|e| format!("no memory for the CPUs' stacks: {e}"))?;
    let mut tramp = trampoline::Trampoline::new().map_err(|e| format!("{e}"))?;
    report.trampoline = Some(tramp.address());
    for apic in todo {
        let cpu = cpus_online();
        let started = rdtsc();
        match start_ap(&mut tramp, cpu, apic) {
            Ok(()) => {
                report.start_us.push(micros_since(started));
                ONLINE.store(cpu + 1, Ordering::Release);
            }
            Err(how_far) => {
                serial_println!(
                    "smp: the CPU with APIC id {apic} did not report in within {AP_START_TIMEOUT_MS} ms ({how_far}); left halted"
                );
                report.not_answering.push(apic);
            }
        }
    }
    drop(tramp);
    report.temporary_frames_freed = true;
    Ok(())
}

/// Measures the local APIC timer and the TSC against the PIT: three times over
/// [`CALIBRATION_TICKS`] ticks, keeping the median of each (a busy host can delay one
/// tick's interrupt by milliseconds). Returns (timer counts per tick, TSC cycles per ms).
fn calibrate() -> Option<(u32, u64)> {
    let mut counts = [0u64; 3];
    let mut tsc = [0u64; 3];
    x86_64::instructions::interrupts::enable();
    let mut ok = true;
    for i in 0..3 {
        // Start on a tick's edge.
        ok &= interrupts::wait_ticks(1);
        let t0 = rdtsc();
        lapic::start_calibration(APIC_TIMER_VECTOR);
        ok &= interrupts::wait_ticks(CALIBRATION_TICKS);
        counts[i] = u64::from(lapic::stop_calibration());
        tsc[i] = rdtsc() - t0;
    }
    x86_64::instructions::interrupts::disable();
    counts.sort_unstable();
    tsc.sort_unstable();
    let ms = CALIBRATION_TICKS * 1000 / u64::from(interrupts::TIMER_HZ);
    ok.then(|| ((counts[1] / CALIBRATION_TICKS) as u32, (tsc[1] / ms).max(1)))
}

/// INIT-SIPI-SIPI for one AP; waits for it to report in.
fn start_ap(tramp: &mut trampoline::Trampoline, cpu: usize, apic: u32) -> Result<(), &'static str> {
    let gs = percpu::gs_base_for(cpu);
    tramp.prepare(gs, stack_top(cpu), cpu as u64, ap_entry as *const () as u64);
    CPUS[cpu].online.store(false, Ordering::Release);
    let online = || CPUS[cpu].online.load(Ordering::Acquire);
    lapic::send_init(apic);
    delay_us(10_000);
    lapic::send_startup(apic, tramp.vector());
    delay_us(200);
    if !online() {
        lapic::send_startup(apic, tramp.vector());
    }
    let start = rdtsc();
    while !online() {
        if micros_since(start) > AP_START_TIMEOUT_MS * 1000 {
            let how_far = if tramp.reached_long_mode() {
                "it reached 64-bit mode"
            } else {
                "it never reached 64-bit mode"
            };
            // Back to waiting for a start-up IPI: it must not run the code once freed.
            lapic::send_init(apic);
            return Err(how_far);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

fn slot_base(cpu: usize) -> u64 {
    STACK_REGION.load(Ordering::Relaxed) + cpu as u64 * SLOT_PAGES * 4096
}

/// Top of CPU `cpu`'s kernel stack (an AP's).
fn stack_top(cpu: usize) -> u64 {
    slot_base(cpu) + (1 + AP_STACK_PAGES) * 4096
}

/// Top of CPU `cpu`'s double-fault stack (an AP's).
fn df_stack_top(cpu: usize) -> u64 {
    stack_top(cpu) + (1 + AP_DF_STACK_PAGES) * 4096
}

/// The virtual range `[start, end)` of AP `cpu`'s kernel stack (for tests: the pages
/// just below and above are unmapped).
pub fn ap_stack(cpu: usize) -> Option<core::ops::Range<u64>> {
    (cpu > 0 && cpu < cpus_online()).then(|| stack_top(cpu) - AP_STACK_PAGES * 4096..stack_top(cpu))
}

/// The virtual range `[start, end)` of AP `cpu`'s double-fault stack (its IST entry).
pub fn ap_double_fault_stack(cpu: usize) -> Option<core::ops::Range<u64>> {
    (cpu > 0 && cpu < cpus_online())
        .then(|| df_stack_top(cpu) - AP_DF_STACK_PAGES * 4096..df_stack_top(cpu))
}

/// Maps the stacks of CPUs 1..=aps in a free top-level entry of the kernel's upper half.
fn map_stacks(aps: usize) -> Result<(), mm::FrameError> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: the only other code that changes the kernel's page tables is the heap,
        // under its lock with interrupts off. Here interrupts are off and no other CPU
        // runs yet, and nothing below allocates from the heap, so nothing else changes the
        // tables while this mapper lives.
        let mut mapper = unsafe { mm::mapper_for(mm::kernel_pml4()) };
        let heap_entry = (mm::heap::HEAP_START >> 39) & 511;
        let free = (heap_entry as usize + 1..511)
            .find(|&i| mapper.level_4_table()[i].is_unused())
            .expect("a free top-level entry in the kernel's upper half");
        STACK_REGION.store(
            0xffff_0000_0000_0000 | (free as u64) << 39,
            Ordering::Relaxed,
        );
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
        for cpu in 1..=aps {
            let stack = stack_top(cpu) - AP_STACK_PAGES * 4096..stack_top(cpu);
            let df = df_stack_top(cpu) - AP_DF_STACK_PAGES * 4096..df_stack_top(cpu);
            for addr in stack.step_by(4096).chain(df.step_by(4096)) {
                let page = Page::<Size4KiB>::containing_address(VirtAddr::new(addr));
                let (frame, _) = mm::alloc_frame()?.into_raw();
                // SAFETY: the page lies in this module's own top-level entry, unused
                // before, and the frame was just allocated for it.
                match unsafe { mapper.map_to(page, frame, flags, &mut global_frame_allocator()) } {
                    Ok(flush) => flush.flush(),
                    Err(e) => panic!("mapping CPU {cpu}'s stack at {addr:#x}: {e:?}"),
                }
            }
        }
        Ok(())
    })
}

/// Where every AP enters the kernel, on its own stack, with `GS` set and the temporary
/// page tables loaded.
extern "C" fn ap_entry(cpu: usize) -> ! {
    use x86_64::registers::control::{Cr3, Cr3Flags};
    // SAFETY: the kernel's page tables map everything the temporary ones did in the upper
    // half (they share its entries), where this code and stack run.
    unsafe { Cr3::write(mm::kernel_pml4(), Cr3Flags::empty()) };
    crate::gdt::init_ap(VirtAddr::new(df_stack_top(cpu)));
    interrupts::init_ap();
    lapic::init_this_cpu(APIC_SPURIOUS_VECTOR, APIC_ERROR_VECTOR, false);
    CPUS[cpu].apic_id.store(lapic::id(), Ordering::Relaxed);
    lapic::start_periodic_timer(APIC_TIMER_VECTOR, TIMER_COUNT.load(Ordering::Relaxed));
    CPUS[cpu].online.store(true, Ordering::Release);
    idle(cpu)
}

/// An AP's life after start-up: run posted jobs, else halt until an interrupt.
fn idle(cpu: usize) -> ! {
    let me = &CPUS[cpu];
    loop {
        // Check with interrupts off and let `sti; hlt` turn them on: a wake-up IPI that
        // arrives after the check then ends the `hlt` instead of being lost.
        x86_64::instructions::interrupts::disable();
        let posted = me.posted.load(Ordering::Acquire);
        if posted == me.done.load(Ordering::Relaxed) {
            x86_64::instructions::interrupts::enable_and_hlt();
            continue;
        }
        x86_64::instructions::interrupts::enable();
        let job = (*me.job.lock()).expect("a posted job");
        me.in_job.store(true, Ordering::Relaxed);
        (job.0)(cpu);
        me.in_job.store(false, Ordering::Relaxed);
        me.done.store(posted, Ordering::Release);
    }
}

/// Why a job could not be run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    /// The CPU asked for is not online.
    NotOnline {
        /// The CPU asked for.
        cpu: usize,
        /// CPUs online.
        online: usize,
    },
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SmpError::NotOnline { cpu, online } => {
                write!(
                    f,
                    "CPU {cpu} is not online ({online} CPUs are: 0..{online})"
                )
            }
        }
    }
}

fn as_job<'a>(job: &'a (dyn Fn(usize) + Sync + 'a)) -> Job {
    // SAFETY: only the lifetime changes; every caller waits until each CPU it posted the
    // job to has finished it before returning, so the reference is never used after 'a.
    Job(unsafe {
        core::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static (dyn Fn(usize) + Sync)>(
            job,
        )
    })
}

fn check_not_in_job(what: &str) {
    let me = cpu_id();
    assert!(
        !CPUS[me].in_job.load(Ordering::Relaxed),
        "{what} called from a job on CPU {me}: it would wait for itself"
    );
}

fn post(cpu: usize, job: Job) {
    let c = &CPUS[cpu];
    *c.job.lock() = Some(job);
    c.posted.fetch_add(1, Ordering::Release);
    lapic::send_fixed(c.apic_id.load(Ordering::Relaxed), WAKE_VECTOR);
}

fn wait_done(cpu: usize) {
    let c = &CPUS[cpu];
    let target = c.posted.load(Ordering::Relaxed);
    while c.done.load(Ordering::Acquire) < target {
        core::hint::spin_loop();
    }
}

fn run_here(job: &(dyn Fn(usize) + Sync), me: usize) {
    CPUS[me].in_job.store(true, Ordering::Relaxed);
    job(me);
    CPUS[me].in_job.store(false, Ordering::Relaxed);
}

/// Runs `job(cpu_id)` on every online CPU at once, this one included, and returns when all
/// have finished. APs run it with interrupts on. Not from an interrupt handler or from
/// inside a job (that panics: it would wait for itself); callers on several CPUs take
/// turns. A panic in the job on any CPU ends the run like any kernel panic.
pub fn run_on_all_cpus(job: &(dyn Fn(usize) + Sync)) {
    check_not_in_job("run_on_all_cpus");
    let _turn = RUN_LOCK.lock();
    let me = cpu_id();
    let n = cpus_online();
    let posted = as_job(job);
    for cpu in (0..n).filter(|&c| c != me) {
        post(cpu, posted);
    }
    run_here(job, me);
    for cpu in (0..n).filter(|&c| c != me) {
        wait_done(cpu);
    }
}

/// Runs `job(cpu)` on CPU `cpu` and waits for it (runs it here if `cpu` is this CPU).
/// Same rules as [`run_on_all_cpus`].
pub fn run_on_cpu(cpu: usize, job: &(dyn Fn(usize) + Sync)) -> Result<(), SmpError> {
    let online = cpus_online();
    if cpu >= online {
        return Err(SmpError::NotOnline { cpu, online });
    }
    check_not_in_job("run_on_cpu");
    let _turn = RUN_LOCK.lock();
    if cpu == cpu_id() {
        run_here(job, cpu);
    } else {
        post(cpu, as_job(job));
        wait_done(cpu);
    }
    Ok(())
}

/// Called first by the panic handlers. The first CPU to panic reports; any other CPU that
/// panics meanwhile halts here for good (the first one ends the run). Prints which CPU
/// panicked when more than one runs.
pub fn enter_panic() {
    let me = cpu_id();
    let first = PANICKING
        .compare_exchange(usize::MAX, me, Ordering::AcqRel, Ordering::Acquire)
        .map_or_else(|first| first, |_| me);
    if first != me {
        x86_64::instructions::interrupts::disable();
        // The first CPU's report may need the serial port this CPU was printing with.
        crate::serial::release_if_held_here();
        crate::hlt_loop();
    }
    if me != 0 || cpus_online() > 1 {
        serial_println!(
            "panicked on CPU {me} (APIC id {})",
            CPUS[me].apic_id.load(Ordering::Relaxed)
        );
    }
}

/// The CPU reporting a panic, if one is.
pub fn panicking_cpu() -> Option<usize> {
    let cpu = PANICKING.load(Ordering::Acquire);
    (cpu != usize::MAX).then_some(cpu)
}

/// Whether this CPU is reporting a panic (the serial port then takes its own lock back).
pub(crate) fn panicking_here() -> bool {
    PANICKING.load(Ordering::Relaxed) == cpu_id()
}
