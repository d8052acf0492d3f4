//! `--threads`: single-page churn from 1 and 2 threads at once (issue 9, "Measured, on the
//! host"). The kernel's real path (per-thread `PageCache` and `FreeBatch`, the zone's
//! `PageAlloc` in a `spin::Mutex`, frees taken back through the handed-out bits without
//! the lock) against the thread-safe peers: frame-alloc (atomics) as it is, the others in a
//! `spin::Mutex`. Every thread churns its own live set with its own seed, the same seeds
//! for every allocator.
//!
//! Each allocator is first run checked (threads stamp every page they hold in a shared
//! table, so a page handed out twice is caught; at the end every page must come back),
//! then timed on a fresh instance: the table shows the median total throughput over the
//! runs and the ratio of 2 threads to 1.

use std::sync::Barrier;
use std::sync::atomic::AtomicU8;

use pagealloc::{HandedOut, RangeOpError};
use spin::Mutex;

use super::*;

/// Memory every allocator manages.
const BYTES: u64 = 256 << 20;
/// Pages each thread keeps live while it churns.
const LIVE: usize = 512;

/// An allocator several threads share; each thread keeps a `Local`.
trait Shared: Sync {
    type Local;
    fn local(&self) -> Self::Local;
    fn alloc(&self, l: &mut Self::Local) -> Option<u64>;
    /// False if the allocator refused the free.
    fn free(&self, l: &mut Self::Local, addr: u64) -> bool;
    /// Gives back what the thread's `Local` holds.
    fn retire(&self, l: Self::Local);
}

/// How each peer is built, fresh for every run.
struct Peer2 {
    name: &'static str,
    run: fn(&Opts2, usize, bool) -> Result<f64, String>,
}

/// Settings of the mode.
pub(super) struct Opts2 {
    pub runs: usize,
    pub pairs: usize,
    pub seed: u64,
}

// --- The kernel's path.

struct KernelPath<'m> {
    zone: Mutex<PageAlloc<'m>>,
    owner: HandedOut<'m>,
}

impl<'m> Shared for KernelPath<'m> {
    type Local = (PageCache<'m>, FreeBatch<'m>);

    fn local(&self) -> Self::Local {
        (PageCache::empty(), FreeBatch::new())
    }

    fn alloc(&self, (cache, batch): &mut Self::Local) -> Option<u64> {
        if let Some(a) = batch.alloc() {
            return Some(a);
        }
        if let Some((a, _)) = cache.alloc(1) {
            return Some(a);
        }
        *cache = self.zone.lock().alloc_to_cache();
        cache.alloc(1).map(|(a, _)| a)
    }

    fn free(&self, (_, batch): &mut Self::Local, addr: u64) -> bool {
        match batch.free(self.owner, addr) {
            Ok(()) => true,
            Err(RangeOpError::BatchFull { .. }) => {
                if batch.return_half(&mut self.zone.lock()).is_err() {
                    return false;
                }
                batch.free(self.owner, addr).is_ok()
            }
            Err(_) => false,
        }
    }

    fn retire(&self, (mut cache, mut batch): Self::Local) {
        let mut z = self.zone.lock();
        batch.flush(&mut z).expect("a thread's own batch");
        cache.flush(&mut z).expect("a thread's own cache");
    }
}

/// The zone lock for every page, no cache or batch: what the kernel's path saves.
struct ZoneLocked<'m>(Mutex<PageAlloc<'m>>);

impl Shared for ZoneLocked<'_> {
    type Local = ();

    fn local(&self) {}

    fn alloc(&self, _: &mut ()) -> Option<u64> {
        self.0.lock().alloc(1).ok().map(|a| a.base)
    }

    fn free(&self, _: &mut (), addr: u64) -> bool {
        self.0.lock().free(addr, 1).is_ok()
    }

    fn retire(&self, _: ()) {}
}

// --- Peers.

struct FrameAllocShared(FrameAllocPeer);

impl Shared for FrameAllocShared {
    type Local = ();

    fn local(&self) {}

    fn alloc(&self, _: &mut ()) -> Option<u64> {
        self.0
            .fa
            .allocate_physical(FA_BASE, NonZeroUsize::MIN)
            .ok()
            .map(|a| a as u64)
    }

