//! The frame allocator on several CPUs at once (run at 2 and 4 CPUs, see KERNEL_TEST_RUNS
//! in run-qemu.sh): churn of every kind on every CPU with a timer hook that allocates too,
//! frees of one frame racing on all CPUs, a CPU's own interrupt racing its free, frees of
//! frames another CPU's batch holds, and exhaustion with every CPU allocating.
//!
//! "Nothing handed out twice" is checked exactly: a bitmap with one atomic bit per frame
//! of physical memory is set when a test takes a frame and cleared when it gives it back;
//! setting a bit that is already set means the allocator handed that frame out twice.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kernel::mm::pagealloc::RangeOpError;
use kernel::mm::{self, FRAME_SIZE, FrameError, FrameRequest, Frames};
use kernel::rng::XorShift;
use kernel::{interrupts, serial_println, smp};
use spin::Once;
use x86_64::PhysAddr;
use x86_64::structures::paging::{Page, PageTableFlags};

kernel::test_entry_point!();

/// One bit per frame up to the top of usable memory: set while a test holds the frame.
static HELD: Once<Vec<AtomicU64>> = Once::new();

fn held() -> &'static [AtomicU64] {
    HELD.call_once(|| {
        let top = mm::setup::regions().usable().last().unwrap().limit;
        (0..(top / FRAME_SIZE).div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect()
    })
}

/// Records that the caller now holds `[addr, +n frames)`; panics if anyone else does.
fn take(addr: u64, n: usize) {
    for f in (addr / FRAME_SIZE)..(addr / FRAME_SIZE + n as u64) {
        let old = held()[(f / 64) as usize].fetch_or(1 << (f % 64), Ordering::AcqRel);
        assert!(
            old & (1 << (f % 64)) == 0,
            "frame {:#x} handed out twice (CPU {})",
            f * FRAME_SIZE,
            smp::cpu_id()
        );
    }
}

/// Records that the caller gave `[addr, +n frames)` back.
fn give(addr: u64, n: usize) {
    for f in (addr / FRAME_SIZE)..(addr / FRAME_SIZE + n as u64) {
        held()[(f / 64) as usize].fetch_and(!(1 << (f % 64)), Ordering::AcqRel);
    }
}

/// Frames a test holds, stamped with its CPU and a serial number in every frame's first
/// and last word; the stamps are checked before the frames go back.
struct Stamped {
    frames: Frames,
    stamp: u64,
}

impl Stamped {
    fn new(mut frames: Frames, stamp: u64) -> Stamped {
        take(frames.start_address().as_u64(), frames.npages());
        for page in frames
            .as_mut_bytes()
            .as_chunks_mut::<{ FRAME_SIZE as usize }>()
            .0
        {
            page[..8].copy_from_slice(&stamp.to_le_bytes());
            page[FRAME_SIZE as usize - 8..].copy_from_slice(&stamp.to_le_bytes());
        }
        Stamped { frames, stamp }
    }

    fn release(mut self) {
        let (addr, n) = (self.frames.start_address().as_u64(), self.frames.npages());
        for (i, page) in self
            .frames
            .as_mut_bytes()
            .as_chunks::<{ FRAME_SIZE as usize }>()
            .0
            .iter()
            .enumerate()
        {
            let first = u64::from_le_bytes(page[..8].try_into().unwrap());
            let last = u64::from_le_bytes(page[FRAME_SIZE as usize - 8..].try_into().unwrap());
            assert!(
                first == self.stamp && last == self.stamp,
                "frame {:#x}: stamp {:#x} became {first:#x}/{last:#x}: someone else wrote it",
                addr + i as u64 * FRAME_SIZE,
                self.stamp
            );
        }
        give(addr, n);
        drop(self.frames);
    }
}

fn stamp(cpu: usize, serial: u64) -> u64 {
    (cpu as u64) << 56 | serial
}

static HOOK_OPS: AtomicU64 = AtomicU64::new(0);

