//! The frame allocator from interrupt context: the timer handler allocates and frees
//! frames while the main code does the same; the interrupt-disabling lock must never
//! deadlock, and nothing may leak.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::interrupts;
use kernel::mm;
use kernel::serial_println;

kernel::test_entry_point!();

static HOOK_RUNS: AtomicU64 = AtomicU64::new(0);

fn timer_hook() {
    let one = mm::alloc_frame().expect("a frame in the timer handler");
    let two = mm::alloc_frames(3).expect("frames in the timer handler");
    drop((one, two));
    HOOK_RUNS.fetch_add(1, Ordering::Relaxed);
}

#[test_case]
fn allocate_in_the_timer_handler_while_main_code_allocates() {
    let baseline = mm::stats().free_pages;
    interrupts::set_timer_hook(Some(timer_hook));
    let target = interrupts::ticks() + 20;
    let mut rounds = 0u64;
    while interrupts::ticks() < target {
        // Hold and release the allocator's locks as fast as possible.
        let a = mm::alloc_frame().unwrap();
        let b = mm::alloc_frames(5).unwrap();
        drop(a);
        drop(b);
        rounds += 1;
    }
    interrupts::set_timer_hook(None);
    let runs = HOOK_RUNS.load(Ordering::Relaxed);
    serial_println!("{rounds} rounds in the main code, {runs} in the timer handler");
    assert!(runs >= 10, "the timer hook ran {runs} times");
    assert_eq!(mm::stats().free_pages, baseline);
    mm::frames::assert_invariants();
}
