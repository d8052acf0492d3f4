//! Several threads at once, as CPUs of an SMP kernel use the crate: the allocator behind a
//! `spin::Mutex` (the zone lock), a `HandedOut` handle outside it, and per-thread
//! `PageCache` and `FreeBatch` used without the lock.
//!
//! * Racing frees: threads free the same pages at the same moment, some lock-free into
//!   their batch, one under the lock; exactly one free of each page succeeds.
//! * Churn: threads allocate and free through their cache and batch (and sometimes the
//!   tree); each stamps the pages it holds in a shared table, so a page handed out twice
//!   is caught. At the end everything comes back and the invariants hold.
//!
//! No timing is asserted; the tests only count.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Once};

use pagealloc::testutil::{HeapMetadata, Rng};
use pagealloc::testutil::{PAGE_SIZE, PALLOC_CHUNK_PAGES as CHUNK_PAGES};
use pagealloc::{
    AddrRange, Constraints, Contents, FreeBatch, HandedOut, MetadataLayout, PageAlloc, PageCache,
    RangeOpError,
};
use spin::Mutex;

const MIB: u64 = 1 << 20;

/// Makes a panic on any thread end the test binary at once, after printing it: the other
/// threads of these tests would otherwise wait at their `Barrier` forever, and a failure
/// would show as a hang (there is no timeout on host tests).
fn abort_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // Straight to stderr: the harness's captured output dies with the process.
            let _ = writeln!(
                std::io::stderr(),
                "{info}\naborting: a thread of a racing test panicked"
            );
            std::process::abort();
        }));
    });
}

fn grown(md: &mut HeapMetadata, size: u64) -> PageAlloc<'_> {
    let r = AddrRange::new(0, size);
    let mut pa = md.page_alloc(MetadataLayout::for_regions(&[r]).unwrap());
    pa.grow(AddrRange::new(0, size), Contents::Unknown).unwrap();
    pa
}

fn race_frees(threads: usize, iterations: usize, pages_per_round: usize) {
    abort_on_panic();
    let mut md = HeapMetadata::default();
    let pa = grown(&mut md, 16 * MIB);
    let total = pa.total_pages();
    let h: HandedOut<'_> = pa.handed_out();
    let zone = Mutex::new(pa);
    let round: Vec<AtomicU32> = (0..pages_per_round).map(|_| AtomicU32::new(0)).collect();
    let won: Vec<AtomicUsize> = (0..pages_per_round).map(|_| AtomicUsize::new(0)).collect();
    let refused = AtomicUsize::new(0);
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (zone, round, won, refused, barrier) = (&zone, &round, &won, &refused, &barrier);
            s.spawn(move || {
                let mut batch = FreeBatch::new();
                let mut rng = Rng(0x9e37_79b9 * (t as u64 + 1));
                for it in 0..iterations {
                    if t == 0 {
                        // Hand out a fresh set of pages (some single, some in a run).
                        let mut z = zone.lock();
                        for (k, slot) in round.iter().enumerate() {
                            let a = z.alloc(1).unwrap().base;
                            slot.store((a / PAGE_SIZE) as u32, Ordering::Relaxed);
                            won[k].store(0, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                    // Every thread frees every page, from a different starting point.
                    let start = rng.below(round.len() as u64) as usize;
                    for k in 0..round.len() {
                        let k = (start + k) % round.len();
                        let addr = u64::from(round[k].load(Ordering::Relaxed)) * PAGE_SIZE;
                        // Thread 0 frees under the lock every other round; the rest go
                        // through their own batch without it.
                        let r = if t == 0 && it % 2 == 1 {
                            zone.lock().free(addr, 1)
                        } else {
                            batch.free(h, addr)
                        };
                        match r {
                            Ok(()) => {
                                won[k].fetch_add(1, Ordering::Relaxed);
                            }
                            Err(
                                RangeOpError::NotHandedOut { .. }
                                | RangeOpError::Held { .. }
                                | RangeOpError::NotAllocated { .. },
                            ) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("thread {t}, round {it}: free of {addr:#x}: {e}"),
                        }
                    }
                    barrier.wait();
                    for (k, w) in won.iter().enumerate() {
                        let n = w.load(Ordering::Relaxed);
                        assert_eq!(n, 1, "round {it}: page #{k} freed {n} times");
                    }
                    // Return the batch under the lock before the next round.
                    let n = batch.len();
                    assert_eq!(batch.flush(&mut zone.lock()), Ok(n));
                    barrier.wait();
                }
            });
        }
    });
    let pa = zone.into_inner();
    assert_eq!(
        refused.load(Ordering::Relaxed),
        iterations * pages_per_round * (threads - 1)
    );
    assert_eq!(pa.free_pages(), total);
    assert_eq!(pa.held_pages(), 0);
    pa.check_invariants().unwrap();
}

