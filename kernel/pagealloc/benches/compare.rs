//! The page allocator against the frame allocators kernels use today, side by side.
//!
//! ```text
//! cargo bench -p pagealloc --bench compare                      # full run, all sizes
//! cargo bench -p pagealloc --bench compare -- --quick           # short run, 256 MiB and 4 GiB
//! cargo bench -p pagealloc --bench compare -- --sizes 256M,4G --only churn,mixed --peers ours,buddy
//! cargo bench -p pagealloc --bench compare -- --instructions --only churn   # callgrind, instructions/op
//! cargo bench -p pagealloc --bench compare -- --threads                 # 1 and 2 threads at once
//! ```
//!
//! Every allocator manages the same memory, `[0, size)`, and gets the same seeded request
//! sequence. Each cell of a table (one workload, one allocator, one size) runs:
//!
//! 1. a checked pass: every result is verified against a shadow bitmap (inside the
//!    memory, page aligned, aligned as asked, no page handed out twice, frees accepted);
//! 2. timed runs of the same operations without the shadow; the table shows the median;
//! 3. a final check: the live allocations rebuilt into a fresh shadow must not overlap,
//!    everything is freed, and a drain (2 MiB requests, then single pages) must get every
//!    page back, or the allocator leaked.
//!
//! A cell has a time budget (`--budget`). A peer that cannot finish its set-up within it
//! is reported as "did not finish"; one that can but is slow runs only as many operations
//! as fit, and the cell says it is extrapolated from them ("~").
//!
//! Benchmarks are not tests: nothing here asserts a timing. A failed check is printed in
//! the cell ("CHECK FAILED") and in the notes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bitmap_allocator::{BitAlloc, BitAlloc1M, BitAlloc16M, BitAlloc64K, BitAlloc256M};
use frame_alloc::{PageSize, PhysRange, PhysicalAllocator, Provenance, RegionInit};
use pagealloc::model::FirstFitBitmap;
use pagealloc::pallocbits::find_bit_range64;
use pagealloc::testutil::HeapMetadata;
use pagealloc::{
    AddrRange, Constraints, Contents, FreeBatch, MetadataLayout, PageAlloc, PageCache,
};
use pagealloc::{PallocBits, PallocSum, merge_summaries};

#[path = "compare/threads.rs"]
mod threads;

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// A 2 MiB frame, in pages.
const HUGE_PAGES: usize = 512;

// ---------------------------------------------------------------------------------------
// Heap accounting: every allocator's metadata is measured the same way, as the bytes it
// holds on the heap (plus, for frame-alloc, the pool frames it carves for its bitmap,
// which the bench backs with a heap buffer and so are counted too).

struct CountingAlloc;

static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn heap_grew(n: usize) {
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
static GLOBAL: CountingAlloc = CountingAlloc;

fn heap_live() -> usize {
    HEAP_LIVE.load(Relaxed)
}

/// Starts a new peak measurement from the current live bytes.
fn heap_peak_reset() -> usize {
    let now = heap_live();
    HEAP_PEAK.store(now, Relaxed);
    now
}

fn heap_peak() -> usize {
    HEAP_PEAK.load(Relaxed)
}

// ---------------------------------------------------------------------------------------
// Seeded randomness (SplitMix64): the same stream for every allocator.

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c909)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        scale(self.next(), n)
    }
}

/// Maps a random word to `0..n` without division.
fn scale(r: u64, n: usize) -> usize {
    ((u128::from(r) * n as u128) >> 64) as usize
}

// ---------------------------------------------------------------------------------------
// The allocators under test.

/// What an allocator can do; a workload that needs more prints "n/a" with the reason.
#[derive(Clone, Copy)]
struct Caps {
    free: bool,
    /// Contiguous multi-page requests.
    multi: bool,
    /// Aligned requests (2 MiB frames).
    aligned: bool,
}

/// One allocator instance over `[0, size)`; addresses are byte addresses.
trait Peer {
    fn alloc(&mut self, npages: usize) -> Option<u64>;
    /// `npages` aligned to `align_pages`; only called when [`Caps::aligned`].
    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64>;
    /// Returns false if the allocator refused the free.
    fn free(&mut self, addr: u64, npages: usize) -> bool;
    /// Returns pages held in caches (ours through its page cache).
    fn flush(&mut self) {}
    /// Pages a request of `npages` really takes (buddies round up to a power of two).
    fn consumed_pages(&self, npages: usize) -> usize {
        npages
    }
    /// Pages it can hand out in total.
    fn capacity_pages(&self) -> usize;
    /// Jumps ahead as if `npages` single pages had been allocated, for allocators whose
    /// cost grows with the pages already handed out; false if not supported.
    fn fast_forward(&mut self, _npages: usize) -> bool {
        false
    }
}

/// Time and heap bytes spent building an allocator and handing it all the memory.
#[derive(Clone, Copy, Default)]
struct InitStats {
    ns: f64,
    heap_bytes: usize,
}

struct InitClock {
    heap0: usize,
    t0: Instant,
}

impl InitClock {
    fn start() -> InitClock {
        InitClock {
            heap0: heap_live(),
            t0: Instant::now(),
        }
    }

    fn stop(self) -> InitStats {
        InitStats {
            ns: self.t0.elapsed().as_nanos() as f64,
            heap_bytes: heap_live().saturating_sub(self.heap0),
        }
    }
}

/// Code that runs against any allocator (a workload).
trait Visitor {
    type Out;
    fn visit<P: Peer>(self, p: &mut P, init: InitStats) -> Self::Out;
}

/// A kind of allocator: its name, what it can do, and how to build one.
trait Subject {
    const NAME: &'static str;
    /// Short name for `--peers`.
    const KEY: &'static str;
    const CAPS: Caps;
    /// Builds one over `[0, bytes)` and runs `v` on it, or says why it cannot.
    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String>;
}

fn pages_of(bytes: u64) -> usize {
    (bytes / PAGE) as usize
}

// --- The tutorial allocator ("Writing an OS in Rust", Paging Implementation chapter):
// every call re-walks the boot memory map and takes its `next`-th usable frame.

#[derive(Clone, Copy, PartialEq, Eq)]
enum RegionKind {
    Usable,
    Reserved,
}

struct MemRegion {
    start: u64,
    end: u64,
    kind: RegionKind,
}

struct Tutorial {
    map: Vec<MemRegion>,
    next: usize,
    npages: usize,
}

impl Tutorial {
    fn usable_frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.map
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.start..r.end)
            .flat_map(|r| r.step_by(PAGE as usize))
    }
}

impl Peer for Tutorial {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        if npages != 1 {
            return None;
        }
        let frame = self.usable_frames().nth(self.next);
        self.next += 1;
        frame
    }

    fn alloc_aligned(&mut self, _: usize, _: usize) -> Option<u64> {
        None
    }

    fn free(&mut self, _: u64, _: usize) -> bool {
        false
    }

    fn capacity_pages(&self) -> usize {
        self.npages
    }

    fn fast_forward(&mut self, npages: usize) -> bool {
        self.next = npages;
        true
    }
}

struct TutorialS;

impl Subject for TutorialS {
    const NAME: &'static str = "tutorial (re-walk map)";
    const KEY: &'static str = "tutorial";
    const CAPS: Caps = Caps {
        free: false,
        multi: false,
        aligned: false,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        // A boot map as firmware reports it: the usable RAM plus reserved entries that
        // the walk has to skip.
        let map = vec![
            MemRegion {
                start: 0,
                end: bytes,
                kind: RegionKind::Usable,
            },
            MemRegion {
                start: bytes,
                end: bytes + (2 << 20),
                kind: RegionKind::Reserved,
            },
            MemRegion {
                start: bytes + (4 << 20),
                end: bytes + (8 << 20),
                kind: RegionKind::Reserved,
            },
        ];
        let mut p = Tutorial {
            map,
            next: 0,
            npages: pages_of(bytes),
        };
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- The linear first-fit bitmap: the property tests' model (`FirstFitBitmap`).

struct FirstFit {
    bm: FirstFitBitmap,
    npages: usize,
}

impl Peer for FirstFit {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        self.bm.alloc(npages)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        // Walk the free runs in address order, as the model's `alloc_constrained` does.
        let align = align_pages as u64 * PAGE;
        let need = npages as u64 * PAGE;
        let mut from = 0;
        while let Some((base, n)) = self.bm.next_run(from) {
            let end = base + n as u64 * PAGE;
            let a = base.next_multiple_of(align);
            if a + need <= end {
                self.bm.take(a, npages);
                return Some(a);
            }
            from = end;
        }
        None
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        self.bm.free(addr, npages);
        true
    }

    fn capacity_pages(&self) -> usize {
        self.npages
    }
}

struct FirstFitS;

impl Subject for FirstFitS {
    const NAME: &'static str = "linear first-fit bitmap";
    const KEY: &'static str = "firstfit";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut bm = FirstFitBitmap::new(bytes);
        bm.add_free(0, pages_of(bytes));
        let mut p = FirstFit {
            bm,
            npages: pages_of(bytes),
        };
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- bitmap-allocator (rCore): a 16-ary segment tree of bitmaps of a fixed capacity.

struct Bitmap<T: BitAlloc> {
    ba: Box<T>,
    npages: usize,
}

impl<T: BitAlloc> Peer for Bitmap<T> {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        let key = if npages == 1 {
            self.ba.alloc()
        } else {
            self.ba.alloc_contiguous(None, npages, 0)
        };
        key.map(|k| k as u64 * PAGE)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        let align_log2 = align_pages.trailing_zeros() as usize;
        self.ba
            .alloc_contiguous(None, npages, align_log2)
            .map(|k| k as u64 * PAGE)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        let key = (addr / PAGE) as usize;
        if npages == 1 {
            self.ba.dealloc(key)
        } else {
            self.ba.dealloc_contiguous(key, npages)
        }
    }

