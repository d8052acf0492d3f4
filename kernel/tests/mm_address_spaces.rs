//! Process address spaces under QEMU: thousands are created, used and dropped, and every
//! frame they took comes back.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

use kernel::mm::{self, AddressSpace};
use kernel::serial_println;
use x86_64::VirtAddr;
use x86_64::structures::paging::{Page, PageTableFlags};

kernel::test_entry_point!();

fn page(addr: u64) -> Page {
    Page::containing_address(VirtAddr::new(addr))
}

#[test_case]
fn map_switch_and_read_back() {
    let mut a = AddressSpace::new().unwrap();
    let mut b = AddressSpace::new().unwrap();
    a.map_user(page(0x1000_0000), PageTableFlags::WRITABLE)
        .unwrap();
    b.map_user(page(0x1000_0000), PageTableFlags::WRITABLE)
        .unwrap();
    let p = 0x1000_0000 as *mut u64;
    // SAFETY: each closure runs with its address space active, where `p` is mapped.
    a.with_active(|| unsafe { p.write_volatile(0xaaaa) });
    // SAFETY: as above.
    let seen_in_b = b.with_active(|| unsafe { p.read_volatile() });
    assert_eq!(seen_in_b, 0, "a new user page is zeroed and private");
    // SAFETY: as above.
    assert_eq!(a.with_active(|| unsafe { p.read_volatile() }), 0xaaaa);
    assert_ne!(
        a.translate(VirtAddr::new(0x1000_0000)),
        b.translate(VirtAddr::new(0x1000_0000))
    );
}

#[test_case]
fn errors_are_reported() {
    let mut a = AddressSpace::new().unwrap();
    a.map_user(page(0x2000), PageTableFlags::WRITABLE).unwrap();
    let again = a
        .map_user(page(0x2000), PageTableFlags::WRITABLE)
        .unwrap_err();
    serial_println!("{again}");
    assert!(matches!(
        again,
        mm::address_space::MapError::AlreadyMapped(_)
    ));
    let kernel_half = a.map_user(page(0xffff_9000_0000_0000), PageTableFlags::WRITABLE);
    assert!(matches!(
        kernel_half,
        Err(mm::address_space::MapError::NotUserAddress(_))
    ));
    a.unmap_user(page(0x2000)).unwrap();
    assert!(matches!(
        a.unmap_user(page(0x2000)),
        Err(mm::address_space::MapError::NotMapped(_))
    ));
}

#[test_case]
fn thousands_of_address_spaces_leak_nothing() {
    let baseline = mm::stats().free_pages;
    for i in 0..2000u64 {
        let mut a = AddressSpace::new().unwrap();
        // Pages spread over several tables at every level.
        for j in 0..4u64 {
            let addr = 0x40_0000 + j * 0x20_0000 + (i % 7) * 0x80_0000_0000;
            a.map_user(page(addr), PageTableFlags::WRITABLE).unwrap();
        }
        if i % 500 == 0 {
            let p = (0x40_0000 + (i % 7) * 0x80_0000_0000) as *mut u64;
            // SAFETY: `p` is mapped in `a`, which is active while the closure runs.
            a.with_active(|| unsafe { p.write_volatile(i) });
            a.unmap_user(page(0x40_0000 + (i % 7) * 0x80_0000_0000))
                .unwrap();
        }
        drop(a);
    }
    assert_eq!(
        mm::stats().free_pages,
        baseline,
        "address spaces leaked frames"
    );
    mm::frames::assert_invariants();
}
