//! Frame allocator scenarios under QEMU: exhaust all memory one frame at a time, random
//! churn with the invariant check after every step, 2 MiB frames, zones. Runs at several
//! memory sizes (see KERNEL_TEST_RUNS in run-qemu.sh).

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use kernel::mm::{self, FrameRequest, Frames, Zone};
use kernel::rng::XorShift;
use kernel::serial_println;
use x86_64::PhysAddr;

kernel::test_entry_point!();

const FRAME: u64 = mm::FRAME_SIZE;

/// Whether `[addr, addr + n frames)` lies in usable memory and outside the metadata.
fn assert_managed(addr: u64, n: usize) {
    let limit = addr + n as u64 * FRAME;
    let usable = mm::setup::regions().usable();
    assert!(
        usable.iter().any(|r| r.base <= addr && limit <= r.limit),
        "frames [{addr:#x}, {limit:#x}) are not in a usable region"
    );
    let meta = mm::init_report().unwrap().metadata;
    assert!(
        limit <= meta.base || addr >= meta.limit,
        "frames [{addr:#x}, {limit:#x}) overlap the allocator's metadata {meta}"
    );
}

#[test_case]
fn every_frame_once_then_all_back() {
    let top = mm::setup::regions().usable().last().unwrap().limit;
    // One bit per frame of the physical address space up to the top of RAM; allocated
    // before the run so the heap does not compete for frames.
    let mut seen = vec![0u64; (top / FRAME).div_ceil(64) as usize];
    let baseline = mm::stats().free_pages;
    let mut count = 0usize;
    while let Ok(f) = mm::alloc_frame() {
        let (frame, n) = f.into_raw();
        let addr = frame.start_address().as_u64();
        let (w, b) = ((addr / FRAME / 64) as usize, addr / FRAME % 64);
        assert!(seen[w] & (1 << b) == 0, "frame {addr:#x} handed out twice");
        seen[w] |= 1 << b;
        assert_managed(addr, n);
        count += 1;
    }
    assert_eq!(
        count, baseline,
        "allocated {count} frames, {baseline} were free"
    );
    assert_eq!(mm::stats().free_pages, 0);
    mm::frames::assert_invariants();
    for (w, word) in seen.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let b = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let addr = (w as u64 * 64 + b) * FRAME;
            mm::free_frames(PhysAddr::new(addr), 1).expect("free an allocated frame");
        }
    }
    assert_eq!(mm::stats().free_pages, baseline);
    mm::frames::assert_invariants();
    serial_println!("{count} frames, each once, all returned");
}

#[test_case]
fn random_churn_keeps_invariants() {
    let baseline = mm::stats().free_pages;
    let mut rng = XorShift::new(0x5eed);
    let mut live: Vec<Frames> = Vec::with_capacity(256);
    for step in 0..400 {
        if live.len() < 200 && rng.below(3) != 0 {
            let npages = [1, 1, 2, 3, 8, 17, 64, 100, 512, 700][rng.below(10) as usize];
            let align = [1, 1, 4, 16, 512][rng.below(5) as usize];
            let mut req = FrameRequest::pages(npages).aligned(align);
            if rng.below(4) == 0 {
                req = req.below(if rng.below(2) == 0 { 16 << 20 } else { 4 << 30 });
            }
            if let Ok(f) = mm::alloc(req) {
                let a = f.start_address().as_u64();
                assert_eq!(
                    a % (align as u64 * FRAME),
                    0,
                    "step {step}: misaligned {a:#x}"
                );
                if let Some(l) = req.limit {
                    assert!(
                        a + npages as u64 * FRAME <= l,
                        "step {step}: {a:#x} above {l:#x}"
                    );
                }
                assert_managed(a, npages);
                live.push(f);
            }
        } else if !live.is_empty() {
            let i = rng.below(live.len() as u64) as usize;
            drop(live.swap_remove(i));
        }
        mm::frames::assert_invariants();
    }
    // No two live allocations overlap.
    let mut spans: Vec<(u64, u64)> = live
        .iter()
        .map(|f| (f.start_address().as_u64(), f.npages() as u64 * FRAME))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {:x?}", w);
    }
    drop(spans);
    drop(live);
    mm::frames::assert_invariants();
    assert_eq!(mm::stats().free_pages, baseline);
}

