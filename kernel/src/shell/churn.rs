//! `churn [N]`: every CPU at once allocates and frees single frames through its own page
//! cache and free batch, and the console prints what each CPU did.
//!
//! Each CPU keeps up to 16 frames at a time, writes its number into each and checks it
//! before the free, so a frame handed to two CPUs at once would show as a clash.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::mm;
use crate::rng::XorShift;
use crate::smp::{self, MAX_CPUS};

/// Frames one CPU holds at most during the churn.
const HELD: usize = 16;

/// Runs the churn and prints per-CPU counts.
pub fn run(pairs: u32, out: &mut dyn Write) -> fmt::Result {
    let cpus = smp::cpus_online();
    let done = [const { AtomicU64::new(0) }; MAX_CPUS];
    let clashes = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    writeln!(
        out,
        "churn: {cpus} CPU{} at once, {pairs} single-frame alloc+free pairs each",
        if cpus == 1 { "" } else { "s" }
    )?;
    // Counted with no output between them: writing may grow the heap.
    let before = mm::stats().free_pages;
    let stats_before = mm::cpu_stats();
    smp::run_on_all_cpus(&|cpu| {
        let mut rng = XorShift::new(0xc0de + cpu as u64);
        let mut held: [Option<mm::Frames>; HELD] = [const { None }; HELD];
        let stamp = 0x5eed_0000 + cpu as u64;
        for _ in 0..pairs {
            let slot = rng.below(HELD as u64) as usize;
            if let Some(mut f) = held[slot].take() {
                if read_stamp(&mut f) != stamp {
                    clashes.fetch_add(1, Ordering::Relaxed);
                }
                drop(f);
            }
            match mm::alloc_frame() {
                Ok(mut f) => {
                    f.as_mut_bytes()[..8].copy_from_slice(&stamp.to_le_bytes());
                    held[slot] = Some(f);
                    done[cpu].fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for mut f in held.into_iter().flatten() {
            if read_stamp(&mut f) != stamp {
                clashes.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let after = mm::cpu_stats();
    let now = mm::stats().free_pages;
    writeln!(
        out,
        "  {:<4} {:>9} {:>9} {:>9} {:>12}",
        "CPU", "pairs", "allocs", "frees", "frames held"
    )?;
    for cpu in 0..cpus {
        let (a, b) = (stats_before[cpu], after[cpu]);
        writeln!(
            out,
            "  {:<4} {:>9} {:>9} {:>9} {:>12}",
            cpu,
            done[cpu].load(Ordering::Relaxed),
            b.allocs - a.allocs,
            b.frees - a.frees,
            b.held_pages
        )?;
    }
    writeln!(
        out,
        "  allocs and frees: from and to each CPU's own cache and batches; \
         frames held: free frames kept by that CPU"
    )?;
    let (c, f) = (
        clashes.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    writeln!(
        out,
        "free frames {before} before, {now} after{}; {c} frames found with another CPU's stamp{}",
        if now == before {
            " (all back)"
        } else {
            " (the heap or the console's own frames moved)"
        },
        if f > 0 {
            " (some allocations failed: out of memory)"
        } else {
            ""
        }
    )?;
    Ok(())
}

fn read_stamp(f: &mut mm::Frames) -> u64 {
    u64::from_le_bytes(f.as_mut_bytes()[..8].try_into().expect("8 bytes"))
}