    fn capacity_pages(&self) -> usize {
        self.npages
    }
}

struct BitmapS;

/// Builds the bitmap-allocator type `T` (one of the crate's fixed-capacity types).
fn with_bitmap<T: BitAlloc, V: Visitor>(npages: usize, v: V) -> Result<V::Out, String> {
    let clock = InitClock::start();
    // The larger types are tens of MiB and would overflow the stack if built there.
    // SAFETY: `T` is one of the crate's `BitAllocCascade16` types, which hold only
    // `u16`s; all zeros is a valid value (it is their `DEFAULT`: nothing free).
    let mut ba: Box<T> = unsafe { Box::<T>::new_zeroed().assume_init() };
    ba.insert(0..npages);
    let mut p = Bitmap { ba, npages };
    let init = clock.stop();
    Ok(v.visit(&mut p, init))
}

impl Subject for BitmapS {
    const NAME: &'static str = "bitmap-allocator 0.4.6";
    const KEY: &'static str = "bitmap";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let n = pages_of(bytes);
        if n <= BitAlloc64K::CAP {
            with_bitmap::<BitAlloc64K, V>(n, v)
        } else if n <= BitAlloc1M::CAP {
            with_bitmap::<BitAlloc1M, V>(n, v)
        } else if n <= BitAlloc16M::CAP {
            with_bitmap::<BitAlloc16M, V>(n, v)
        } else if n <= BitAlloc256M::CAP {
            with_bitmap::<BitAlloc256M, V>(n, v)
        } else {
            Err("its largest type, BitAlloc256M, holds 1 TiB".into())
        }
    }
}

// --- buddy_system_allocator 0.13: FrameAllocator, a free list per order in BTreeSets.

struct Buddy {
    fa: buddy_system_allocator::FrameAllocator<33>,
    npages: usize,
}

impl Peer for Buddy {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        self.fa.alloc(npages).map(|f| f as u64 * PAGE)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        // Sizes are in frames; a block of `max(size, align)` frames, naturally aligned.
        let layout = Layout::from_size_align(npages, align_pages).ok()?;
        self.fa.alloc_aligned(layout).map(|f| f as u64 * PAGE)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        self.fa.dealloc((addr / PAGE) as usize, npages);
        true
    }

    fn consumed_pages(&self, npages: usize) -> usize {
        npages.next_power_of_two()
    }

    fn capacity_pages(&self) -> usize {
        self.npages
    }
}

struct BuddyS;

impl Subject for BuddyS {
    const NAME: &'static str = "buddy_system_allocator 0.13";
    const KEY: &'static str = "buddy";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut fa = buddy_system_allocator::FrameAllocator::<33>::new();
        fa.add_frame(0, pages_of(bytes));
        let mut p = Buddy {
            fa,
            npages: pages_of(bytes),
        };
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- free-list 0.3 (Hermit): address-ordered first fit over a sorted vector of ranges.

struct FreeListPeer {
    fl: free_list::FreeList<16>,
    npages: usize,
}

impl Peer for FreeListPeer {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        let layout = free_list::PageLayout::from_size(npages * PAGE as usize).ok()?;
        self.fl.allocate(layout).ok().map(|r| r.start() as u64)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        let layout = free_list::PageLayout::from_size_align(
            npages * PAGE as usize,
            align_pages * PAGE as usize,
        )
        .ok()?;
        self.fl.allocate(layout).ok().map(|r| r.start() as u64)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        let Ok(range) = free_list::PageRange::from_start_len(addr as usize, npages * PAGE as usize)
        else {
            return false;
        };
        // SAFETY: the range came from this allocator and the bench no longer uses it
        // (the pages are never touched; only their addresses are).
        unsafe { self.fl.deallocate(range).is_ok() }
    }

    fn capacity_pages(&self) -> usize {
        self.npages
    }
}

struct FreeListS;

impl Subject for FreeListS {
    const NAME: &'static str = "free-list 0.3";
    const KEY: &'static str = "freelist";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut fl = free_list::FreeList::<16>::new();
        let all = free_list::PageRange::new(0, bytes as usize).map_err(|e| format!("{e:?}"))?;
        // SAFETY: as above; the memory is never touched.
        unsafe { fl.deallocate(all) }.map_err(|e| e.to_string())?;
        let mut p = FreeListPeer {
            fl,
            npages: pages_of(bytes),
        };
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- frame-alloc 0.1: a bitmap buddy (one bitmap per order plus a summary) that keeps its
// bitmap in the managed memory. The bench backs that one range with a heap buffer; the
// allocator never touches the frames it hands out.

/// Orders 0..=10: blocks up to 4 MiB, as in the crate's README.
const FA_ORDERS: usize = 11;
const FA_BASE: PageSize = PageSize::from_log2(12);

static FA_BITMAP: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static FA_BITMAP_PHYS: AtomicUsize = AtomicUsize::new(0);

struct BenchProv;

// SAFETY: `create` hands out the heap buffer that stands in for the one pool range the
// allocator dereferences (its bitmap); any other address is refused with a panic.
unsafe impl Provenance for BenchProv {
    unsafe fn create(phys: usize) -> NonNull<u8> {
        assert_eq!(
            phys,
            FA_BITMAP_PHYS.load(Relaxed),
            "frame-alloc touched a frame it hands out"
        );
        NonNull::new(FA_BITMAP.load(Relaxed)).expect("frame-alloc bitmap buffer not set")
    }

    unsafe fn destroy<T>(p: NonNull<T>) -> usize {
        p.addr().get()
    }
}

type Fa = frame_alloc::SummaryBuddyAllocator<FA_ORDERS, BenchProv>;

/// Bytes of frame-alloc's bitmap for `frames` frames, as its layout computes them
/// (per order: one bit per block, plus a summary word per 64 words once an order has
/// at least 128 words), rounded up to whole frames.
fn fa_bitmap_bytes(frames: usize) -> usize {
    let words = |bits: usize| bits.div_ceil(64);
    let mut total = 0;
    for k in 0..FA_ORDERS {
        let l1 = words(frames.div_ceil(1 << k));
        total += l1 + if l1 >= 128 { words(l1) } else { 0 };
    }
    (total * 8).next_multiple_of(PAGE as usize)
}

struct FrameAllocPeer {
    fa: Box<Fa>,
    capacity: usize,
    _bitmap: Vec<u64>,
}

impl Peer for FrameAllocPeer {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        let n = NonZeroUsize::new(npages)?;
        self.fa.allocate_physical(FA_BASE, n).ok().map(|a| a as u64)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        // Blocks are naturally aligned to their rounded size.
        if align_pages > npages.next_power_of_two() {
            return None;
        }
        self.alloc(npages)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        let Some(n) = NonZeroUsize::new(npages) else {
            return false;
        };
        // SAFETY: `addr` and `npages` are those of a live allocation of this allocator.
        unsafe { self.fa.deallocate_physical(FA_BASE, n, addr as usize) };
        true
    }

    fn consumed_pages(&self, npages: usize) -> usize {
        npages.next_power_of_two()
    }

    fn capacity_pages(&self) -> usize {
        self.capacity
    }
}

struct FrameAllocS;

impl Subject for FrameAllocS {
    const NAME: &'static str = "frame-alloc 0.1";
    const KEY: &'static str = "framealloc";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut p = build_frame_alloc(bytes)?;
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

/// Builds frame-alloc over `[0, bytes)`, its bitmap in a heap buffer.
fn build_frame_alloc(bytes: u64) -> Result<FrameAllocPeer, String> {
    {
        let frames = pages_of(bytes);
        let bitmap_bytes = fa_bitmap_bytes(frames);
        let mut bitmap = vec![0u64; bitmap_bytes / 8];
        FA_BITMAP.store(bitmap.as_mut_ptr().cast(), Relaxed);
        FA_BITMAP_PHYS.store(0, Relaxed);
        let fa = Box::new(Fa::new(FA_BASE));
        let usable = [PhysRange {
            base: 0,
            len: bytes as usize,
        }];
        // SAFETY: called once; the only range it dereferences is backed by `bitmap`
        // (checked in `BenchProv::create`), which outlives the allocator.
        unsafe { fa.try_init(0, bytes as usize, &usable) }.map_err(|e| e.to_string())?;
        let capacity = frames - bitmap_bytes / PAGE as usize;
        let total = frame_alloc::AllocatorStats::total_bytes(&*fa) / PAGE as usize;
        if total != capacity {
            return Err(format!(
                "bitmap size estimate is off: {total} frames usable, expected {capacity}"
            ));
        }
        Ok(FrameAllocPeer {
            fa,
            capacity,
            _bitmap: bitmap,
        })
    }
}

// --- Ours, uncached and through the page cache.

struct Ours<'m> {
    pa: PageAlloc<'m>,
}

impl Peer for Ours<'_> {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        self.pa.alloc(npages).ok().map(|a| a.base)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        self.pa
            .alloc_constrained(npages, Constraints::aligned(align_pages))
            .ok()
            .map(|a| a.base)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        self.pa.free(addr, npages).is_ok()
    }

    fn capacity_pages(&self) -> usize {
        self.pa.total_pages()
    }
}