#[test]
fn racing_frees_of_one_page_succeed_exactly_once_2_threads() {
    race_frees(2, 10_000, 16);
}

#[test]
fn racing_frees_of_one_page_succeed_exactly_once_4_threads() {
    race_frees(4, 5_000, 16);
}

/// A free of a whole 2 MiB chunk under the lock races lock-free frees of single pages
/// inside it (each invalid for one of the two callers; the test only asks that exactly
/// one kind wins): either the chunk free wins and every single free is refused, or some
/// single frees win and the chunk free is refused, having restored every bit it cleared,
/// so the rest of the chunk can still be freed page by page.
fn race_chunk_frees(threads: usize, iterations: usize) {
    abort_on_panic();
    let mut md = HeapMetadata::default();
    let pa = grown(&mut md, 16 * MIB);
    let total = pa.total_pages();
    let h = pa.handed_out();
    let zone = Mutex::new(pa);
    let chunk = AtomicU64::new(0);
    let chunk_won = AtomicBool::new(false);
    // The page each thread's free won this round, or `NONE`.
    const NONE: u64 = u64::MAX;
    let page_won: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(NONE)).collect();
    let rounds_lost_by_chunk = AtomicUsize::new(0);
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (zone, chunk, chunk_won, page_won, lost, barrier) = (
                &zone,
                &chunk,
                &chunk_won,
                &page_won,
                &rounds_lost_by_chunk,
                &barrier,
            );
            s.spawn(move || {
                let mut batch = FreeBatch::new();
                let mut rng = Rng(0x51ed_270b * (t as u64 + 1));
                for it in 0..iterations {
                    if t == 0 {
                        let a = zone
                            .lock()
                            .alloc_constrained(CHUNK_PAGES, Constraints::aligned(CHUNK_PAGES))
                            .unwrap();
                        chunk.store(a.base, Ordering::Relaxed);
                        chunk_won.store(false, Ordering::Relaxed);
                    }
                    page_won[t].store(NONE, Ordering::Relaxed);
                    barrier.wait();
                    let base = chunk.load(Ordering::Relaxed);
                    if t == 0 {
                        match zone.lock().free(base, CHUNK_PAGES) {
                            Ok(()) => chunk_won.store(true, Ordering::Relaxed),
                            Err(RangeOpError::Held { .. } | RangeOpError::NotAllocated { .. }) => {}
                            Err(e) => panic!("round {it}: free of chunk {base:#x}: {e}"),
                        }
                    } else {
                        let page = base + rng.below(CHUNK_PAGES as u64) * PAGE_SIZE;
                        match batch.free(h, page) {
                            Ok(()) => page_won[t].store(page, Ordering::Relaxed),
                            Err(RangeOpError::NotHandedOut { .. }) => {}
                            Err(e) => panic!("thread {t}, round {it}: free of {page:#x}: {e}"),
                        }
                    }
                    barrier.wait();
                    if t == 0 {
                        let won: Vec<u64> = page_won[1..]
                            .iter()
                            .map(|w| w.load(Ordering::Relaxed))
                            .filter(|&p| p != NONE)
                            .collect();
                        let mut z = zone.lock();
                        if chunk_won.load(Ordering::Relaxed) {
                            assert!(won.is_empty(), "round {it}: chunk and pages {won:x?} freed");
                        } else {
                            assert!(!won.is_empty(), "round {it}: nothing was freed");
                            lost.fetch_add(1, Ordering::Relaxed);
                            // Every other page of the chunk is still handed out.
                            for p in 0..CHUNK_PAGES as u64 {
                                let page = base + p * PAGE_SIZE;
                                if !won.contains(&page) {
                                    z.free(page, 1).unwrap();
                                }
                            }
                        }
                    }
                    barrier.wait();
                    let n = batch.len();
                    assert_eq!(batch.flush(&mut zone.lock()), Ok(n));
                    barrier.wait();
                }
            });
        }
    });
    let pa = zone.into_inner();
    eprintln!(
        "{threads} threads: the chunk free lost {} of {iterations} rounds",
        rounds_lost_by_chunk.load(Ordering::Relaxed)
    );
    assert_eq!(pa.free_pages(), total);
    assert_eq!(pa.held_pages(), 0);
    pa.check_invariants().unwrap();
}

#[test]
fn a_chunk_free_racing_page_frees_inside_it_2_threads() {
    race_chunk_frees(2, 5_000);
}

#[test]
fn a_chunk_free_racing_page_frees_inside_it_4_threads() {
    race_chunk_frees(4, 3_000);
}

/// Per-thread state for the churn: the cache, the batch and the pages held.
struct Cpu<'m> {
    id: u32,
    cache: PageCache<'m>,
    batch: FreeBatch<'m>,
    live: Vec<(u64, usize)>,
}

