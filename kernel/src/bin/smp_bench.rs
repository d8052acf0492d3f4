//! A benchmark kernel: single-frame alloc+free pairs per second on 1, 2, 4, ... CPUs at
//! once, through the CPUs' own caches ("cached", `mm::alloc_frame`/`mm::free_frames`)
//! and straight through the zones' lock ("uncached", `alloc_uncached`/`free_uncached`).
//!
//! Run it with `cargo kbench -- --smp 4` (see `.cargo/config.toml`; a release build).
//! Not part of the test suite: the numbers depend on the machine and, under QEMU's
//! emulator, on how many host cores back the virtual CPUs. The scaling column (total
//! throughput at N CPUs over the throughput at 1) is the figure to read.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use core::sync::atomic::{AtomicU64, Ordering};

use bootloader_api::BootInfo;
use kernel::interrupts::{self, TIMER_HZ};
use kernel::mm::{self, FrameRequest};
use kernel::qemu::{QemuExitCode, exit_qemu};
use kernel::{serial_println, smp};
use x86_64::PhysAddr;

bootloader_api::entry_point!(bench_main, config = &kernel::BOOTLOADER_CONFIG);

/// Timer ticks each measurement lasts.
const TICKS: u64 = 100;

fn bench_main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    let online = smp::cpus_online();
    serial_println!("smp_bench: {online} CPUs; each row runs {TICKS} ticks at {TIMER_HZ} Hz");
    serial_println!(
        "{:<9} {:>4} {:>14} {:>14} {:>8}",
        "path",
        "CPUs",
        "pairs/s/CPU",
        "pairs/s total",
        "scaling"
    );
    for cached in [true, false] {
        let mut single = 0.0;
        let mut n = 1;
        while n <= online {
            let total = measure(n, cached);
            if n == 1 {
                single = total;
            }
            serial_println!(
                "{:<9} {:>4} {:>14.0} {:>14.0} {:>7.2}x",
                if cached { "cached" } else { "uncached" },
                n,
                total / n as f64,
                total,
                total / single
            );
            n *= 2;
        }
    }
    mm::frames::assert_invariants();
    serial_println!("smp_bench: done");
    exit_qemu(QemuExitCode::Success)
}

/// Pairs per second, summed over the first `cpus` CPUs working at once.
fn measure(cpus: usize, cached: bool) -> f64 {
    let pairs = AtomicU64::new(0);
    let start = AtomicU64::new(0);
    smp::run_on_all_cpus(&|cpu| {
        if cpu >= cpus {
            return;
        }
        if cpu == 0 {
            start.store(interrupts::ticks() + 1, Ordering::Release);
        }
        let begin = loop {
            let b = start.load(Ordering::Acquire);
            if b != 0 {
                break b;
            }
            core::hint::spin_loop();
        };
        while interrupts::ticks() < begin {
            core::hint::spin_loop();
        }
        let mut n = 0u64;
        while interrupts::ticks() < begin + TICKS {
            for _ in 0..64 {
                if cached {
                    let f = mm::alloc_frame().expect("a frame");
                    drop(f);
                } else {
                    let f = mm::frames::alloc_uncached(FrameRequest::pages(1)).expect("a frame");
                    let (frame, _) = f.into_raw();
                    mm::frames::free_uncached(PhysAddr::new(frame.start_address().as_u64()), 1)
                        .expect("free a frame");
                }
            }
            n += 64;
        }
        pairs.fetch_add(n, Ordering::Relaxed);
    });
    pairs.load(Ordering::Relaxed) as f64 * f64::from(TIMER_HZ) / TICKS as f64
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::panic_and_exit(info)
}