/// As the kernel uses it: single pages come from the [`FreeBatch`] of recent frees, then
/// from a [`PageCache`] refilled with `alloc_to_cache`; single-page frees go to the batch;
/// everything else goes straight to the allocator, which returns the batch first when it
/// runs out.
struct OursCached<'m> {
    pa: PageAlloc<'m>,
    cache: PageCache<'m>,
    batch: FreeBatch<'m>,
}

impl Peer for OursCached<'_> {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        if npages != 1 {
            if let Ok(a) = self.pa.alloc(npages) {
                return Some(a.base);
            }
            // No allocation fails while freed pages wait in the batch.
            if self.batch.is_empty() {
                return None;
            }
            self.batch
                .flush(&mut self.pa)
                .expect("flush of the bench's own batch");
            return self.pa.alloc(npages).ok().map(|a| a.base);
        }
        if let Some(addr) = self.batch.alloc() {
            return Some(addr);
        }
        if let Some((addr, _)) = self.cache.alloc(1) {
            return Some(addr);
        }
        self.cache = self.pa.alloc_to_cache();
        self.cache.alloc(1).map(|(addr, _)| addr)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        let c = Constraints::aligned(align_pages);
        if let Ok(a) = self.pa.alloc_constrained(npages, c) {
            return Some(a.base);
        }
        if self.batch.is_empty() {
            return None;
        }
        self.batch
            .flush(&mut self.pa)
            .expect("flush of the bench's own batch");
        self.pa.alloc_constrained(npages, c).ok().map(|a| a.base)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        if npages == 1 {
            if self.batch.is_full() {
                self.batch
                    .return_half(&mut self.pa)
                    .expect("return of the bench's own batch");
            }
            return self.batch.free(self.pa.handed_out(), addr).is_ok();
        }
        self.pa.free(addr, npages).is_ok()
    }

    fn flush(&mut self) {
        self.batch
            .flush(&mut self.pa)
            .expect("flush of the bench's own batch");
        self.cache
            .flush(&mut self.pa)
            .expect("flush of the bench's own cache");
    }

    fn capacity_pages(&self) -> usize {
        self.pa.total_pages()
    }
}

/// Builds our allocator over `[0, bytes)` the way the kernel does: size the metadata from
/// the memory map, provide it, grow every region.
fn build_ours(bytes: u64, md: &mut HeapMetadata) -> Result<PageAlloc<'_>, String> {
    let layout =
        MetadataLayout::for_regions(&[AddrRange::new(0, bytes)]).map_err(|e| e.to_string())?;
    *md = HeapMetadata::new(&layout);
    let mut pa = PageAlloc::new(layout, md.metadata()).map_err(|e| e.to_string())?;
    pa.grow(0, bytes, Contents::Unknown)
        .map_err(|e| e.to_string())?;
    Ok(pa)
}

struct OursS;

impl Subject for OursS {
    const NAME: &'static str = "pagealloc";
    const KEY: &'static str = "ours";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut md = HeapMetadata::default();
        let pa = build_ours(bytes, &mut md)?;
        let init = clock.stop();
        Ok(v.visit(&mut Ours { pa }, init))
    }
}

struct OursCachedS;

impl Subject for OursCachedS {
    const NAME: &'static str = "pagealloc + page cache";
    const KEY: &'static str = "cached";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let clock = InitClock::start();
        let mut md = HeapMetadata::default();
        let pa = build_ours(bytes, &mut md)?;
        let init = clock.stop();
        Ok(v.visit(
            &mut OursCached {
                pa,
                cache: PageCache::default(),
                batch: FreeBatch::new(),
            },
            init,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Checking.

/// One bit per page: set = handed out.
struct Shadow {
    bits: Vec<u64>,
    npages: usize,
}

impl Shadow {
    fn new(npages: usize) -> Shadow {
        Shadow {
            bits: vec![0; npages.div_ceil(64)],
            npages,
        }
    }

    /// Calls `f(word index, mask)` for the words of `[i, i + n)`.
    fn words(i: usize, n: usize, mut f: impl FnMut(usize, u64) -> bool) -> bool {
        let (mut i, end) = (i, i + n);
        while i < end {
            let b = i % 64;
            let k = (64 - b).min(end - i);
            let mask = if k == 64 { !0 } else { ((1u64 << k) - 1) << b };
            if !f(i / 64, mask) {
                return false;
            }
            i += k;
        }
        true
    }

    fn take(&mut self, addr: u64, npages: usize, align_pages: usize) -> Result<(), String> {
        if !addr.is_multiple_of(PAGE) {
            return Err(format!(
                "alloc of {npages} pages returned unaligned address {addr:#x}"
            ));
        }
        let i = (addr / PAGE) as usize;
        if i + npages > self.npages {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} runs past the memory"
            ));
        }
        if !i.is_multiple_of(align_pages) {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} is not {align_pages}-page aligned"
            ));
        }
        let bits = &self.bits;
        if !Shadow::words(i, npages, |w, m| bits[w] & m == 0) {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} overlaps a live allocation"
            ));
        }
        let bits = &mut self.bits;
        Shadow::words(i, npages, |w, m| {
            bits[w] |= m;
            true
        });
        Ok(())
    }

    fn give(&mut self, addr: u64, npages: usize) -> Result<(), String> {
        let i = (addr / PAGE) as usize;
        let bits = &self.bits;
        if i + npages > self.npages || !Shadow::words(i, npages, |w, m| bits[w] & m == m) {
            return Err(format!(
                "bench bug: free of {npages} pages at {addr:#x} that are not live"
            ));
        }
        let bits = &mut self.bits;
        Shadow::words(i, npages, |w, m| {
            bits[w] &= !m;
            true
        });
        Ok(())
    }
}

/// A peer whose every result is checked against a shadow bitmap.
struct Checked<'a, P: Peer> {
    p: &'a mut P,
    shadow: &'a mut Shadow,
    err: &'a mut Option<String>,
}

impl<P: Peer> Checked<'_, P> {
    fn fail(&mut self, e: String) {
        if self.err.is_none() {
            *self.err = Some(e);
        }
    }

    fn took(&mut self, r: Option<u64>, npages: usize, align_pages: usize) -> Option<u64> {
        if let Some(a) = r {
            let n = self.p.consumed_pages(npages);
            if let Err(e) = self.shadow.take(a, n, align_pages.max(1)) {
                self.fail(e);
            }
        }
        r
    }
}

impl<P: Peer> Peer for Checked<'_, P> {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        let r = self.p.alloc(npages);
        self.took(r, npages, 1)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        let r = self.p.alloc_aligned(npages, align_pages);
        self.took(r, npages, align_pages)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        let n = self.p.consumed_pages(npages);
        if let Err(e) = self.shadow.give(addr, n) {
            self.fail(e);
            return false;
        }
        let ok = self.p.free(addr, npages);
        if !ok {
            self.fail(format!("free of {npages} pages at {addr:#x} refused"));
        }
        ok
    }

    fn flush(&mut self) {
        self.p.flush();
    }

    fn consumed_pages(&self, npages: usize) -> usize {
        self.p.consumed_pages(npages)
    }

    fn capacity_pages(&self) -> usize {
        self.p.capacity_pages()
    }
}

// ---------------------------------------------------------------------------------------
// Timing.

#[derive(Clone, Copy)]
struct Timed {
    done: usize,
    planned: usize,
    ns: f64,
}

impl Timed {
    fn ns_per_op(&self) -> f64 {
        self.ns / self.done.max(1) as f64
    }

    fn partial(&self) -> bool {
        self.done < self.planned
    }
}

/// Runs `op(i)` for `i` in `0..n` until it returns false or `deadline` passes.
#[inline(always)]
fn timed_loop(n: usize, deadline: Instant, mut op: impl FnMut(usize) -> bool) -> Timed {
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
// `timed_loop` directly and is not counted.
#[inline(never)]
fn measure_0(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    timed_loop(n, deadline, op)
}

#[inline(never)]
fn measure_1(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    timed_loop(n, deadline, op)
}

#[inline(never)]
fn measure_2(n: usize, deadline: Instant, op: impl FnMut(usize) -> bool) -> Timed {
    timed_loop(n, deadline, op)
}

fn median(mut v: Vec<f64>) -> f64 {
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

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Ns,
    Count,
    Ratio,
    Ms,
    KibPerGib,
}

#[derive(Clone)]
struct Metric {
    name: &'static str,
    unit: Unit,
    value: f64,
    /// Extrapolated from part of the operations: (done, planned).
    partial: Option<(usize, usize)>,
}

enum Cell {
    /// Not applicable, with the reason.
    Na(String),
    /// Did not finish its set-up within the budget.
    Dnf(String),
    Done {
        metrics: Vec<Metric>,
        notes: Vec<String>,
        peak_heap: usize,
    },
    Failed(String),
}

/// Per-cell limits and counts.
#[derive(Clone)]
struct Cfg {
    runs: usize,
    budget: Duration,
    /// The most pages a fill or a set-up hands out one at a time.
    window_pages: usize,
    churn_pairs: usize,
    mixed_ops: usize,
    frag_ops: usize,
    doomed_ops: usize,
    seed: u64,
    /// Print machine-readable op counts (the `--instructions` child).
    child: bool,
}

/// Shared state of one cell's workload.
struct Ctx<'c> {
    cfg: &'c Cfg,
    bytes: u64,
    caps: Caps,
    t0: Instant,
}