/// Marks pages as held by `id`: every one must be unmarked.
fn stamp(table: &[AtomicU32], id: u32, base: u64, npages: usize) {
    for p in 0..npages {
        let i = (base / PAGE_SIZE) as usize + p;
        if let Err(other) = table[i].compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire) {
            panic!(
                "page {:#x} handed to thread {id} while thread {other} holds it",
                i as u64 * PAGE_SIZE
            );
        }
    }
}

/// Clears the marks before the pages are freed.
fn unstamp(table: &[AtomicU32], id: u32, base: u64, npages: usize) {
    for p in 0..npages {
        let i = (base / PAGE_SIZE) as usize + p;
        let was = table[i].swap(0, Ordering::AcqRel);
        assert_eq!(
            was,
            id,
            "page {:#x} of thread {id} was marked {was}",
            i as u64 * PAGE_SIZE
        );
    }
}

fn churn(threads: usize, ops: usize) {
    abort_on_panic();
    let size = 8 * MIB;
    let mut md = HeapMetadata::default();
    let pa = grown(&mut md, size);
    let total = pa.total_pages();
    let h = pa.handed_out();
    let zone = Mutex::new(pa);
    let table: Vec<AtomicU32> = (0..size / PAGE_SIZE).map(|_| AtomicU32::new(0)).collect();
    let (ooms, lock_free) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (zone, table, ooms, lock_free) = (&zone, &table, &ooms, &lock_free);
            s.spawn(move || {
                let mut cpu = Cpu {
                    id: t as u32 + 1,
                    cache: PageCache::empty(),
                    batch: FreeBatch::new(),
                    live: Vec::new(),
                };
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t as u64 + 1) << 32);
                for _ in 0..ops {
                    let r = rng.below(100);
                    // Hold at most a few hundred pages each, so that with 4 threads the
                    // 2048 pages sometimes run out.
                    let free = !cpu.live.is_empty() && (r < 45 || cpu.live.len() > 600);
                    if free {
                        let i = rng.below(cpu.live.len() as u64) as usize;
                        let (base, n) = cpu.live.swap_remove(i);
                        unstamp(table, cpu.id, base, n);
                        if n == 1 {
                            match cpu.batch.free(h, base) {
                                Ok(()) => {}
                                Err(RangeOpError::BatchFull { .. }) => {
                                    let mut z = zone.lock();
                                    cpu.batch.return_half(&mut z).unwrap();
                                    drop(z);
                                    cpu.batch.free(h, base).unwrap();
                                }
                                Err(e) => panic!("thread {t}: free of {base:#x}: {e}"),
                            }
                            lock_free.fetch_add(1, Ordering::Relaxed);
                        } else {
                            zone.lock().free(base, n).unwrap();
                        }
                    } else if r < 90 {
                        // One page: batch, then cache, then a refill under the lock.
                        let got = cpu
                            .batch
                            .alloc()
                            .or_else(|| cpu.cache.alloc(1).map(|(a, _)| a))
                            .or_else(|| {
                                let mut z = zone.lock();
                                cpu.cache = z.alloc_to_cache();
                                cpu.cache.alloc(1).map(|(a, _)| a)
                            });
                        match got {
                            Some(a) => {
                                stamp(table, cpu.id, a, 1);
                                cpu.live.push((a, 1));
                            }
                            None => {
                                ooms.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        let n = 2 + rng.below(30) as usize;
                        let got = zone.lock().alloc(n);
                        match got {
                            Ok(a) => {
                                stamp(table, cpu.id, a.base, n);
                                cpu.live.push((a.base, n));
                            }
                            Err(_) => {
                                ooms.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                // Everything back.
                let mut z = zone.lock();
                for (base, n) in cpu.live.drain(..) {
                    unstamp(table, cpu.id, base, n);
                    z.free(base, n).unwrap();
                }
                cpu.batch.flush(&mut z).unwrap();
                cpu.cache.flush(&mut z).unwrap();
            });
        }
    });
    let pa = zone.into_inner();
    assert!(table.iter().all(|s| s.load(Ordering::Relaxed) == 0));
    assert_eq!(pa.free_pages(), total);
    assert_eq!(pa.held_pages(), 0);
    pa.check_invariants().unwrap();
    assert!(lock_free.load(Ordering::Relaxed) > ops * threads / 4);
    println!(
        "{threads} threads: {} lock-free frees, {} allocations out of memory",
        lock_free.load(Ordering::Relaxed),
        ooms.load(Ordering::Relaxed)
    );
}

#[test]
fn churn_through_caches_and_batches_hands_nothing_out_twice_2_threads() {
    churn(2, 100_000);
}

#[test]
fn churn_through_caches_and_batches_hands_nothing_out_twice_4_threads() {
    churn(4, 50_000);
}
