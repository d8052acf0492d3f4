//! The allocators under test, each behind the `Peer` trait, and how each is built.

use super::*;

// ---------------------------------------------------------------------------------------
// The allocators under test.

/// What an allocator can do; a workload that needs more prints "n/a" with the reason.
#[derive(Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) free: bool,
    /// Contiguous multi-page requests.
    pub(crate) multi: bool,
    /// Aligned requests (2 MiB frames).
    pub(crate) aligned: bool,
}

/// One allocator instance over `[0, size)`; addresses are byte addresses.
pub(crate) trait Peer {
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
pub(crate) struct InitStats {
    pub(crate) ns: f64,
    pub(crate) heap_bytes: usize,
}

/// Measures an allocator's init: the heap it adds from `start` to `stop`, and the time
/// spent inside [`InitClock::time`]. Metadata buffers come from [`zeroed_slice`] or
/// [`zeroed_box`] after `start` and outside `time`: counted as heap, not as time.
pub(crate) struct InitClock {
    pub(crate) heap0: usize,
    pub(crate) ns: f64,
}

impl InitClock {
    pub(crate) fn start() -> InitClock {
        InitClock {
            heap0: heap_live(),
            ns: 0.0,
        }
    }

    /// Runs and times `build` (the allocator's own work).
    pub(crate) fn time<T>(&mut self, build: impl FnOnce() -> T) -> T {
        let (t, ns) = measure_init(build);
        self.ns += ns;
        t
    }