#[test_case]
fn huge_frames_are_2mib_aligned() {
    let mut v = Vec::new();
    for _ in 0..8 {
        let f = mm::alloc_huge_frame().expect("a 2 MiB frame");
        assert!(f.huge_frame().is_some());
        assert_eq!(f.start_address().as_u64() % (2 << 20), 0);
        v.push(f);
    }
    mm::frames::assert_invariants();
}

#[test_case]
fn limits_pick_low_zones() {
    let dma = mm::alloc(FrameRequest::pages(8).below(16 << 20)).expect("frames below 16 MiB");
    assert!(dma.start_address().as_u64() + 8 * FRAME <= 16 << 20);
    assert_eq!(Zone::of(dma.start_address().as_u64()), Zone::Dma);
    let low = mm::alloc(FrameRequest::pages(8).below(4 << 30)).expect("frames below 4 GiB");
    assert!(low.start_address().as_u64() + 8 * FRAME <= 4 << 30);
    // Below 4 GiB prefers DMA32 and keeps DMA for devices that need it.
    assert_eq!(Zone::of(low.start_address().as_u64()), Zone::Dma32);
    // Ordinary requests avoid DMA while other zones have room.
    let any = mm::alloc_frames(8).expect("frames");
    assert_ne!(Zone::of(any.start_address().as_u64()), Zone::Dma);
}

#[test_case]
fn zeroed_frames_are_zero() {
    // Dirty a run of frames, free it, and ask for zeroed frames of the same size.
    let mut f = mm::alloc_frames(4).unwrap();
    f.as_mut_bytes().fill(0xa5);
    let at = f.start_address();
    drop(f);
    let mut z = mm::alloc_zeroed(FrameRequest::pages(4)).unwrap();
    assert_eq!(
        z.start_address(),
        at,
        "first fit gives the same frames back"
    );
    assert!(z.as_mut_bytes().iter().all(|&b| b == 0));
}

#[test_case]
fn bad_frees_are_refused() {
    let before = mm::stats();
    let f = mm::alloc_frames(2).unwrap();
    let (frame, n) = f.into_raw();
    mm::free_frames(frame.start_address(), n).unwrap();
    let double = mm::free_frames(frame.start_address(), n).unwrap_err();
    serial_println!("double free: {double}");
    assert!(matches!(
        double,
        mm::FrameError::Free(mm::pagealloc::RangeOpError::NotAllocated { .. })
    ));
    // Far above any RAM.
    let foreign = mm::free_frames(PhysAddr::new(0xf_0000_0000_0000), 1).unwrap_err();
    serial_println!("foreign free: {foreign}");
    let meta = mm::init_report().unwrap().metadata;
    let own = mm::free_frames(PhysAddr::new(meta.base), 1).unwrap_err();
    serial_println!("metadata free: {own}");
    assert!(matches!(own, mm::FrameError::Metadata { .. }));
    assert_eq!(mm::stats().free_pages, before.free_pages);
    mm::frames::assert_invariants();
}

#[test_case]
fn zeroed_frees_are_reported_and_only_dirty_frames_cleared() {
    // Frames freed as zeroed come back reported as zero.
    let mut f = mm::alloc_frames(8).unwrap();
    f.as_mut_bytes().fill(0);
    let (frame, n) = f.into_raw();
    let at = frame.start_address();
    mm::frames::free_frames_zeroed(at, n).unwrap();
    let g = mm::alloc(FrameRequest::pages(8)).unwrap();
    assert_eq!(
        g.start_address(),
        at,
        "first fit gives the same frames back"
    );
    assert_eq!(g.zeroed_pages(), 8);
    // Half of them zeroed by their user, half dirty: a zeroed allocation clears the dirty
    // half, and every byte reads zero.
    let mut h = g;
    h.as_mut_bytes().fill(0x5a);
    h.as_mut_bytes()[..4 * 4096].fill(0);
    let (frame, _) = h.into_raw();
    mm::frames::free_frames_zeroed(frame.start_address(), 4).unwrap();
    mm::free_frames(frame.start_address() + 4 * 4096u64, 4).unwrap();
    let mut z = mm::alloc_zeroed(FrameRequest::pages(8)).unwrap();
    assert_eq!(z.start_address(), at);
    assert!(z.as_mut_bytes().iter().all(|&b| b == 0));
    mm::frames::assert_invariants();
}