impl Ctx<'_> {
    fn npages(&self) -> usize {
        pages_of(self.bytes)
    }

    fn window(&self) -> usize {
        self.npages().min(self.cfg.window_pages)
    }

    /// The end of the set-up: two budgets after the cell started.
    fn setup_deadline(&self) -> Instant {
        self.t0 + self.cfg.budget * 2
    }

    /// `budgets` budgets from now.
    fn after(&self, budgets: f64) -> Instant {
        Instant::now() + self.cfg.budget.mul_f64(budgets)
    }

    fn rng(&self, salt: u64) -> Rng {
        Rng::new(self.cfg.seed ^ self.bytes.rotate_left(17) ^ salt)
    }

    fn dnf(&self, what: &str, t: &Timed) -> Cell {
        Cell::Dnf(format!(
            "{what}: {} of {} ops in {:.0} s",
            t.done,
            t.planned,
            self.t0.elapsed().as_secs_f64()
        ))
    }
}

/// Collects metrics over runs and turns them into medians.
struct Runs {
    names: Vec<(&'static str, Unit)>,
    samples: Vec<Vec<f64>>,
    partial: Vec<Option<(usize, usize)>>,
}

impl Runs {
    /// Allocates all it needs up front, so it does not show in a peer's heap peak.
    fn new(names: &[(&'static str, Unit)], runs: usize) -> Runs {
        Runs {
            names: names.to_vec(),
            samples: names.iter().map(|_| Vec::with_capacity(runs)).collect(),
            partial: vec![None; names.len()],
        }
    }

    fn timed(&mut self, slot: usize, t: &Timed) {
        self.samples[slot].push(t.ns_per_op());
        if t.partial() {
            self.partial[slot] = Some((t.done, t.planned));
        }
    }

    fn value(&mut self, slot: usize, v: f64) {
        self.samples[slot].push(v);
    }

    fn metrics(self) -> Vec<Metric> {
        self.names
            .iter()
            .zip(self.samples)
            .zip(self.partial)
            .filter(|(((_, _), s), _)| !s.is_empty())
            .map(|(((name, unit), s), partial)| Metric {
                name,
                unit: *unit,
                value: median(s),
                partial,
            })
            .collect()
    }
}

/// Prints op counts for the `--instructions` parent: one line per metric slot.
fn report_ops(cfg: &Cfg, slot: usize, t: &Timed) {
    if cfg.child {
        println!("OPS slot={slot} ops={}", t.done);
    }
}

/// Frees everything in `live`, then checks that a drain gets every page back: first as
/// 2 MiB requests, then single pages. Returns a note if the check ran out of time.
fn teardown_and_drain<P: Peer>(
    ctx: &Ctx<'_>,
    p: &mut P,
    live: &[(u64, usize)],
    err: &mut Option<String>,
) -> Option<String> {
    // Rebuild the shadow from what the bench believes is live: any overlap is a bug that
    // the timed runs (which ran unchecked) introduced.
    let mut shadow = Shadow::new(ctx.npages());
    for &(a, n) in live {
        if let Err(e) = shadow.take(a, p.consumed_pages(n), 1) {
            err.get_or_insert(format!("after the timed runs: {e}"));
            return None;
        }
    }
    let mut c = Checked {
        p,
        shadow: &mut shadow,
        err,
    };
    let deadline = ctx.after(2.0);
    let t = timed_loop(live.len(), deadline, |i| {
        c.free(live[i].0, live[i].1);
        true
    });
    if t.partial() {
        return Some("leak check skipped: teardown ran out of time".into());
    }
    c.flush();
    let expect = c.capacity_pages();
    let mut got: Vec<(u64, usize)> = Vec::with_capacity(expect / HUGE_PAGES + 1024);
    let mut pages = 0;
    if ctx.caps.multi {
        let t = timed_loop(usize::MAX, deadline, |_| match c.alloc(HUGE_PAGES) {
            Some(a) => {
                got.push((a, HUGE_PAGES));
                true
            }
            None => false,
        });
        if Instant::now() >= deadline {
            return Some("leak check skipped: drain ran out of time".into());
        }
        pages += t.done * HUGE_PAGES;
    }
    let t = timed_loop(usize::MAX, deadline, |_| match c.alloc(1) {
        Some(a) => {
            got.push((a, 1));
            true
        }
        None => false,
    });
    if Instant::now() >= deadline {
        return Some("leak check skipped: drain ran out of time".into());
    }
    pages += t.done;
    if pages != expect {
        c.fail(format!(
            "leak: after freeing everything only {pages} of {expect} pages could be allocated"
        ));
    }
    for &(a, n) in &got {
        c.free(a, n);
    }
    c.flush();
    None
}

fn finish(
    err: Option<String>,
    metrics: Vec<Metric>,
    mut notes: Vec<String>,
    leak_note: Option<String>,
    peak_heap: usize,
) -> Cell {
    if let Some(e) = err {
        return Cell::Failed(e);
    }
    notes.extend(leak_note);
    Cell::Done {
        metrics,
        notes,
        peak_heap,
    }
}

// ---------------------------------------------------------------------------------------
// Workloads.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Workload {
    Fill,
    Churn,
    Mixed,
    Huge,
    Fragmented,
    Init,
}

const WORKLOADS: [Workload; 6] = [
    Workload::Fill,
    Workload::Churn,
    Workload::Mixed,
    Workload::Huge,
    Workload::Fragmented,
    Workload::Init,
];

impl Workload {
    fn key(self) -> &'static str {
        match self {
            Workload::Fill => "fill",
            Workload::Churn => "churn",
            Workload::Mixed => "mixed",
            Workload::Huge => "huge",
            Workload::Fragmented => "fragmented",
            Workload::Init => "init",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Workload::Fill => {
                "1. fill: allocate every page one at a time, then free them all in order"
            }
            Workload::Churn => "2. churn: random 1-page free + alloc at 50% occupancy",
            Workload::Mixed => "3. mixed: random exact sizes 1..=512 pages at 50-80% occupancy",
            Workload::Huge => "4. huge: 2 MiB-aligned 512-page allocations until full, then free",
            Workload::Fragmented => "5. fragmented: every other page used",
            Workload::Init => "6. init: take over the whole size",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Workload::Fill => "a = ns per alloc, f = ns per free",
            Workload::Churn => "ns per pair (free a random live page, allocate one)",
            Workload::Mixed => {
                "ns per pair; fail = failed allocs per 1000 pairs; c/r = pages consumed / pages requested"
            }
            Workload::Huge => {
                "a = ns per 2 MiB alloc, d = ns per doomed 2 MiB request when full, f = ns per free"
            }
            Workload::Fragmented => {
                "d = ns per doomed 2-page request, h = ns per single page from the holes, f = ns per free back into the heap"
            }
            Workload::Init => {
                "time to build and hand over all memory; metadata KiB per GiB after init; peak = most heap KiB per GiB it added during a workload"
            }
        }
    }

    fn needs(self, caps: Caps) -> Option<&'static str> {
        match self {
            Workload::Churn | Workload::Fragmented if !caps.free => Some("cannot free"),
            Workload::Mixed if !caps.free || !caps.multi => Some("single frames only, cannot free"),
            Workload::Huge if !caps.aligned || !caps.free => Some("single frames only"),
            _ => None,
        }
    }
}

/// Allocates single pages until `n` are live or the allocator is full.
fn alloc_singles<P: Peer>(p: &mut P, n: usize, deadline: Instant, out: &mut Vec<u64>) -> Timed {
    timed_loop(n, deadline, |_| match p.alloc(1) {
        Some(a) => {
            out.push(a);
            true
        }
        None => false,
    })
}

/// Fills what is left of memory: 2 MiB blocks, then single pages.
fn fill_background<P: Peer>(
    p: &mut P,
    multi: bool,
    deadline: Instant,
    out: &mut Vec<(u64, usize)>,
) -> bool {
    if multi {
        timed_loop(usize::MAX, deadline, |_| match p.alloc(HUGE_PAGES) {
            Some(a) => {
                out.push((a, HUGE_PAGES));
                true
            }
            None => false,
        });
    }
    timed_loop(usize::MAX, deadline, |_| match p.alloc(1) {
        Some(a) => {
            out.push((a, 1));
            true
        }
        None => false,
    });
    Instant::now() < deadline
}

struct FillW<'c>(Ctx<'c>);

impl Visitor for FillW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let w = ctx.window();
        let whole = w == ctx.npages();
        let mut addrs: Vec<u64> = Vec::with_capacity(w + 1);
        let mut shadow = Shadow::new(ctx.npages());
        let mut err = None;
        let mut runs = Runs::new(&[("a", Unit::Ns), ("f", Unit::Ns)], ctx.cfg.runs);
        let mut notes = Vec::new();
        if !whole {
            notes.push(format!(
                "the first {w} pages ({} GiB) only",
                w as u64 * PAGE / GIB
            ));
        }
        let base_heap = heap_peak_reset();

        // Checked pass; whatever part of the fill fits in the budget sets the op count.
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let t = alloc_singles(&mut c, w, ctx.setup_deadline(), &mut addrs);
        let k = t.done;
        let out_of_time = k < w && Instant::now() >= ctx.setup_deadline();
        if !out_of_time {
            let want = if whole { c.capacity_pages() } else { w };
            if k != want {
                c.fail(format!("fill handed out {k} pages, expected {want}"));
            }
        }
        if ctx.caps.free {
            for &a in &addrs {
                c.free(a, 1);
            }
        }
        if k == 0 {
            return ctx.dnf("checked fill", &t);
        }
        let partial = out_of_time;
        // An allocator that cannot free is rewound before each run. If its cost grows
        // with the pages handed out, it is timed in the middle of the fill, where the
        // cost is its mean over the whole fill.
        let rewind = (!ctx.caps.free).then(|| if partial { w / 2 - k / 2 } else { 0 });
        if rewind.is_some() && !p.fast_forward(0) {
            return ctx.dnf("checked fill", &t);
        }

        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            addrs.clear();
            if let Some(m) = rewind {
                p.fast_forward(m);
            }
            let ta = measure_0(k, run_cut, |_| match p.alloc(1) {
                Some(a) => {
                    addrs.push(a);
                    true
                }
                None => false,
            });
            runs.timed(
                0,
                &Timed {
                    planned: if partial { w } else { ta.planned },
                    ..ta
                },
            );
            report_ops(ctx.cfg, 0, &ta);
            if ctx.caps.free {
                let tf = measure_1(addrs.len(), ctx.after(1.0), |i| p.free(addrs[i], 1));
                runs.timed(
                    1,
                    &Timed {
                        planned: if partial { w } else { tf.planned },
                        ..tf
                    },
                );
                report_ops(ctx.cfg, 1, &tf);
                if tf.partial() {
                    // Out of time: the rest is freed untimed and no further run is made.
                    free_rest(p, &addrs[tf.done..]);
                    break;
                }
            }
        }
        let peak = heap_peak() - base_heap;
        if let Some(m) = rewind.filter(|_| partial) {
            notes.push(format!(
                "timed on {k} allocations from page {m}, the middle of the fill"
            ));
        }
        let leak = if ctx.caps.free {
            teardown_and_drain(ctx, p, &[], &mut err)
        } else {
            None
        };
        finish(err, runs.metrics(), notes, leak, peak)
    }
}

