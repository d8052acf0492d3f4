//! Page poisoning (debug builds, or the kernel's `poison` feature): a write into a freed
//! frame is reported when the frame is next handed out, and zeroed allocations still come
//! back zero. Each CPU reuses the frame it freed last, so the stale write is found by the
//! very next single-frame allocation, whatever its address.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

use kernel::mm::{self, FrameError, FrameRequest, poison};
use kernel::serial_println;

kernel::test_entry_point!();

/// A freed frame holds the poison (this test kernel is built in debug, or needs the
/// kernel's `poison` feature).
#[test_case]
fn a_freed_frame_holds_the_poison() {
    let f = mm::alloc_frame().unwrap();
    let stale = mm::phys_to_virt(f.start_address()).as_ptr::<u64>();
    drop(f);
    // SAFETY: reading a freed frame on purpose; it is RAM, mapped at the offset, and waits
    // in this CPU's batch, where nothing writes to it.
    let middle = unsafe { stale.add(256).read_volatile() };
    assert_eq!(middle, poison::PATTERN, "the freed frame was not poisoned");
}

#[test_case]
fn a_write_after_free_is_reported_at_the_next_allocation() {
    let f = mm::alloc_frame().unwrap();
    let addr = f.start_address();
    let stale = mm::phys_to_virt(addr).as_mut_ptr::<u64>();
    drop(f);
    // SAFETY: deliberately wrong, as a use-after-free bug would be; the frame is RAM,
    // mapped at the offset, and no one else holds it (it waits in this CPU's batch).
    unsafe { stale.add(100).write_volatile(0x1234) };
    let e = mm::alloc_frame().unwrap_err();
    serial_println!("{e}");
    match e {
        FrameError::WriteAfterFree(w) => {
            assert_eq!(w.frame, addr.as_u64());
            assert_eq!(w.offset, 800);
            assert_eq!(w.found, 0x1234);
        }
        e => panic!("expected a write-after-free report, got: {e}"),
    }
    // The frame stays out of circulation; the next allocation is another frame.
    let g = mm::alloc_frame().unwrap();
    assert_ne!(g.start_address(), addr);
}

#[test_case]
fn zeroed_allocations_are_zero_after_poisoning() {
    for _ in 0..64 {
        let f = mm::alloc_frame().unwrap();
        drop(f);
        let mut z = mm::alloc_zeroed(FrameRequest::pages(1)).unwrap();
        assert!(z.as_mut_bytes().iter().all(|&b| b == 0));
        let mut run = mm::alloc_zeroed(FrameRequest::pages(5)).unwrap();
        assert!(run.as_mut_bytes().iter().all(|&b| b == 0));
        let r = mm::alloc_frames(5).unwrap();
        drop(r);
    }
    mm::frames::assert_invariants();
}
