//! Measurement: the heap accounting every allocator's metadata is measured with, and
//! the timed loops and medians.

use super::*;

// ---------------------------------------------------------------------------------------
// Heap accounting: every allocator's metadata is measured the same way, as the bytes it
// holds on the heap (plus, for frame-alloc, the pool frames it carves for its bitmap,
// which the bench backs with a heap buffer and so are counted too).

pub(crate) struct CountingAlloc;

pub(crate) static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
pub(crate) static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn heap_grew(n: usize) {
    let now = HEAP_LIVE.fetch_add(n, Relaxed) + n;
    // Single-threaded bench: a plain load/store is enough and cheaper than fetch_max.
    if now > HEAP_PEAK.load(Relaxed) {
        HEAP_PEAK.store(now, Relaxed);
    }
}

// SAFETY: forwards to `System` and only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            heap_grew(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            heap_grew(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) };
        HEAP_LIVE.fetch_sub(l.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            if new_size >= l.size() {
                heap_grew(new_size - l.size());
            } else {
                HEAP_LIVE.fetch_sub(l.size() - new_size, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
pub(crate) static GLOBAL: CountingAlloc = CountingAlloc;

pub(crate) fn heap_live() -> usize {
    HEAP_LIVE.load(Relaxed)
}

/// Starts a new peak measurement from the current live bytes.
pub(crate) fn heap_peak_reset() -> usize {
    let now = heap_live();
    HEAP_PEAK.store(now, Relaxed);
    now
}

pub(crate) fn heap_peak() -> usize {
    HEAP_PEAK.load(Relaxed)
}

#[derive(Clone, Copy)]
pub(crate) struct Timed {
    pub(crate) done: usize,
    pub(crate) planned: usize,
    pub(crate) ns: f64,
}

impl Timed {
    pub(crate) fn ns_per_op(&self) -> f64 {
        self.ns / self.done.max(1) as f64
    }

    pub(crate) fn partial(&self) -> bool {
        self.done < self.planned
    }
}

/// Runs `op(i)` for `i` in `0..n` until it returns false or `deadline` passes.
#[inline(always)]
pub(crate) fn timed_loop(n: usize, deadline: Instant, mut op: impl FnMut(usize) -> bool) -> Timed {
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        if i % 256 == 0 && Instant::now() >= deadline {
            break;
        }
        if !op(i) {
            break;
        }
        i += 1;
    }
    Timed {
        done: i,
        planned: n,
        ns: t0.elapsed().as_nanos() as f64,
    }
}

// The timed loops of the timed runs, one function per metric slot, so that callgrind
// can report each one's instructions (`--instructions`). The checked pass calls
// `timed_loop` directly and is not counted. Each slot's body differs (its `black_box`ed
// number), so that the compiler cannot merge a slot's loop with another slot's identical
// one (e.g. fill's alloc loop with fragmented's hole loop) and credit it to the wrong slot.
#[inline(never)]
pub(crate) fn measure_0(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    black_box(0);
    timed_loop(n, deadline, op)
}

#[inline(never)]
pub(crate) fn measure_1(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    black_box(1);
    timed_loop(n, deadline, op)
}

#[inline(never)]
pub(crate) fn measure_2(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    black_box(2);
    timed_loop(n, deadline, op)
}

/// The timed part of an allocator's init (slot 0 of the init workload under
/// `--instructions`): returns what `build` returns and its time in ns.
#[inline(never)]
pub(crate) fn measure_init<T>(build: impl FnOnce() -> T) -> (T, f64) {
    black_box(3);
    let t0 = Instant::now();
    let t = build();
    (t, t0.elapsed().as_nanos() as f64)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------
// Results.