/// Frees single pages without timing them.
fn free_rest<P: Peer>(p: &mut P, addrs: &[u64]) {
    for &a in addrs {
        p.free(a, 1);
    }
}

/// Memory in the state the churn and fragmented workloads start from: the window handed
/// out one page at a time, and everything above it as 2 MiB blocks.
struct Filled {
    singles: Vec<u64>,
    background: Vec<(u64, usize)>,
}

fn fill_all<P: Peer>(ctx: &Ctx<'_>, p: &mut P) -> Result<Filled, Cell> {
    let w = ctx.window();
    let mut singles = Vec::with_capacity(w);
    let bg_cap = (ctx.npages() - w) / HUGE_PAGES + 2 * HUGE_PAGES;
    let mut background = Vec::with_capacity(bg_cap);
    let t = alloc_singles(p, w, ctx.setup_deadline(), &mut singles);
    if t.partial() && Instant::now() >= ctx.setup_deadline() {
        return Err(ctx.dnf("set-up (fill)", &t));
    }
    if !fill_background(p, ctx.caps.multi, ctx.setup_deadline(), &mut background) {
        return Err(Cell::Dnf("set-up (background fill)".into()));
    }
    Ok(Filled {
        singles,
        background,
    })
}

struct ChurnW<'c>(Ctx<'c>);

impl Visitor for ChurnW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let mut shadow = Shadow::new(ctx.npages());
        let mut err = None;
        let mut notes = Vec::new();
        if ctx.window() < ctx.npages() {
            notes.push(format!(
                "50% of the lowest {} GiB, the rest allocated as 2 MiB blocks",
                ctx.window() as u64 * PAGE / GIB
            ));
        }
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let Filled {
            singles: mut live,
            background,
        } = match fill_all(ctx, &mut c) {
            Ok(f) => f,
            Err(cell) => return cell,
        };
        // A random half of the singles is freed: 50% occupancy, holes everywhere.
        let mut rng = ctx.rng(1);
        let t = timed_loop(live.len() / 2, ctx.setup_deadline(), |_| {
            let a = live.swap_remove(rng.below(live.len()));
            c.free(a, 1)
        });
        if t.partial() {
            return ctx.dnf("set-up (free half)", &t);
        }
        let mut runs = Runs::new(&[("", Unit::Ns)], ctx.cfg.runs);
        let base_heap = heap_peak_reset();
        let pairs = ctx.cfg.churn_pairs;
        let mut failures = 0;
        let mut rng = ctx.rng(2);
        let t = timed_loop(pairs, ctx.after(0.5), |_| {
            churn_pair(&mut c, &mut live, &mut rng, &mut failures);
            true
        });
        if t.done == 0 {
            return ctx.dnf("checked churn", &t);
        }
        let k = t.done;

        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            let mut rng = ctx.rng(3 + run as u64);
            let t = measure_0(k, run_cut, |_| {
                churn_pair(p, &mut live, &mut rng, &mut failures);
                true
            });
            runs.timed(
                0,
                &Timed {
                    planned: pairs,
                    ..t
                },
            );
            report_ops(ctx.cfg, 0, &t);
        }
        if failures > 0 {
            err.get_or_insert(format!(
                "{failures} single-page allocations failed at 50% occupancy"
            ));
        }
        let peak = heap_peak() - base_heap;
        let mut all: Vec<(u64, usize)> = live.iter().map(|&a| (a, 1)).collect();
        all.extend(background);
        let leak = teardown_and_drain(ctx, p, &all, &mut err);
        finish(err, runs.metrics(), notes, leak, peak)
    }
}

/// Frees a random live page and allocates one in its place.
#[inline(always)]
fn churn_pair<P: Peer>(p: &mut P, live: &mut Vec<u64>, rng: &mut Rng, failures: &mut usize) {
    let j = rng.below(live.len());
    p.free(live[j], 1);
    match p.alloc(1) {
        Some(b) => live[j] = b,
        None => {
            *failures += 1;
            live.swap_remove(j);
        }
    }
}

struct MixedW<'c>(Ctx<'c>);

/// One step of the mixed workload; the same three random words are drawn every step, so
/// the sequence stays the same for every allocator.
#[derive(Clone, Copy)]
struct MixedStep {
    coin: u64,
    npages: usize,
    pick: u64,
}

impl MixedStep {
    fn draw(rng: &mut Rng) -> MixedStep {
        let coin = rng.next();
        let npages = 1 + rng.below(HUGE_PAGES);
        let pick = rng.next();
        MixedStep { coin, npages, pick }
    }
}

struct MixedState {
    live: Vec<(u64, usize)>,
    requested: usize,
    failures: usize,
    npages: usize,
}

impl MixedState {
    #[inline(always)]
    fn step<P: Peer>(&mut self, p: &mut P, s: MixedStep) {
        let occ = self.requested as f64 / self.npages as f64;
        let alloc = self.live.is_empty() || occ < 0.5 || (occ < 0.8 && s.coin & 1 == 0);
        if alloc {
            match p.alloc(s.npages) {
                Some(a) => {
                    self.live.push((a, s.npages));
                    self.requested += s.npages;
                }
                None => self.failures += 1,
            }
        } else {
            let (a, n) = self.live.swap_remove(scale(s.pick, self.live.len()));
            p.free(a, n);
            self.requested -= n;
        }
    }
}

impl Visitor for MixedW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let n = ctx.npages();
        let mut shadow = Shadow::new(n);
        let mut err = None;
        let mut st = MixedState {
            live: Vec::with_capacity(n / 128 + 4096),
            requested: 0,
            failures: 0,
            npages: n,
        };
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        // Set-up: random sizes up to 65% occupancy.
        let mut rng = ctx.rng(10);
        let t = timed_loop(usize::MAX, ctx.setup_deadline(), |_| {
            let npages = 1 + rng.below(HUGE_PAGES);
            match c.alloc(npages) {
                Some(a) => {
                    st.live.push((a, npages));
                    st.requested += npages;
                }
                None => st.failures += 1,
            }
            st.requested * 100 < n * 65 && st.failures < 1000
        });
        if Instant::now() >= ctx.setup_deadline() {
            return ctx.dnf(
                "set-up (65% occupancy)",
                &Timed {
                    planned: n * 65 / 100 / 256,
                    ..t
                },
            );
        }
        let ops = ctx.cfg.mixed_ops;
        let mut steps: Vec<MixedStep> = Vec::with_capacity(ops);
        let mut runs = Runs::new(
            &[("", Unit::Ns), ("fail", Unit::Count), ("c/r", Unit::Ratio)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();
        let mut rng = ctx.rng(11);
        st.failures = 0;
        let t = timed_loop(ops, ctx.after(0.5), |_| {
            st.step(&mut c, MixedStep::draw(&mut rng));
            true
        });
        if t.done < 2 {
            return ctx.dnf("checked mixed", &t);
        }
        let k = t.done;
        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            let mut rng = ctx.rng(12 + run as u64);
            st.failures = 0;
            // The draws are made before the timed loop, so the random numbers are not timed.
            steps.clear();
            steps.extend((0..k).map(|_| MixedStep::draw(&mut rng)));
            let t = measure_0(k, run_cut, |i| {
                st.step(p, steps[i]);
                true
            });
            // Two ops make a pair.
            let t = Timed {
                done: t.done / 2,
                planned: ops / 2,
                ns: t.ns,
            };
            runs.timed(0, &t);
            report_ops(ctx.cfg, 0, &t);
            runs.value(1, st.failures as f64 * 1000.0 / t.done.max(1) as f64);
            let req: usize = st.live.iter().map(|&(_, n)| n).sum();
            let cons: usize = st.live.iter().map(|&(_, n)| p.consumed_pages(n)).sum();
            runs.value(2, cons as f64 / req.max(1) as f64);
        }
        let peak = heap_peak() - base_heap;
        let leak = teardown_and_drain(ctx, p, &st.live, &mut err);
        finish(err, runs.metrics(), Vec::new(), leak, peak)
    }
}

struct HugeW<'c>(Ctx<'c>);

