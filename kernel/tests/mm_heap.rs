//! The kernel heap under QEMU: it starts small, grows by frames from the page allocator
//! while Box, Vec, BTreeMap and String use it, and its memory is reused after frees.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use kernel::mm::{self, heap};
use kernel::rng::XorShift;
use kernel::serial_println;

kernel::test_entry_point!();

#[test_case]
fn a_heap_starts_small() {
    assert!(
        heap::stats().size <= 1 << 20,
        "heap starts at {} bytes",
        heap::stats().size
    );
}

#[test_case]
fn box_vec_btreemap_string() {
    let b = Box::new(41u64);
    assert_eq!(*b + 1, 42);
    let v: Vec<u32> = (0..1000).collect();
    assert_eq!(v.iter().sum::<u32>(), 999 * 1000 / 2);
    let mut m = BTreeMap::new();
    for i in 0..500u32 {
        m.insert(i, i * i);
    }
    assert_eq!(m[&20], 400);
    let mut s = String::new();
    write!(s, "{} frames free", mm::stats().free_pages).unwrap();
    assert!(s.ends_with("frames free"));
}

#[test_case]
fn heap_grows_to_many_mib_and_is_reused() {
    let start = heap::stats();
    let frames_before = mm::stats().free_pages;
    // 8 MiB in blocks of mixed sizes.
    let mut rng = XorShift::new(7);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while total < 8 << 20 {
        let n = 64 + rng.below(64 * 1024) as usize;
        let mut b = Vec::with_capacity(n);
        b.resize(n, (n % 251) as u8);
        total += n;
        blocks.push(b);
    }
    let grown = heap::stats();
    serial_println!(
        "heap {} -> {} bytes for {} blocks",
        start.size,
        grown.size,
        blocks.len()
    );
    assert!(grown.size >= 8 << 20);
    assert!(
        mm::stats().free_pages < frames_before,
        "the heap's pages came from the allocator"
    );
    for b in &blocks {
        assert!(
            b.iter().all(|&x| x == (b.len() % 251) as u8),
            "heap block corrupted"
        );
    }
    drop(blocks);
    assert_eq!(heap::stats().used, start.used);
    // The same load again fits in the pages the heap already has.
    let mut map: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut total = 0;
    let mut k = 0;
    while total < 6 << 20 {
        let n = 64 + rng.below(32 * 1024) as usize;
        map.insert(k, Vec::from_iter((0..n).map(|i| i as u8)));
        k += 1;
        total += n;
    }
    assert_eq!(heap::stats().size, grown.size, "the heap reused its pages");
    drop(map);
    mm::frames::assert_invariants();
}