    pub(crate) fn stop(self) -> InitStats {
        InitStats {
            ns: self.ns,
            heap_bytes: heap_live().saturating_sub(self.heap0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metadata memory: the same kind for every allocator whose metadata is one buffer of a
// size known up front (ours, bitmap-allocator, frame-alloc). It is a zeroed heap
// allocation (`alloc_zeroed`) with every 4 KiB page written once before the clock
// starts, so init is timed on memory that is zeroed and resident, as a kernel's metadata
// arrives (mapped, zeroed at boot), not on the first-touch page faults of fresh heap
// memory. Allocators that allocate as they go (buddy, free-list) and the first-fit model
// (whose bitmap the model crate allocates itself) get ordinary heap memory inside the clock.

/// `layout.size()` zeroed, resident bytes from the global allocator.
fn zeroed_resident(layout: Layout) -> *mut u8 {
    assert!(layout.size() > 0, "no metadata to allocate");
    // SAFETY: the size is non-zero.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    for off in (0..layout.size()).step_by(PAGE as usize) {
        // SAFETY: inside the allocation; writing the zero it already holds faults the
        // page in (a read would only map the shared zero page).
        unsafe { p.add(off).write_volatile(0) };
    }
    p
}

/// `n` zeroed, resident `T`s (see above).
///
/// # Safety
/// All-zero bytes must be a valid `T`.
pub(crate) unsafe fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    let layout = Layout::array::<T>(n).expect("metadata size");
    let p = zeroed_resident(layout).cast::<T>();
    // SAFETY: allocated by the global allocator with the layout of `[T; n]`, zeroed,
    // and zero is a valid `T` (the caller's promise).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) }
}

/// One zeroed, resident `T` on the heap (see above).
///
/// # Safety
/// All-zero bytes must be a valid `T`.
pub(crate) unsafe fn zeroed_box<T>() -> Box<T> {
    let p = zeroed_resident(Layout::new::<T>()).cast::<T>();
    // SAFETY: allocated by the global allocator with `T`'s layout, zeroed, and zero is
    // a valid `T` (the caller's promise).
    unsafe { Box::from_raw(p) }
}

/// Code that runs against any allocator (a workload).
pub(crate) trait Visitor {
    type Out;
    fn visit<P: Peer>(self, p: &mut P, init: InitStats) -> Self::Out;
}

/// A kind of allocator: its name, what it can do, and how to build one.
pub(crate) trait Subject {
    const NAME: &'static str;
    /// Short name for `--peers`.
    const KEY: &'static str;
    const CAPS: Caps;
    /// Builds one over `[0, bytes)` and runs `v` on it, or says why it cannot.
    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String>;
}

pub(crate) fn pages_of(bytes: u64) -> usize {
    (bytes / PAGE) as usize
}

// --- The tutorial allocator ("Writing an OS in Rust", Paging Implementation chapter):
// every call re-walks the boot memory map and takes its `next`-th usable frame.

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionKind {
    Usable,
    Reserved,
}

pub(crate) struct MemRegion {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) kind: RegionKind,
}

pub(crate) struct Tutorial {
    pub(crate) map: Vec<MemRegion>,
    pub(crate) next: usize,
    pub(crate) npages: usize,
}

impl Tutorial {
    pub(crate) fn usable_frames(&self) -> impl Iterator<Item = u64> + '_ {
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

pub(crate) struct TutorialS;

impl Subject for TutorialS {
    const NAME: &'static str = "tutorial (re-walk map)";
    const KEY: &'static str = "tutorial";
    const CAPS: Caps = Caps {
        free: false,
        multi: false,
        aligned: false,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        // A boot map as firmware reports it: the usable RAM plus reserved entries that
        // the walk has to skip.
        let mut p = clock.time(|| Tutorial {
            map: vec![
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
            ],
            next: 0,
            npages: pages_of(bytes),
        });
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- The linear first-fit bitmap: the property tests' model (`FirstFitBitmap`).

pub(crate) struct FirstFit {
    pub(crate) bm: FirstFitBitmap,
    pub(crate) npages: usize,
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

pub(crate) struct FirstFitS;

impl Subject for FirstFitS {
    const NAME: &'static str = "linear first-fit bitmap";
    const KEY: &'static str = "firstfit";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        let mut p = clock.time(|| {
            let mut bm = FirstFitBitmap::new(bytes);
            bm.add_free(0, pages_of(bytes));
            FirstFit {
                bm,
                npages: pages_of(bytes),
            }
        });
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- bitmap-allocator (rCore): a 16-ary segment tree of bitmaps of a fixed capacity.

pub(crate) struct Bitmap<T: BitAlloc> {
    pub(crate) ba: Box<T>,
    pub(crate) npages: usize,
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

pub(crate) struct BitmapS;

/// Builds the bitmap-allocator type `T` (one of the crate's fixed-capacity types).
pub(crate) fn with_bitmap<T: BitAlloc, V: Visitor>(npages: usize, v: V) -> Result<V::Out, String> {
    let mut clock = InitClock::start();
    // The larger types are tens of MiB and would overflow the stack if built there.
    // SAFETY: `T` is one of the crate's `BitAllocCascade16` types, which hold only
    // `u16`s; all zeros is a valid value (it is their `DEFAULT`: nothing free).
    let mut ba: Box<T> = unsafe { zeroed_box::<T>() };
    clock.time(|| ba.insert(0..npages));
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

pub(crate) struct Buddy {
    pub(crate) fa: buddy_system_allocator::FrameAllocator<33>,
    pub(crate) npages: usize,
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

pub(crate) struct BuddyS;

impl Subject for BuddyS {
    const NAME: &'static str = "buddy_system_allocator 0.13";
    const KEY: &'static str = "buddy";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        let mut p = clock.time(|| {
            let mut fa = buddy_system_allocator::FrameAllocator::<33>::new();
            fa.add_frame(0, pages_of(bytes));
            Buddy {
                fa,
                npages: pages_of(bytes),
            }
        });
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- free-list 0.3 (Hermit): address-ordered first fit over a sorted vector of ranges.

pub(crate) struct FreeListPeer {
    pub(crate) fl: free_list::FreeList<16>,
    pub(crate) npages: usize,
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

pub(crate) struct FreeListS;

impl Subject for FreeListS {
    const NAME: &'static str = "free-list 0.3";
    const KEY: &'static str = "freelist";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        let mut p = clock.time(|| -> Result<_, String> {
            let mut fl = free_list::FreeList::<16>::new();
            let all = free_list::PageRange::new(0, bytes as usize).map_err(|e| format!("{e:?}"))?;
            // SAFETY: as above; the memory is never touched.
            unsafe { fl.deallocate(all) }.map_err(|e| e.to_string())?;
            Ok(FreeListPeer {
                fl,
                npages: pages_of(bytes),
            })
        })?;
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

// --- frame-alloc 0.1: a bitmap buddy (one bitmap per order plus a summary) that keeps its
// bitmap in the managed memory. The bench backs that one range with a heap buffer; the
// allocator never touches the frames it hands out.

/// Orders 0..=10: blocks up to 4 MiB, as in the crate's README.
pub(crate) const FA_ORDERS: usize = 11;
pub(crate) const FA_BASE: PageSize = PageSize::from_log2(12);

pub(crate) static FA_BITMAP: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
pub(crate) static FA_BITMAP_PHYS: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct BenchProv;

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

pub(crate) type Fa = frame_alloc::SummaryBuddyAllocator<FA_ORDERS, BenchProv>;

/// Bytes of frame-alloc's bitmap for `frames` frames, as its layout computes them
/// (per order: one bit per block, plus a summary word per 64 words once an order has
/// at least 128 words), rounded up to whole frames.
pub(crate) fn fa_bitmap_bytes(frames: usize) -> usize {
    let words = |bits: usize| bits.div_ceil(64);
    let mut total = 0;
    for k in 0..FA_ORDERS {
        let l1 = words(frames.div_ceil(1 << k));
        total += l1 + if l1 >= 128 { words(l1) } else { 0 };
    }
    (total * 8).next_multiple_of(PAGE as usize)
}

pub(crate) struct FrameAllocPeer {
    pub(crate) fa: Box<Fa>,
    pub(crate) capacity: usize,
    pub(crate) _bitmap: Box<[u64]>,
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

pub(crate) struct FrameAllocS;

impl Subject for FrameAllocS {
    const NAME: &'static str = "frame-alloc 0.1";
    const KEY: &'static str = "framealloc";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        let mut p = build_frame_alloc(bytes, &mut clock)?;
        let init = clock.stop();
        Ok(v.visit(&mut p, init))
    }
}

/// Builds frame-alloc over `[0, bytes)`, its bitmap in a heap buffer.
pub(crate) fn build_frame_alloc(
    bytes: u64,
    clock: &mut InitClock,
) -> Result<FrameAllocPeer, String> {
    {
        let frames = pages_of(bytes);
        let bitmap_bytes = fa_bitmap_bytes(frames);
        // SAFETY: zero is a valid `u64`.
        let mut bitmap = unsafe { zeroed_slice::<u64>(bitmap_bytes / 8) };
        FA_BITMAP.store(bitmap.as_mut_ptr().cast(), Relaxed);
        FA_BITMAP_PHYS.store(0, Relaxed);
        let fa = clock.time(|| -> Result<_, String> {
            let fa = Box::new(Fa::new(FA_BASE));
            let usable = [PhysRange {
                base: 0,
                len: bytes as usize,
            }];
            // SAFETY: called once; the only range it dereferences is backed by `bitmap`
            // (checked in `BenchProv::create`), which outlives the allocator.
            unsafe { fa.try_init(0, bytes as usize, &usable) }.map_err(|e| e.to_string())?;
            Ok(fa)
        })?;
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