/// On every CPU's timer tick: a single frame and a run of three, taken and given back.
fn allocating_timer_hook() {
    let cpu = smp::cpu_id();
    let serial = HOOK_OPS.fetch_add(1, Ordering::Relaxed);
    let one = Stamped::new(
        mm::alloc_frame().expect("a frame in the timer hook"),
        stamp(cpu, serial),
    );
    let three = Stamped::new(
        mm::alloc_frames(3).expect("frames in the timer hook"),
        stamp(cpu, serial | 1 << 40),
    );
    one.release();
    three.release();
}

/// The free-frame count before a test, with the heap grown beforehand: the heap keeps the
/// frames it maps, so growth during a test would look like a leak.
fn baseline() -> usize {
    held();
    // `black_box`: an optimised build would drop an allocation that nothing uses.
    let room: Vec<u8> = core::hint::black_box(Vec::with_capacity(4 << 20));
    drop(room);
    assert!(mm::heap::stats().size >= 4 << 20, "the heap did not grow");
    mm::stats().free_pages
}

/// Removes the timer hook and waits until no CPU is still inside it (a CPU runs a job
/// only outside its interrupt handlers).
fn stop_timer_hook() {
    interrupts::set_timer_hook(None);
    smp::run_on_all_cpus(&|_| {});
}

fn assert_all_back(baseline: usize) {
    let now = mm::stats().free_pages;
    assert_eq!(now, baseline, "free frames {now}, {baseline} before");
    mm::frames::assert_invariants();
}

#[test_case]
fn every_cpu_is_up() {
    let n = smp::cpus_online();
    serial_println!("{n} CPUs online");
    assert!(
        n >= 2,
        "this test kernel runs with several CPUs; {n} came up"
    );
}

#[test_case]
fn all_cpus_churn_every_kind_of_allocation() {
    let baseline = baseline();
    let ops = AtomicUsize::new(0);
    interrupts::set_timer_hook(Some(allocating_timer_hook));
    smp::run_on_all_cpus(&|cpu| {
        let mut rng = XorShift::new(0x5eed + cpu as u64);
        let mut live: Vec<Stamped> = Vec::with_capacity(64);
        let mut serial = 0;
        for _ in 0..1500 {
            serial += 1;
            let s = stamp(cpu, serial);
            match rng.below(16) {
                0..=6 => live.push(Stamped::new(mm::alloc_frame().unwrap(), s)),
                7..=9 => {
                    let n = 2 + rng.below(15) as usize;
                    live.push(Stamped::new(mm::alloc_frames(n).unwrap(), s));
                }
                10 => live.push(Stamped::new(mm::alloc_huge_frame().unwrap(), s)),
                11 => {
                    let n = 1 + rng.below(8) as usize;
                    let mut f = mm::alloc_zeroed(FrameRequest::pages(n)).unwrap();
                    assert!(
                        f.as_mut_bytes().iter().all(|&b| b == 0),
                        "a zeroed allocation at {:#x} is not zero",
                        f.start_address().as_u64()
                    );
                    live.push(Stamped::new(f, s));
                }
                12 => {
                    let mut space = mm::AddressSpace::new().unwrap();
                    let page = Page::containing_address(x86_64::VirtAddr::new(0x40_0000));
                    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
                    space.map_user(page, flags).unwrap();
                    drop(space);
                }
                13 => {
                    // Heap growth from several CPUs at once.
                    let v: Vec<u64> = (0..rng.below(20_000)).collect();
                    assert!(v.iter().enumerate().all(|(i, &x)| i as u64 == x));
                }
                _ => {
                    if !live.is_empty() {
                        let i = rng.below(live.len() as u64) as usize;
                        live.swap_remove(i).release();
                    }
                }
            }
            if live.len() > 48 {
                live.swap_remove(0).release();
            }
            ops.fetch_add(1, Ordering::Relaxed);
        }
        live.into_iter().for_each(Stamped::release);
    });
    stop_timer_hook();
    serial_println!(
        "{} operations on {} CPUs, {} in timer hooks",
        ops.load(Ordering::Relaxed),
        smp::cpus_online(),
        HOOK_OPS.load(Ordering::Relaxed)
    );
    assert!(
        HOOK_OPS.load(Ordering::Relaxed) > 0,
        "the timer hook never ran"
    );
    assert_all_back(baseline);
}