impl Visitor for HugeW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let n = ctx.npages();
        let mut shadow = Shadow::new(n);
        let mut err = None;
        let mut live: Vec<u64> = Vec::with_capacity(n / HUGE_PAGES + 1);
        let mut runs = Runs::new(
            &[("a", Unit::Ns), ("d", Unit::Ns), ("f", Unit::Ns)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let ta = timed_loop(usize::MAX, ctx.setup_deadline(), |_| {
            match c.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                Some(a) => {
                    live.push(a);
                    true
                }
                None => false,
            }
        });
        if Instant::now() >= ctx.setup_deadline() {
            return ctx.dnf(
                "checked fill with 2 MiB frames",
                &Timed {
                    planned: n / HUGE_PAGES,
                    ..ta
                },
            );
        }
        let blocks = live.len();
        let want = c.capacity_pages() / HUGE_PAGES;
        if blocks + 1 < want {
            c.fail(format!(
                "only {blocks} 2 MiB frames of {want} could be allocated"
            ));
        }
        let td = timed_loop(ctx.cfg.doomed_ops, ctx.after(0.5), |_| {
            if let Some(a) = c.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                live.push(a);
            }
            true
        });
        if live.len() > blocks {
            c.fail("a 2 MiB request succeeded after the fill had failed".into());
        }
        let k_doomed = td.done.max(1);
        for &a in &live {
            c.free(a, HUGE_PAGES);
        }
        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            live.clear();
            let t = measure_0(usize::MAX, run_cut, |_| {
                match p.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                    Some(a) => {
                        live.push(a);
                        true
                    }
                    None => false,
                }
            });
            runs.timed(
                0,
                &Timed {
                    planned: t.done,
                    ..t
                },
            );
            report_ops(ctx.cfg, 0, &t);
            let t = measure_1(k_doomed, run_cut, |_| {
                p.alloc_aligned(HUGE_PAGES, HUGE_PAGES).is_none()
            });
            runs.timed(
                1,
                &Timed {
                    planned: ctx.cfg.doomed_ops,
                    ..t
                },
            );
            report_ops(ctx.cfg, 1, &t);
            let t = measure_2(live.len(), ctx.after(1.0), |i| p.free(live[i], HUGE_PAGES));
            runs.timed(2, &t);
            report_ops(ctx.cfg, 2, &t);
            if t.partial() {
                for &a in &live[t.done..] {
                    p.free(a, HUGE_PAGES);
                }
                break;
            }
        }
        let peak = heap_peak() - base_heap;
        live.clear();
        let leak = teardown_and_drain(ctx, p, &[], &mut err);
        finish(err, runs.metrics(), Vec::new(), leak, peak)
    }
}

struct FragW<'c>(Ctx<'c>);

impl Visitor for FragW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let mut shadow = Shadow::new(ctx.npages());
        let mut err = None;
        let mut notes = Vec::new();
        if ctx.window() < ctx.npages() {
            notes.push(format!(
                "pattern over the lowest {} GiB, the rest allocated as 2 MiB blocks",
                ctx.window() as u64 * PAGE / GIB
            ));
        }
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let Filled {
            singles: mut used,
            background,
        } = match fill_all(ctx, &mut c) {
            Ok(f) => f,
            Err(cell) => return cell,
        };
        // Free every other page in address order.
        used.sort_unstable();
        let odd: Vec<u64> = used.iter().skip(1).step_by(2).copied().collect();
        let t = timed_loop(odd.len(), ctx.setup_deadline(), |i| c.free(odd[i], 1));
        if t.partial() {
            return ctx.dnf("set-up (free every other page)", &t);
        }
        used = used.iter().step_by(2).copied().collect();
        drop(odd);
        let holes_n = ctx.cfg.frag_ops.min(used.len());
        let mut holes: Vec<u64> = Vec::with_capacity(holes_n);
        let mut order: Vec<usize> = (0..holes_n).collect();
        let mut runs = Runs::new(
            &[("d", Unit::Ns), ("h", Unit::Ns), ("f", Unit::Ns)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();

        // Checked pass.
        let mut doomed_ok = 0;
        let td = timed_loop(ctx.cfg.doomed_ops, ctx.after(0.5), |_| {
            if let Some(a) = c.alloc(2) {
                doomed_ok += 1;
                c.free(a, 2);
            }
            true
        });
        if doomed_ok > 0 {
            c.fail(format!(
                "{doomed_ok} 2-page requests succeeded in a heap without 2 free pages in a row"
            ));
        }
        let holes_deadline = ctx.after(0.5);
        let th = alloc_singles(&mut c, holes_n, holes_deadline, &mut holes);
        if th.done < holes_n && Instant::now() < holes_deadline {
            c.fail(format!(
                "only {} of {holes_n} holes could be allocated",
                th.done
            ));
        }
        let mut rng = ctx.rng(20);
        shuffle(&mut order[..holes.len()], &mut rng);
        for &i in &order[..holes.len()] {
            c.free(holes[i], 1);
        }
        c.flush();
        if td.done == 0 || th.done == 0 {
            return ctx.dnf("checked pass", &td);
        }
        let (kd, kh) = (td.done, th.done);

        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            let t = measure_0(kd, run_cut, |_| p.alloc(2).is_none());
            runs.timed(
                0,
                &Timed {
                    planned: ctx.cfg.doomed_ops,
                    ..t
                },
            );
            report_ops(ctx.cfg, 0, &t);
            holes.clear();
            let t = measure_1(kh, run_cut, |_| match p.alloc(1) {
                Some(a) => {
                    holes.push(a);
                    true
                }
                None => false,
            });
            runs.timed(
                1,
                &Timed {
                    planned: holes_n,
                    ..t
                },
            );
            report_ops(ctx.cfg, 1, &t);
            let mut rng = ctx.rng(20);
            shuffle(&mut order[..holes.len()], &mut rng);
            let t = measure_2(holes.len(), ctx.after(1.0), |i| p.free(holes[order[i]], 1));
            runs.timed(
                2,
                &Timed {
                    planned: holes_n,
                    ..t
                },
            );
            report_ops(ctx.cfg, 2, &t);
            p.flush();
            if t.partial() {
                for &i in &order[t.done..holes.len()] {
                    p.free(holes[i], 1);
                }
                break;
            }
        }
        let peak = heap_peak() - base_heap;
        let mut all: Vec<(u64, usize)> = used.iter().map(|&a| (a, 1)).collect();
        all.extend(background);
        let leak = teardown_and_drain(ctx, p, &all, &mut err);
        finish(err, runs.metrics(), notes, leak, peak)
    }
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

struct InitW;

impl Visitor for InitW {
    type Out = InitStats;

    fn visit<P: Peer>(self, _: &mut P, init: InitStats) -> InitStats {
        init
    }
}

// ---------------------------------------------------------------------------------------
// Driver.

/// One row of the tables.
struct Row {
    name: &'static str,
    key: &'static str,
    caps: Caps,
    run: fn(Workload, &Cfg, u64) -> Cell,
}

fn row<S: Subject>() -> Row {
    Row {
        name: S::NAME,
        key: S::KEY,
        caps: S::CAPS,
        run: run_cell::<S>,
    }
}

fn run_cell<S: Subject>(w: Workload, cfg: &Cfg, bytes: u64) -> Cell {
    if let Some(why) = w.needs(S::CAPS) {
        return Cell::Na(why.into());
    }
    let ctx = Ctx {
        cfg,
        bytes,
        caps: S::CAPS,
        t0: Instant::now(),
    };
    let out = match w {
        Workload::Fill => S::with(bytes, FillW(ctx)),
        Workload::Churn => S::with(bytes, ChurnW(ctx)),
        Workload::Mixed => S::with(bytes, MixedW(ctx)),
        Workload::Huge => S::with(bytes, HugeW(ctx)),
        Workload::Fragmented => S::with(bytes, FragW(ctx)),
        Workload::Init => return run_init::<S>(cfg, bytes),
    };
    out.unwrap_or_else(Cell::Na)
}

fn run_init<S: Subject>(cfg: &Cfg, bytes: u64) -> Cell {
    let t0 = Instant::now();
    let (mut ms, mut heap) = (Vec::new(), 0);
    for run in 0..cfg.runs.max(3) {
        if run > 0 && t0.elapsed() >= cfg.budget {
            break;
        }
        match S::with(bytes, InitW) {
            Ok(s) => {
                ms.push(s.ns / 1e6);
                heap = s.heap_bytes;
            }
            Err(e) => return Cell::Na(e),
        }
    }
    let gib = bytes as f64 / GIB as f64;
    let metrics = vec![
        Metric {
            name: "",
            unit: Unit::Ms,
            value: median(ms),
            partial: None,
        },
        Metric {
            name: "",
            unit: Unit::KibPerGib,
            value: heap as f64 / 1024.0 / gib,
            partial: None,
        },
    ];
    Cell::Done {
        metrics,
        notes: Vec::new(),
        peak_heap: 0,
    }
}

fn rows() -> Vec<Row> {
    vec![
        row::<TutorialS>(),
        row::<FirstFitS>(),
        row::<BitmapS>(),
        row::<BuddyS>(),
        row::<FreeListS>(),
        row::<FrameAllocS>(),
        row::<OursS>(),
        row::<OursCachedS>(),
    ]
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 1000.0 {
        format!("{ns:.0}")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.1}s", ns / 1e9)
    }
}