    fn free(&self, _: &mut (), addr: u64) -> bool {
        // SAFETY: `addr` is a live single-frame allocation of this allocator, freed once
        // (the threads free only pages they hold).
        unsafe {
            self.0
                .fa
                .deallocate_physical(FA_BASE, NonZeroUsize::MIN, addr as usize)
        };
        true
    }

    fn retire(&self, _: ()) {}
}

/// A single-threaded peer behind a spin lock.
struct Locked<P: Peer + Send>(Mutex<P>);

impl<P: Peer + Send> Shared for Locked<P> {
    type Local = ();

    fn local(&self) {}

    fn alloc(&self, _: &mut ()) -> Option<u64> {
        self.0.lock().alloc(1)
    }

    fn free(&self, _: &mut (), addr: u64) -> bool {
        self.0.lock().free(addr, 1)
    }

    fn retire(&self, _: ()) {}
}

// --- Running.

/// Per-page owner stamps for the checked pass (0: not handed out).
struct Stamps(Vec<AtomicU8>);

impl Stamps {
    fn take(&self, addr: u64, who: u8) -> Result<(), String> {
        let Some(s) = self.0.get((addr / PAGE) as usize) else {
            return Err(format!("page {addr:#x} lies outside the memory"));
        };
        s.compare_exchange(0, who, Relaxed, Relaxed)
            .map(drop)
            .map_err(|other| {
                format!("page {addr:#x} handed to thread {who} while thread {other} holds it")
            })
    }

    fn give(&self, addr: u64) {
        self.0[(addr / PAGE) as usize].store(0, Relaxed);
    }
}

/// One thread's churn: fill `LIVE` pages, then `pairs` times free a random one and
/// allocate one. Returns an error on a refused free, a failed allocation or (checked) a
/// page handed out twice.
fn churn_thread<S: Shared>(
    s: &S,
    l: &mut S::Local,
    rng: &mut Rng,
    live: &mut Vec<u64>,
    pairs: usize,
    stamps: Option<(&Stamps, u8)>,
) -> Result<(), String> {
    for _ in 0..pairs {
        let i = rng.below(live.len());
        let addr = live.swap_remove(i);
        if let Some((st, _)) = stamps {
            st.give(addr);
        }
        if !s.free(l, addr) {
            return Err(format!("free of {addr:#x} refused"));
        }
        let Some(a) = s.alloc(l) else {
            return Err("out of memory while churning".into());
        };
        if let Some((st, who)) = stamps {
            st.take(a, who)?;
        }
        live.push(a);
    }
    Ok(())
}

/// Runs `threads` churning threads on `s`; returns total pairs per second of the timed
/// part (checked: after a drain that must find every page).
fn run_on<S: Shared>(
    s: &S,
    threads: usize,
    o: &Opts2,
    checked: bool,
    capacity: usize,
) -> Result<f64, String> {
    let stamps = Stamps((0..pages_of(BYTES)).map(|_| AtomicU8::new(0)).collect());
    let barrier = Barrier::new(threads + 1);
    let (secs, errors) = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, stamps) = (&barrier, &stamps);
                sc.spawn(move || -> Result<(), String> {
                    let mut l = s.local();
                    let mut rng = Rng::new(o.seed ^ (t as u64 + 1) << 40);
                    let who = t as u8 + 1;
                    let st = checked.then_some((stamps, who));
                    let mut live = Vec::with_capacity(LIVE);
                    let mut r = Ok(());
                    for _ in 0..LIVE {
                        match s.alloc(&mut l) {
                            Some(a) => {
                                if let Some((st, who)) = st {
                                    r = r.and(st.take(a, who));
                                }
                                live.push(a);
                            }
                            None => r = Err("out of memory while filling".into()),
                        }
                    }
                    barrier.wait();
                    if r.is_ok() {
                        r = churn_thread(s, &mut l, &mut rng, &mut live, o.pairs, st);
                    }
                    barrier.wait();
                    for a in live {
                        if let Some((st, _)) = st {
                            st.give(a);
                        }
                        if !s.free(&mut l, a) && r.is_ok() {
                            r = Err(format!("final free of {a:#x} refused"));
                        }
                    }
                    s.retire(l);
                    r
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        let secs = t0.elapsed().as_secs_f64();
        let errors: Vec<String> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("churn thread panicked").err())
            .collect();
        (secs, errors)
    });
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    if checked {
        // Every page must come back: drain with single pages.
        let mut l = s.local();
        let mut n = 0;
        while let Some(a) = s.alloc(&mut l) {
            stamps.take(a, 0xff)?;
            n += 1;
        }
        if n != capacity {
            return Err(format!("drain found {n} pages of {capacity}: leaked"));
        }
    }
    Ok((threads * o.pairs) as f64 / secs)
}