/// All CPUs free the same frame at the same moment, round after round: exactly one free
/// is accepted each time, every other one is refused.
#[test_case]
fn racing_frees_of_one_frame_exactly_one_wins() {
    const ROUNDS: u64 = 2000;
    let baseline = baseline();
    let cpus = smp::cpus_online();
    let victim = AtomicU64::new(0);
    let round = AtomicU64::new(0);
    let arrived = AtomicUsize::new(0);
    let done = AtomicUsize::new(cpus);
    let wins = AtomicUsize::new(0);
    let refusals = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        for r in 1..=ROUNDS {
            if cpu == 0 {
                // Set up the round once everyone finished the last one.
                while done.load(Ordering::Acquire) != cpus {
                    core::hint::spin_loop();
                }
                done.store(0, Ordering::Relaxed);
                let (frame, _) = mm::alloc_frame().unwrap().into_raw();
                victim.store(frame.start_address().as_u64(), Ordering::Relaxed);
                arrived.store(0, Ordering::Relaxed);
                round.store(r, Ordering::Release);
            } else {
                while round.load(Ordering::Acquire) != r {
                    core::hint::spin_loop();
                }
            }
            // Meet, then free at once.
            arrived.fetch_add(1, Ordering::AcqRel);
            while arrived.load(Ordering::Acquire) != cpus {
                core::hint::spin_loop();
            }
            let addr = victim.load(Ordering::Relaxed);
            match mm::free_frames(PhysAddr::new(addr), 1) {
                Ok(()) => {
                    wins.fetch_add(1, Ordering::Relaxed);
                }
                Err(FrameError::Free(
                    RangeOpError::Held { page, .. } | RangeOpError::NotAllocated { page, .. },
                )) if page == addr => {
                    refusals.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => panic!("round {r}: unexpected error freeing {addr:#x}: {e}"),
            }
            done.fetch_add(1, Ordering::AcqRel);
        }
    });
    let (w, f) = (
        wins.load(Ordering::Relaxed),
        refusals.load(Ordering::Relaxed),
    );
    serial_println!("{ROUNDS} rounds on {cpus} CPUs: {w} frees accepted, {f} refused");
    assert_eq!(
        w as u64, ROUNDS,
        "each round's frame must be freed exactly once"
    );
    assert_eq!(f as u64, ROUNDS * (cpus as u64 - 1));
    assert_all_back(baseline);
}

static VICTIMS: [AtomicU64; smp::MAX_CPUS] = [const { AtomicU64::new(0) }; smp::MAX_CPUS];
static HOOK_WINS: AtomicU64 = AtomicU64::new(0);
static HOOK_TRIES: AtomicU64 = AtomicU64::new(0);