fn fmt_metric(m: &Metric) -> String {
    let v = match m.unit {
        Unit::Ns => fmt_ns(m.value),
        Unit::Count => format!("{:.0}", m.value),
        Unit::Ratio => format!("{:.2}", m.value),
        Unit::Ms => {
            let ns = m.value * 1e6;
            if ns < 1000.0 {
                format!("{ns:.0}ns")
            } else {
                fmt_ns(ns)
            }
        }
        Unit::KibPerGib => format!("{:.1}K", m.value),
    };
    let approx = if m.partial.is_some() { "~" } else { "" };
    if m.name.is_empty() {
        format!("{approx}{v}")
    } else {
        format!("{} {approx}{v}", m.name)
    }
}

fn fmt_ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 40 && bytes.is_multiple_of(1 << 40) {
        format!("{} TiB", bytes >> 40)
    } else if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .to_ascii_uppercase()
        .as_str()
    {
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("bad size unit in {s:?} (use M, G or T)")),
    };
    let bytes = n << shift;
    if bytes == 0 || !bytes.is_multiple_of(2 << 20) {
        return Err(format!("size {s:?} must be a non-zero multiple of 2 MiB"));
    }
    Ok(bytes)
}

struct Opts {
    cfg: Cfg,
    sizes: Vec<u64>,
    only: Vec<Workload>,
    peers: Vec<String>,
    instructions: bool,
    micro: bool,
    threads: bool,
    sizes_given: bool,
}

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Opts {
        cfg: Cfg {
            runs: if quick { 3 } else { 5 },
            budget: Duration::from_secs_f64(if quick { 1.0 } else { 3.0 }),
            window_pages: 1 << 22,
            churn_pairs: if quick { 100_000 } else { 500_000 },
            mixed_ops: if quick { 40_000 } else { 200_000 },
            frag_ops: if quick { 4_000 } else { 20_000 },
            doomed_ops: if quick { 1_000 } else { 10_000 },
            seed: 0x5eed,
            child: false,
        },
        sizes: if quick {
            vec![256 << 20, 4 << 30]
        } else {
            vec![256 << 20, 4 << 30, 64 << 30, 1 << 40]
        },
        only: WORKLOADS.to_vec(),
        peers: Vec::new(),
        instructions: false,
        micro: false,
        threads: false,
        sizes_given: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" | "--bench" => {}
            "--sizes" => {
                o.sizes = val()?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<_, _>>()?;
                o.sizes_given = true;
            }
            "--only" => {
                let v = val()?;
                o.only = v
                    .split(',')
                    .map(|k| {
                        WORKLOADS
                            .iter()
                            .copied()
                            .find(|w| w.key() == k)
                            .ok_or(format!("unknown workload {k:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--peers" => o.peers = val()?.split(',').map(str::to_owned).collect(),
            "--runs" => o.cfg.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--budget" => {
                o.cfg.budget =
                    Duration::from_secs_f64(val()?.parse().map_err(|e| format!("--budget: {e}"))?)
            }
            "--seed" => o.cfg.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--window" => {
                o.cfg.window_pages = pages_of(parse_size(val()?)?);
            }
            "--instructions" => o.instructions = true,
            "--micro" => o.micro = true,
            "--threads" => o.threads = true,
            "--child" => o.cfg.child = true,
            "--help" | "-h" => {
                println!(
                    "options: --quick  --sizes 256M,4G,64G,1T  --only fill,churn,mixed,huge,fragmented,init\n\
                     \x20        --peers tutorial,firstfit,bitmap,buddy,freelist,framealloc,ours,cached\n\
                     \x20        --runs N  --budget SECONDS  --window SIZE  --seed N  --instructions  --micro\n\
                     \x20        --threads (1 and 2 threads; with --runs, --seed, --quick)"
                );
                std::process::exit(0);
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => {} // A filter string from `cargo bench NAME`: ignored.
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    };
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| opts.peers.is_empty() || opts.peers.iter().any(|p| p == r.key))
        .collect();
    if opts.instructions {
        instructions(&opts, &rows);
        return;
    }
    if opts.micro {
        micro(&opts.cfg);
        return;
    }
    if opts.threads {
        threads::run(&threads::Opts2 {
            runs: opts.cfg.runs,
            pairs: opts.cfg.churn_pairs * 2,
            seed: opts.cfg.seed,
        });
        return;
    }
    if opts.cfg.child {
        for &w in &opts.only {
            for r in &rows {
                for &s in &opts.sizes {
                    if let Cell::Failed(e) | Cell::Dnf(e) | Cell::Na(e) = (r.run)(w, &opts.cfg, s) {
                        println!("CELL {e}");
                    }
                }
            }
        }
        return;
    }
    header(&opts);
    let t0 = Instant::now();
    let mut peaks: BTreeMap<(usize, u64), (usize, Workload)> = BTreeMap::new();
    let mut init_table = None;
    for &w in &opts.only {
        let mut table: Vec<Vec<Cell>> = Vec::new();
        for (ri, r) in rows.iter().enumerate() {
            let mut cells = Vec::new();
            let mut gave_up: Option<u64> = None;
            for &s in &opts.sizes {
                let cell = match gave_up {
                    Some(prev) => {
                        Cell::Dnf(format!("skipped: did not finish at {}", size_name(prev)))
                    }
                    None => (r.run)(w, &opts.cfg, s),
                };
                if let Cell::Dnf(_) = cell {
                    gave_up.get_or_insert(s);
                }
                if let Cell::Done { peak_heap, .. } = cell {
                    let e = peaks.entry((ri, s)).or_insert((0, w));
                    if peak_heap > e.0 {
                        *e = (peak_heap, w);
                    }
                }
                cells.push(cell);
            }
            table.push(cells);
        }
        if w == Workload::Init {
            init_table = Some(table);
            continue;
        }
        print_table(w, &rows, &opts.sizes, &table);
    }
    if let Some(mut table) = init_table {
        // Append the peak heap growth seen during the other workloads.
        for (ri, cells) in table.iter_mut().enumerate() {
            for (si, cell) in cells.iter_mut().enumerate() {
                if let Cell::Done { metrics, .. } = cell {
                    let s = opts.sizes[si];
                    if let Some(&(peak, _)) = peaks.get(&(ri, s)) {
                        let gib = s as f64 / GIB as f64;
                        metrics.push(Metric {
                            name: "peak",
                            unit: Unit::KibPerGib,
                            value: peak as f64 / 1024.0 / gib,
                            partial: None,
                        });
                    }
                }
            }
        }
        print_table(Workload::Init, &rows, &opts.sizes, &table);
    }
    println!("total time: {:.0} s", t0.elapsed().as_secs_f64());
}

fn header(opts: &Opts) {
    let c = &opts.cfg;
    println!(
        "pagealloc comparison: {} run(s) per cell (median), budget {:.1} s per cell, seed {:#x}",
        c.runs,
        c.budget.as_secs_f64(),
        c.seed
    );
    println!(
        "window for one-page-at-a-time set-ups: {} GiB; churn {} pairs, mixed {} ops, fragmented {} holes and {} doomed requests per run",
        c.window_pages as u64 * PAGE / GIB,
        c.churn_pairs,
        c.mixed_ops,
        c.frag_ops,
        c.doomed_ops
    );
    println!(
        "'~' = extrapolated from the ops that fit in the budget; see the notes under each table"
    );
    println!();
}

fn print_table(w: Workload, rows: &[Row], sizes: &[u64], table: &[Vec<Cell>]) {
    let mut notes: Vec<String> = Vec::new();
    let mut note = |s: String| -> usize {
        if let Some(i) = notes.iter().position(|n| *n == s) {
            i + 1
        } else {
            notes.push(s);
            notes.len()
        }
    };
    let texts: Vec<Vec<String>> = table
        .iter()
        .zip(rows)
        .map(|(cells, r)| {
            cells
                .iter()
                .zip(sizes)
                .map(|(c, &s)| match c {
                    Cell::Na(why) => format!("n/a [{}]", note(format!("{}: {why}", r.name))),
                    Cell::Dnf(why) => format!(
                        "dnf [{}]",
                        note(format!(
                            "{} at {}: did not finish, {why}",
                            r.name,
                            size_name(s)
                        ))
                    ),
                    Cell::Failed(e) => format!(
                        "CHECK FAILED [{}]",
                        note(format!("{} at {}: {e}", r.name, size_name(s)))
                    ),
                    Cell::Done {
                        metrics, notes: cn, ..
                    } => {
                        let mut t = metrics.iter().map(fmt_metric).collect::<Vec<_>>().join(" ");
                        let mut refs = Vec::new();
                        for n in cn {
                            refs.push(note(format!("{} at {}: {n}", r.name, size_name(s))));
                        }
                        if let Some((done, planned)) = metrics.iter().find_map(|m| m.partial) {
                            refs.push(note(format!(
                                "{} at {}: '~' extrapolated from {done} of {planned} ops",
                                r.name,
                                size_name(s)
                            )));
                        }
                        if !refs.is_empty() {
                            let refs: Vec<String> = refs.iter().map(usize::to_string).collect();
                            write!(t, " [{}]", refs.join(",")).unwrap();
                        }
                        t
                    }
                })
                .collect()
        })
        .collect();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(9);
    let col_w: Vec<usize> = (0..sizes.len())
        .map(|si| {
            texts
                .iter()
                .map(|r| r[si].len())
                .max()
                .unwrap_or(0)
                .max(size_name(sizes[si]).len())
        })
        .collect();
    println!("## {}", w.title());
    println!("{}", w.legend());
    println!();
    let mut line = format!("| {:name_w$} |", "allocator");
    for (si, &s) in sizes.iter().enumerate() {
        write!(line, " {:>width$} |", size_name(s), width = col_w[si]).unwrap();
    }
    println!("{line}");
    let mut sep = format!("|{}|", "-".repeat(name_w + 2));
    for &cw in &col_w {
        write!(sep, "{}:|", "-".repeat(cw + 1)).unwrap();
    }
    println!("{sep}");
    for (r, t) in rows.iter().zip(&texts) {
        let mut line = format!("| {:name_w$} |", r.name);
        for (si, cell) in t.iter().enumerate() {
            write!(line, " {:>width$} |", cell, width = col_w[si]).unwrap();
        }
        println!("{line}");
    }
    println!();
    print_ratios(w, rows, sizes, table);
    for (i, n) in notes.iter().enumerate() {
        println!("[{}] {n}", i + 1);
    }
    println!();
}

/// Ours against the peers, per time metric: the fastest peer (lower is better) and, for
/// mixed and fragmented, the exact-size peers the targets name.
fn print_ratios(w: Workload, rows: &[Row], sizes: &[u64], table: &[Vec<Cell>]) {
    let ours: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key == "ours" || r.key == "cached")
        .map(|(i, _)| i)
        .collect();
    if ours.is_empty() || w == Workload::Init {
        return;
    }
    let time_metrics = |c: &Cell| -> Vec<(String, f64)> {
        match c {
            Cell::Done { metrics, .. } => metrics
                .iter()
                .filter(|m| m.unit == Unit::Ns || m.unit == Unit::Ms)
                .map(|m| (m.name.to_string(), m.value))
                .collect(),
            _ => Vec::new(),
        }
    };
    let peers: Vec<usize> = (0..rows.len()).filter(|i| !ours.contains(i)).collect();
    let exact_peers: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|&i| matches!(rows[i].key, "bitmap" | "freelist"))
        .collect();
    println!(
        "time of ours / time of the fastest peer (below 1x = faster than every peer); for mixed and fragmented also the speed-up over the exact-size peers (their time / ours):"
    );
    for &oi in &ours {
        let mut line = format!("  {:24}", rows[oi].name);
        for (si, &s) in sizes.iter().enumerate() {
            let mine = time_metrics(&table[oi][si]);
            if mine.is_empty() {
                write!(line, " | {}: -", size_name(s)).unwrap();
                continue;
            }
            let mut parts = Vec::new();
            for (name, v) in &mine {
                let best = peers
                    .iter()
                    .filter_map(|&pi| {
                        time_metrics(&table[pi][si])
                            .into_iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, pv)| (pv, pi))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let label = if name.is_empty() {
                    String::new()
                } else {
                    format!("{name} ")
                };
                match best {
                    Some((pv, pi)) => {
                        parts.push(format!("{label}{} of {}", fmt_ratio(v / pv), rows[pi].key))
                    }
                    None => parts.push(format!("{label}-")),
                }
                if matches!(w, Workload::Mixed | Workload::Fragmented) {
                    for &pi in &exact_peers {
                        let pv = time_metrics(&table[pi][si])
                            .into_iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, pv)| pv);
                        match (&table[pi][si], pv) {
                            (_, Some(pv)) => parts.push(format!(
                                "{} speed-up {}",
                                rows[pi].key,
                                fmt_ratio(pv / v)
                            )),
                            (Cell::Dnf(_), None) => parts.push(format!("{} dnf", rows[pi].key)),
                            _ => {}
                        }
                    }
                }
            }
            write!(line, " | {}: {}", size_name(s), parts.join(", ")).unwrap();
        }
        println!("{line}");
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Instruction counts: re-run each cell under callgrind and divide the instructions of
// each timed loop (`measure_N`, callees included) by its op count.

