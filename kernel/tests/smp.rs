//! Several CPUs: every CPU the MADT lists comes up with its own index, APIC id and per-CPU
//! data; every CPU's timer ticks and runs the timer hook; jobs run exactly once per CPU
//! over thousands of rounds; CPUs allocate and free frames at once; the start-up frame
//! came from below 1 MiB and went back. Run at 1, 2 and 4 CPUs (see run-qemu.sh).

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::mm::{self, FrameRequest};
use kernel::smp::{self, MAX_CPUS};
use kernel::{interrupts, serial_println};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::GsBase;

kernel::test_entry_point!();

const NONE: u64 = u64::MAX;

#[test_case]
fn every_listed_cpu_is_up() {
    let r = smp::report().expect("kernel::init ran smp::init");
    serial_println!("{}", smp::summary());
    assert_eq!(r.problem, None);
    assert!(r.not_answering.is_empty(), "{:?}", r.not_answering);
    assert!(r.not_started.is_empty(), "{:?}", r.not_started);
    assert_eq!(smp::cpus_online(), r.listed, "the MADT lists {}", r.listed);
    assert!(smp::lapic_timer());
    assert_eq!(r.start_us.len(), smp::cpus_online() - 1);
    serial_println!(
        "timer: {} counts a tick; TSC {} a ms; APs reported in after {:?} us",
        r.timer_count,
        r.tsc_per_ms,
        r.start_us
    );
    assert_eq!(smp::apic_id(smp::cpus_online()), None);
}