/// Frees the frame the interrupted code on this CPU is about to free, if any.
fn freeing_timer_hook() {
    let addr = VICTIMS[smp::cpu_id()].swap(0, Ordering::AcqRel);
    if addr != 0 {
        HOOK_TRIES.fetch_add(1, Ordering::Relaxed);
        if mm::free_frames(PhysAddr::new(addr), 1).is_ok() {
            HOOK_WINS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// On every CPU, the timer interrupt frees the frame the interrupted code is freeing:
/// each frame is freed exactly once, whoever wins.
#[test_case]
fn an_interrupt_racing_a_free_loses_or_wins_exactly_once() {
    let baseline = baseline();
    let main_wins = AtomicU64::new(0);
    let iterations = AtomicU64::new(0);
    interrupts::set_timer_hook(Some(freeing_timer_hook));
    smp::run_on_all_cpus(&|cpu| {
        let mut rng = XorShift::new(0xf4ee + cpu as u64);
        let target = interrupts::ticks() + 100;
        while interrupts::ticks() < target {
            let (frame, _) = mm::alloc_frame().unwrap().into_raw();
            let addr = frame.start_address().as_u64();
            VICTIMS[cpu].store(addr, Ordering::Release);
            // A window of random length before the free, for the timer to land in.
            for _ in 0..rng.below(2000) {
                core::hint::spin_loop();
            }
            if mm::free_frames(PhysAddr::new(addr), 1).is_ok() {
                main_wins.fetch_add(1, Ordering::Relaxed);
            }
            VICTIMS[cpu].store(0, Ordering::Release);
            iterations.fetch_add(1, Ordering::Relaxed);
        }
    });
    stop_timer_hook();
    let (n, m) = (
        iterations.load(Ordering::Relaxed),
        main_wins.load(Ordering::Relaxed),
    );
    let (hw, ht) = (
        HOOK_WINS.load(Ordering::Relaxed),
        HOOK_TRIES.load(Ordering::Relaxed),
    );
    serial_println!(
        "{n} frees raced by the timer: {m} won by the code, {hw} by the interrupt ({ht} tries)"
    );
    assert!(ht > 0, "the timer never interrupted a free");
    assert_eq!(m + hw, n, "every frame freed exactly once");
    assert_all_back(baseline);
}

/// A frame in one CPU's batch is held, not handed out: a free of it on another CPU is
/// refused with `Held`.
#[test_case]
fn a_frame_in_another_cpus_batch_is_refused() {
    let baseline = baseline();
    let freed = AtomicU64::new(0);
    let step = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| match cpu {
        1 => {
            let (frame, _) = mm::alloc_frame().unwrap().into_raw();
            let addr = frame.start_address().as_u64();
            mm::free_frames(PhysAddr::new(addr), 1).unwrap();
            freed.store(addr, Ordering::Release);
            step.store(1, Ordering::Release);
            // Keep the frame in this CPU's batch until CPU 0 has tried.
            while step.load(Ordering::Acquire) != 2 {
                core::hint::spin_loop();
            }
        }
        0 => {
            while step.load(Ordering::Acquire) != 1 {
                core::hint::spin_loop();
            }
            let addr = freed.load(Ordering::Acquire);
            let e = mm::free_frames(PhysAddr::new(addr), 1).unwrap_err();
            step.store(2, Ordering::Release);
            assert!(
                matches!(e, FrameError::Free(RangeOpError::Held { page, .. }) if page == addr),
                "free of {addr:#x} held by CPU 1: {e}"
            );
            let e = mm::frames::free_uncached(PhysAddr::new(addr), 1).unwrap_err();
            assert!(
                matches!(e, FrameError::Free(RangeOpError::Held { .. })),
                "{e}"
            );
        }
        _ => {}
    });
    assert_all_back(baseline);
}

/// Every CPU allocates single frames until none is left: each gets an out-of-memory
/// error, together they got every free frame exactly once, and all come back.
#[test_case]
fn exhaustion_on_all_cpus() {
    let baseline = baseline();
    let cpus = smp::cpus_online();
    // Room reserved up front: the heap cannot grow once memory is gone.
    let mut lists: Vec<spin::Mutex<Vec<u64>>> = (0..cpus)
        .map(|_| spin::Mutex::new(Vec::with_capacity(baseline)))
        .collect();
    let oom = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        let mut mine = lists[cpu].lock();
        loop {
            match mm::alloc_frame() {
                Ok(f) => {
                    let (frame, _) = f.into_raw();
                    let addr = frame.start_address().as_u64();
                    take(addr, 1);
                    mine.push(addr);
                }
                Err(FrameError::OutOfMemory { .. }) => break,
                Err(e) => panic!("CPU {cpu}: {e}"),
            }
        }
        oom.fetch_add(1, Ordering::Relaxed);
    });
    let total: usize = lists.iter_mut().map(|l| l.get_mut().len()).sum();
    serial_println!("{cpus} CPUs took {total} frames, {baseline} were free");
    assert_eq!(oom.load(Ordering::Relaxed), cpus, "every CPU ran out");
    assert_eq!(total, baseline);
    assert_eq!(mm::stats().free_pages, 0);
    smp::run_on_all_cpus(&|cpu| {
        for &addr in lists[cpu].lock().iter() {
            give(addr, 1);
            mm::free_frames(PhysAddr::new(addr), 1).unwrap();
        }
    });
    assert_all_back(baseline);
}