fn kernel_path(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let mut md = Box::default();
    let pa = build_ours(BYTES, true, &mut md, &mut InitClock::start())?;
    let cap = pa.total_pages();
    let owner = pa.handed_out();
    let s = KernelPath {
        zone: Mutex::new(pa),
        owner,
    };
    let r = run_on(&s, threads, o, checked, cap)?;
    if checked {
        let z = s.zone.lock();
        z.check_invariants().map_err(|e| e.to_string())?;
        if z.held_pages() != 0 {
            return Err(format!("{} pages still held", z.held_pages()));
        }
    }
    Ok(r)
}

fn zone_locked(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let mut md = Box::default();
    let pa = build_ours(BYTES, true, &mut md, &mut InitClock::start())?;
    let cap = pa.total_pages();
    run_on(&ZoneLocked(Mutex::new(pa)), threads, o, checked, cap)
}

/// The uncontended reference: the same cache and batch on one thread with no lock at all
/// (`OursCached`, the single-threaded benchmark's "cached" row).
fn no_lock_reference(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    if threads != 1 {
        return Err("one thread only".into());
    }
    let mut md = Box::default();
    let pa = build_ours(BYTES, true, &mut md, &mut InitClock::start())?;
    let cap = pa.total_pages();
    let s = Locked(Mutex::new(OursCached {
        pa,
        cache: PageCache::empty(),
        batch: FreeBatch::new(),
    }));
    // Take the lock once and churn through the peer directly.
    let mut p = s.0.lock();
    let mut rng = Rng::new(o.seed ^ 1 << 40);
    let mut live: Vec<u64> = (0..LIVE).filter_map(|_| p.alloc(1)).collect();
    let stamps = Stamps((0..pages_of(BYTES)).map(|_| AtomicU8::new(0)).collect());
    if checked {
        for &a in &live {
            stamps.take(a, 1)?;
        }
    }
    let t0 = Instant::now();
    for _ in 0..o.pairs {
        let addr = live.swap_remove(rng.below(live.len()));
        if checked {
            stamps.give(addr);
        }
        if !p.free(addr, 1) {
            return Err(format!("free of {addr:#x} refused"));
        }
        let a = p.alloc(1).ok_or("out of memory while churning")?;
        if checked {
            stamps.take(a, 1)?;
        }
        live.push(a);
    }
    let secs = t0.elapsed().as_secs_f64();
    for a in live {
        p.free(a, 1);
    }
    p.flush();
    if checked && p.pa.free_pages() != cap {
        return Err(format!(
            "{} of {cap} pages free at the end",
            p.pa.free_pages()
        ));
    }
    Ok(o.pairs as f64 / secs)
}

fn frame_alloc_peer(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let s = FrameAllocShared(build_frame_alloc(BYTES, &mut InitClock::start())?);
    let cap = s.0.capacity;
    run_on(&s, threads, o, checked, cap)
}

fn buddy(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let mut fa = buddy_system_allocator::FrameAllocator::<33>::new();
    fa.add_frame(0, pages_of(BYTES));
    let p = Buddy {
        fa,
        npages: pages_of(BYTES),
    };
    run_on(&Locked(Mutex::new(p)), threads, o, checked, pages_of(BYTES))
}

fn bitmap(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let n = pages_of(BYTES);
    // SAFETY: as in `with_bitmap`: all zeros is the type's empty value.
    let mut ba: Box<BitAlloc1M> = unsafe { Box::<BitAlloc1M>::new_zeroed().assume_init() };
    ba.insert(0..n);
    run_on(
        &Locked(Mutex::new(Bitmap { ba, npages: n })),
        threads,
        o,
        checked,
        n,
    )
}