fn instructions(opts: &Opts, rows: &[Row]) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir();
    let sizes: Vec<u64> = if opts.sizes_given {
        opts.sizes.clone()
    } else {
        vec![256 << 20]
    };
    println!("instructions per op under callgrind (--runs 1, --quick op counts), timed loops only");
    for &w in &opts.only {
        if w == Workload::Init {
            continue;
        }
        println!();
        println!("## {}: instructions per op", w.title());
        for r in rows {
            for &s in &sizes {
                if w.needs(r.caps).is_some() {
                    continue;
                }
                let out_file = dir.join(format!(
                    "compare-callgrind-{}-{}-{}.out",
                    w.key(),
                    r.key,
                    s >> 20
                ));
                let budget = format!("{}", opts.cfg.budget.as_secs_f64() * 20.0);
                let size = format!("{}M", s >> 20);
                let child = std::process::Command::new("valgrind")
                    .args(["--tool=callgrind", "--dump-instr=no"])
                    .arg(format!("--callgrind-out-file={}", out_file.display()))
                    .arg(&exe)
                    .args([
                        "--child", "--quick", "--runs", "1", "--budget", &budget, "--sizes", &size,
                    ])
                    .args(["--only", w.key(), "--peers", r.key])
                    .output();
                let child = match child {
                    Ok(c) => c,
                    Err(e) => {
                        println!("cannot run valgrind: {e}");
                        return;
                    }
                };
                let stdout = String::from_utf8_lossy(&child.stdout);
                let mut ops = [0usize; 3];
                let mut cell_note = String::new();
                for l in stdout.lines() {
                    if let Some(rest) = l.strip_prefix("OPS ") {
                        let kv: BTreeMap<&str, usize> = rest
                            .split(' ')
                            .filter_map(|p| p.split_once('='))
                            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
                            .collect();
                        ops[kv["slot"]] += kv["ops"];
                    } else if let Some(rest) = l.strip_prefix("CELL ") {
                        cell_note = rest.to_string();
                    }
                }
                let annotate = std::process::Command::new("callgrind_annotate")
                    .args(["--inclusive=yes", "--threshold=100"])
                    .arg(&out_file)
                    .output();
                let text = annotate
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mut ir = [0u64; 3];
                for l in text.lines() {
                    for (slot, name) in ["measure_0", "measure_1", "measure_2"].iter().enumerate() {
                        if l.contains(&format!("compare::{name}")) {
                            let n: String = l
                                .trim_start()
                                .split(' ')
                                .next()
                                .unwrap_or("")
                                .chars()
                                .filter(char::is_ascii_digit)
                                .collect();
                            ir[slot] += n.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                let _ = std::fs::remove_file(&out_file);
                let labels: &[&str] = match w {
                    Workload::Fill => &["alloc", "free"],
                    Workload::Huge => &["alloc", "doomed", "free"],
                    Workload::Fragmented => &["doomed", "hole", "free"],
                    _ => &["pair"],
                };
                let mut parts = Vec::new();
                for (slot, label) in labels.iter().enumerate() {
                    if ops[slot] > 0 {
                        parts.push(format!("{label} {:.0}", ir[slot] as f64 / ops[slot] as f64));
                    }
                }
                if !cell_note.is_empty() {
                    parts.push(format!("({cell_note})"));
                }
                println!("  {:28} {:>8}: {}", r.name, size_name(s), parts.join(", "));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Micro-benchmarks of the bit loops, with the word patterns of Go's
// `BenchmarkPallocBitsSummarize` and `BenchmarkFindBitRange64`.

/// Word patterns: each fills a whole chunk bitmap (1 = allocated).
const MICRO_PATTERNS: [u64; 14] = [
    0,
    !0,
    0xaa,
    0xaaaa_aaaa_aaaa_aaaa,
    0x8000_0000_aaaa_aaaa,
    0xaaaa_aaaa_0000_0001,
    0xbbbb_bbbb_bbbb_bbbb,
    0x8000_0000_bbbb_bbbb,
    0xbbbb_bbbb_0000_0001,
    0xcccc_cccc_cccc_cccc,
    0x4444_4444_4444_4444,
    0x4040_4040_4040_4040,
    0x4000_4000_4000_4000,
    0x1000_4040_44cc_aaff,
];

/// Median ns per call of `f` over `runs` runs of `iters` calls.
fn micro_ns(runs: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    median(samples)
}

fn micro(cfg: &Cfg) {
    let runs = cfg.runs.max(3);
    let iters = 2_000_000;
    println!("## micro: PallocBits::summarize (ns per call; the chunk is 8 copies of the word)");
    println!();
    println!("| pattern            | summarize |");
    println!("|--------------------|----------:|");
    for &p in &MICRO_PATTERNS {
        let bits = PallocBits::from_words([p; 8]);
        let ns = micro_ns(runs, iters, || {
            black_box(black_box(&bits).summarize());
        });
        println!("| {p:#018x} | {ns:9.2} |");
    }
    println!();
    println!("## micro: find_bit_range64 (ns per call; the pattern is the free bits)");
    println!();
    println!("| pattern            |   n=2 |   n=8 |  n=32 |");
    println!("|--------------------|------:|------:|------:|");
    for &p in &MICRO_PATTERNS[..13] {
        let mut line = format!("| {p:#018x} |");
        for n in [2, 8, 32] {
            let ns = micro_ns(runs, iters, || {
                black_box(find_bit_range64(black_box(p), black_box(n)));
            });
            write!(line, " {ns:5.2} |").unwrap();
        }
        println!("{line}");
    }
    println!();
    let sums = [
        PallocSum::pack(3, 3, 300),
        PallocSum::pack(512, 512, 512),
        PallocSum::pack(0, 9, 17),
        PallocSum::EMPTY,
    ];
    let block: [PallocSum; 8] = core::array::from_fn(|i| sums[i % sums.len()]);
    let ns = micro_ns(runs, iters, || {
        black_box(merge_summaries(black_box(&block), 9));
    });
    println!("merge_summaries of one block of 8 leaf summaries: {ns:.2} ns per call");
}
