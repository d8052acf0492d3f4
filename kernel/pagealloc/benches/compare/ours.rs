//! This crate's allocator as a peer: uncached, and as the kernel uses it (page cache and
//! free batch).

use super::*;

// --- Ours, uncached and through the page cache.

pub(crate) struct Ours<'m> {
    pub(crate) pa: PageAlloc<'m>,
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
pub(crate) struct OursCached<'m> {
    pub(crate) pa: PageAlloc<'m>,
    pub(crate) cache: PageCache<'m>,
    pub(crate) batch: FreeBatch<'m>,
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
/// the memory map, provide it (zeroed and resident, as for every peer: see `zeroed_slice`),
/// grow every region. Sizing and providing the metadata are not timed; `new` and `grow` are.
/// `known_zero: false` builds it with [`MetadataLayout::without_known_zero`].
pub(crate) fn build_ours<'m>(
    bytes: u64,
    known_zero: bool,
    md: &'m mut Box<[AtomicU64]>,
    clock: &mut InitClock,
) -> Result<PageAlloc<'m>, String> {
    let mut layout =
        MetadataLayout::for_regions(&[AddrRange::new(0, bytes)]).map_err(|e| e.to_string())?;
    if !known_zero {
        layout = layout.without_known_zero();
    }
    // SAFETY: zero is a valid `AtomicU64`.
    *md = unsafe { zeroed_slice::<AtomicU64>(layout.words()) };
    let md: &'m mut [AtomicU64] = md;
    clock.time(move || {
        let mut pa = PageAlloc::new(layout, md).map_err(|e| e.to_string())?;
        pa.grow(AddrRange::new(0, bytes), Contents::Unknown)
            .map_err(|e| e.to_string())?;
        Ok(pa)
    })
}

/// Ours uncached; without `KNOWN_ZERO` its known-zero record is turned off at run time
/// (32 KiB per GiB less metadata; zeroed allocations then always clear).
pub(crate) struct OursS<const KNOWN_ZERO: bool>;

impl<const KNOWN_ZERO: bool> Subject for OursS<KNOWN_ZERO> {
    const NAME: &'static str = if KNOWN_ZERO {
        "pagealloc"
    } else {
        "pagealloc, no known-zero"
    };
    const KEY: &'static str = if KNOWN_ZERO { "ours" } else { "ours-nozero" };
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        with_uncached(bytes, KNOWN_ZERO, v)
    }
}

/// Builds ours uncached (timing the build) and lets `v` run a workload on it.
fn with_uncached<V: Visitor>(bytes: u64, known_zero: bool, v: V) -> Result<V::Out, String> {
    let mut clock = InitClock::start();
    let mut md = Box::default();
    let pa = build_ours(bytes, known_zero, &mut md, &mut clock)?;
    let init = clock.stop();
    Ok(v.visit(&mut Ours { pa }, init))
}

pub(crate) struct OursCachedS;

impl Subject for OursCachedS {
    const NAME: &'static str = "pagealloc + page cache";
    const KEY: &'static str = "cached";
    const CAPS: Caps = Caps {
        free: true,
        multi: true,
        aligned: true,
    };

    fn with<V: Visitor>(bytes: u64, v: V) -> Result<V::Out, String> {
        let mut clock = InitClock::start();
        let mut md = Box::default();
        let pa = build_ours(bytes, true, &mut md, &mut clock)?;
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