fn free_list(o: &Opts2, threads: usize, checked: bool) -> Result<f64, String> {
    let mut fl = free_list::FreeList::<16>::new();
    let all = free_list::PageRange::new(0, BYTES as usize).map_err(|e| format!("{e:?}"))?;
    // SAFETY: the memory is never touched; only addresses are handed out.
    unsafe { fl.deallocate(all) }.map_err(|e| e.to_string())?;
    let p = FreeListPeer {
        fl,
        npages: pages_of(BYTES),
    };
    run_on(&Locked(Mutex::new(p)), threads, o, checked, pages_of(BYTES))
}

const PEERS: [Peer2; 6] = [
    Peer2 {
        name: "pagealloc, kernel path (cache + batch, zone spin lock)",
        run: kernel_path,
    },
    Peer2 {
        name: "pagealloc, zone spin lock for every page",
        run: zone_locked,
    },
    Peer2 {
        name: "frame-alloc 0.1 (atomics)",
        run: frame_alloc_peer,
    },
    Peer2 {
        name: "buddy_system_allocator 0.13 + spin lock",
        run: buddy,
    },
    Peer2 {
        name: "bitmap-allocator 0.4.6 + spin lock",
        run: bitmap,
    },
    Peer2 {
        name: "free-list 0.3 + spin lock",
        run: free_list,
    },
];

/// Medians over `runs` rounds (each on fresh allocators, after a checked run of each),
/// one thread then two in every round, so that both see the same load on a shared
/// machine; the ratio is the median of the rounds' ratios. With `also`, a third
/// measurement (one thread) is taken in each round too.
struct Measured {
    one: f64,
    two: f64,
    ratio: f64,
    also: Option<(f64, f64)>,
}

fn measure(p: &Peer2, o: &Opts2, also: Option<&Peer2>) -> Result<Measured, String> {
    for threads in [1, 2] {
        (p.run)(o, threads, true).map_err(|e| format!("CHECK FAILED: {e}"))?;
    }
    if let Some(a) = also {
        (a.run)(o, 1, true).map_err(|e| format!("CHECK FAILED: {e}"))?;
    }
    let (mut one, mut two, mut ratio, mut third, mut third_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let a = (p.run)(o, 1, false)?;
        let b = (p.run)(o, 2, false)?;
        one.push(a);
        two.push(b);
        ratio.push(b / a);
        if let Some(x) = also {
            let c = (x.run)(o, 1, false)?;
            third.push(c);
            third_ratio.push(c / a);
        }
    }
    Ok(Measured {
        one: median(one),
        two: median(two),
        ratio: median(ratio),
        also: also.map(|_| (median(third), median(third_ratio))),
    })
}

pub(super) fn run(o: &Opts2) {
    let cores = std::thread::available_parallelism().map_or(0, NonZeroUsize::get);
    println!(
        "threads mode: single-page churn (free a random live page, allocate one), {LIVE} live pages \
         and {} pairs per thread, {} MiB, seed {:#x}, medians of {} rounds (1 thread, then 2) \
         after a checked run; {cores} hardware threads available",
        o.pairs,
        BYTES >> 20,
        o.seed,
        o.runs
    );
    println!();
    println!("| allocator | 1 thread, M pairs/s | 2 threads, M pairs/s (total) | 2 / 1 |");
    println!("|---|--:|--:|--:|");
    let reference = Peer2 {
        name: "uncontended reference",
        run: no_lock_reference,
    };
    let mut kernel = None;
    for (k, p) in PEERS.iter().enumerate() {
        match measure(p, o, (k == 0).then_some(&reference)) {
            Ok(m) => {
                println!(
                    "| {} | {:.1} | {:.1} | {:.2}x |",
                    p.name,
                    m.one / 1e6,
                    m.two / 1e6,
                    m.ratio
                );
                if k == 0 {
                    kernel = m.also;
                }
            }
            Err(e) => println!("| {} | {e} | | |", p.name),
        }
    }
    println!();
    if let Some((r, ratio)) = kernel {
        println!(
            "uncontended reference (the same cache and batch, one thread, no lock): {:.1} M pairs/s; \
             the kernel path on one thread takes {:.2}x its time per pair (median of the rounds)",
            r / 1e6,
            ratio
        );
    }
}