#[test_case]
fn each_cpu_has_its_own_index_apic_id_and_gs_block() {
    let n = smp::cpus_online();
    let seen_id: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NONE) }; MAX_CPUS];
    let seen_apic: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NONE) }; MAX_CPUS];
    let seen_gs: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NONE) }; MAX_CPUS];
    let ints_on = AtomicUsize::new(0);
    smp::run_on_all_cpus(&|cpu| {
        seen_id[cpu].store(smp::cpu_id() as u64, Ordering::Relaxed);
        let apic = smp::current_apic_id().expect("a local APIC");
        seen_apic[cpu].store(u64::from(apic), Ordering::Relaxed);
        seen_gs[cpu].store(GsBase::read().as_u64(), Ordering::Relaxed);
        if x86_64::instructions::interrupts::are_enabled() {
            ints_on.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut apics = Vec::new();
    let mut gs = Vec::new();
    for cpu in 0..n {
        assert_eq!(seen_id[cpu].load(Ordering::Relaxed), cpu as u64);
        let apic = seen_apic[cpu].load(Ordering::Relaxed);
        assert_eq!(smp::apic_id(cpu).map(u64::from), Some(apic), "CPU {cpu}");
        apics.push(apic);
        let base = seen_gs[cpu].load(Ordering::Relaxed);
        assert!(base != 0 && base != NONE, "CPU {cpu} has GS base {base:#x}");
        gs.push(base);
    }
    for id in &seen_id[n..] {
        assert_eq!(id.load(Ordering::Relaxed), NONE);
    }
    apics.sort_unstable();
    apics.dedup();
    gs.sort_unstable();
    gs.dedup();
    assert_eq!(
        (apics.len(), gs.len()),
        (n, n),
        "APIC ids or GS blocks shared"
    );
    // The caller's interrupts are on, and the APs run jobs with interrupts on.
    assert_eq!(ints_on.load(Ordering::Relaxed), n);
}

static HOOK_RUNS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ALLOC_HOOK_RUNS: AtomicU64 = AtomicU64::new(0);
static HOOK_WRONG_ID: AtomicBool = AtomicBool::new(false);

fn counting_hook() {
    let cpu = smp::cpu_id();
    if smp::current_apic_id() != smp::apic_id(cpu)
        || x86_64::instructions::interrupts::are_enabled()
    {
        HOOK_WRONG_ID.store(true, Ordering::Relaxed);
    }
    HOOK_RUNS[cpu].fetch_add(1, Ordering::Relaxed);
}

#[test_case]
fn every_cpu_ticks_and_runs_the_timer_hook() {
    let n = smp::cpus_online();
    let before: Vec<u64> = (0..n).map(interrupts::ticks_on).collect();
    let hooks_before: Vec<u64> = (0..n)
        .map(|c| HOOK_RUNS[c].load(Ordering::Relaxed))
        .collect();
    interrupts::set_timer_hook(Some(counting_hook));
    assert!(interrupts::wait_ticks(10));
    interrupts::set_timer_hook(None);
    for cpu in 0..n {
        let ticks = interrupts::ticks_on(cpu) - before[cpu];
        let hooks = HOOK_RUNS[cpu].load(Ordering::Relaxed) - hooks_before[cpu];
        serial_println!("CPU {cpu}: {ticks} ticks, the hook ran {hooks} times");
        assert!(ticks >= 2, "CPU {cpu}'s timer ticked {ticks} times");
        assert!(hooks >= 2, "the hook ran {hooks} times on CPU {cpu}");
    }
    assert!(!HOOK_WRONG_ID.load(Ordering::Relaxed));
    assert_eq!(
        interrupts::apic_spurious_and_errors().1,
        0,
        "local APIC errors"
    );
}

static IN_HOOK: AtomicUsize = AtomicUsize::new(0);
static SLOW_HOOK_RUNS: AtomicU64 = AtomicU64::new(0);

fn slow_hook() {
    IN_HOOK.fetch_add(1, Ordering::SeqCst);
    for _ in 0..2000 {
        core::hint::spin_loop();
    }
    SLOW_HOOK_RUNS.fetch_add(1, Ordering::Relaxed);
    IN_HOOK.fetch_sub(1, Ordering::SeqCst);
}

#[test_case]
fn removing_the_timer_hook_waits_for_every_cpu_running_it() {
    for round in 0..20 {
        interrupts::set_timer_hook(Some(slow_hook));
        assert!(interrupts::wait_ticks(2));
        interrupts::set_timer_hook(None);
        assert_eq!(IN_HOOK.load(Ordering::SeqCst), 0, "round {round}");
    }
    assert!(SLOW_HOOK_RUNS.load(Ordering::Relaxed) >= 20);
}

#[test_case]
fn jobs_run_exactly_once_per_cpu_over_many_rounds() {
    const ROUNDS: u64 = 3000;
    let n = smp::cpus_online();
    let runs: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    for round in 1..=ROUNDS {
        smp::run_on_all_cpus(&|cpu| {
            runs[cpu].fetch_add(1, Ordering::Relaxed);
        });
        for (cpu, r) in runs.iter().enumerate() {
            let want = if cpu < n { round } else { 0 };
            assert_eq!(
                r.load(Ordering::Relaxed),
                want,
                "CPU {cpu} in round {round}"
            );
        }
    }
    // One CPU at a time.
    for round in 1..=200u64 {
        for cpu in 0..n {
            smp::run_on_cpu(cpu, &|c| {
                assert_eq!((c, smp::cpu_id()), (cpu, cpu));
                runs[c].fetch_add(1, Ordering::Relaxed);
            })
            .expect("an online CPU");
            assert_eq!(runs[cpu].load(Ordering::Relaxed), ROUNDS + round);
        }
    }
    assert_eq!(
        smp::run_on_cpu(n, &|_| {}),
        Err(smp::SmpError::NotOnline { cpu: n, online: n })
    );
    serial_println!("{ROUNDS} rounds on {n} CPUs, then 200 rounds one CPU at a time");
}

fn alloc_in_hook() {
    let frame = mm::alloc_frame().expect("a frame in the timer handler");
    drop(frame);
    ALLOC_HOOK_RUNS.fetch_add(1, Ordering::Relaxed);
}

#[test_case]
fn cpus_allocate_and_free_frames_at_once() {
    let baseline = mm::stats().free_pages;
    let rounds: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    interrupts::set_timer_hook(Some(alloc_in_hook));
    smp::run_on_all_cpus(&|cpu| {
        let end = interrupts::ticks() + 20;
        let mut held = Vec::new();
        while interrupts::ticks() < end {
            let mut one = mm::alloc_frame().expect("a frame");
            let mut three = mm::alloc_zeroed(FrameRequest::pages(3)).expect("3 zeroed frames");
            assert!(three.as_mut_bytes().iter().all(|&b| b == 0));
            one.as_mut_bytes().fill(cpu as u8 + 1);
            three.as_mut_bytes().fill(cpu as u8 + 1);
            held.push(one);
            held.push(three);
            if held.len() >= 16 {
                // Nobody else wrote into frames this CPU holds.
                for f in &mut held {
                    assert!(f.as_mut_bytes().iter().all(|&b| b == cpu as u8 + 1));
                }
                held.clear();
            }
            rounds[cpu].fetch_add(1, Ordering::Relaxed);
        }
    });
    interrupts::set_timer_hook(None);
    let hook_runs = ALLOC_HOOK_RUNS.load(Ordering::Relaxed);
    serial_println!("the timer hook allocated {hook_runs} times");
    assert!(hook_runs >= 20);
    for (cpu, r) in rounds.iter().take(smp::cpus_online()).enumerate() {
        let r = r.load(Ordering::Relaxed);
        serial_println!("CPU {cpu}: {r} rounds");
        assert!(r > 0);
    }
    assert_eq!(mm::stats().free_pages, baseline);
    mm::frames::assert_invariants();
}

#[test_case]
fn the_start_up_frame_was_below_1_mib_and_went_back() {
    let r = smp::report().unwrap();
    let Some(tramp) = r.trampoline else {
        assert_eq!(smp::cpus_online(), 1, "APs started without a trampoline?");
        return;
    };
    assert!(
        tramp < 1 << 20 && tramp % 4096 == 0,
        "trampoline at {tramp:#x}"
    );
    assert!(r.temporary_frames_freed);
    // Every free frame below 1 MiB can be had again, the trampoline's among them.
    mm::frames::flush_caches();
    let mut low = Vec::new();
    while let Ok(f) = mm::alloc(FrameRequest::pages(1).below(1 << 20)) {
        low.push(f);
    }
    let found = low.iter().any(|f| f.start_address().as_u64() == tramp);
    serial_println!("{} free frames below 1 MiB", low.len());
    drop(low);
    assert!(found, "the trampoline frame {tramp:#x} is not free");
}

#[test_case]
fn ap_stacks_have_guard_pages() {
    for cpu in 1..smp::cpus_online() {
        let stack = smp::ap_stack(cpu).expect("an AP's stack");
        assert!(mm::translate(VirtAddr::new(stack.start)).is_some());
        assert!(mm::translate(VirtAddr::new(stack.end - 1)).is_some());
        assert!(mm::translate(VirtAddr::new(stack.start - 1)).is_none());
        assert!(mm::translate(VirtAddr::new(stack.end)).is_none());
        // The job runs on that stack.
        let on_stack = AtomicBool::new(false);
        smp::run_on_cpu(cpu, &|_| {
            let local = 0u8;
            let at = &raw const local as u64;
            on_stack.store(stack.contains(&at), Ordering::Relaxed);
        })
        .unwrap();
        assert!(
            on_stack.load(Ordering::Relaxed),
            "CPU {cpu} not on its stack"
        );
    }
    assert_eq!(smp::ap_stack(0), None);
}
