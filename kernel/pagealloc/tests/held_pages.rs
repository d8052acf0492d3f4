//! Every entry point refuses a page it does not own: frees of pages a cache or batch
//! holds, frees into a batch of pages another cache or batch holds, flushes into another
//! allocator. Each refusal names the page and changes nothing.

use pagealloc::testutil::HeapMetadata;
use pagealloc::testutil::PAGE_SIZE;
use pagealloc::{AddrRange, Contents, FreeBatch, MetadataLayout, PageAlloc, RangeOpError};

const MIB: u64 = 1 << 20;

fn grown(md: &mut HeapMetadata, base: u64, size: u64) -> PageAlloc<'_> {
    let r = AddrRange::new(base, base + size);
    let mut pa = md.page_alloc(MetadataLayout::for_regions(&[r]).unwrap());
    pa.grow(AddrRange::new(base, base + size), Contents::Zeroed)
        .unwrap();
    pa
}

/// Counts that a refused operation must leave as they were.
fn counts(pa: &PageAlloc<'_>) -> (usize, usize) {
    (pa.free_pages(), pa.held_pages())
}

#[test]
fn frees_of_held_pages_are_refused_by_every_entry_point() {
    let mut md = HeapMetadata::default();
    let mut pa = grown(&mut md, 0, 8 * MIB);
    let h = pa.handed_out();
    // A cache holds a block; a batch holds a page a caller freed.
    let cache = pa.alloc_to_cache();
    let cached = cache.base() + 5 * PAGE_SIZE;
    assert!(cache.cache() >> 5 & 1 == 1);
    let a = pa.alloc(3).unwrap().base;
    let mut batch = FreeBatch::new();
    batch.free(h, a + PAGE_SIZE).unwrap();
    let batched = a + PAGE_SIZE;
    pa.check_invariants().unwrap();
    let before = counts(&pa);
    assert_eq!(before.1, 64 + 1);

    for page in [cached, batched] {
        let held = |base, npages| Err(RangeOpError::Held { base, npages, page });
        assert_eq!(pa.free(page, 1), held(page, 1));
        assert_eq!(pa.free_zeroed(page, 1), held(page, 1));
        assert_eq!(pa.check_free(page, 1), held(page, 1));
        assert_eq!(
            pa.alloc_range(page, 1),
            Err(RangeOpError::NotFree {
                base: page,
                npages: 1,
                page
            })
        );
        // A range whose first page that is not handed out is the held one.
        let base = page - PAGE_SIZE;
        if h.is_handed_out(base) {
            assert_eq!(pa.free(base, 2), held(base, 2));
            assert!(h.is_handed_out(base), "a refused free restores its bits");
        }
        // Lock-free: another batch cannot take it either.
        let mut other = FreeBatch::new();
        assert_eq!(
            other.free(h, page),
            Err(RangeOpError::NotHandedOut { page })
        );
        assert!(other.is_empty() && other.owner().is_none());
        assert_eq!(counts(&pa), before);
        pa.check_invariants().unwrap();
    }
    // The caller's own pages of the same allocation are still freeable, one by one.
    pa.free(a, 1).unwrap();
    pa.free(a + 2 * PAGE_SIZE, 1).unwrap();
    assert_eq!(batch.alloc(), Some(batched));
    pa.free(batched, 1).unwrap();
    let mut cache = cache;
    cache.flush(&mut pa).unwrap();
    assert_eq!(pa.free_pages(), pa.total_pages());
    assert_eq!(pa.held_pages(), 0);
    pa.check_invariants().unwrap();
}

#[test]
fn free_of_a_free_or_ungrown_page_says_why_under_the_lock() {
    let mut md = HeapMetadata::default();
    let pa = grown(&mut md, 4 * PAGE_SIZE, 4 * MIB);
    let h = pa.handed_out();
    let mut batch = FreeBatch::new();
    // Free: the lock-free path cannot tell; `check_free` can.
    let free = 10 * PAGE_SIZE;
    assert_eq!(
        batch.free(h, free),
        Err(RangeOpError::NotHandedOut { page: free })
    );
    assert_eq!(
        pa.check_free(free, 1),
        Err(RangeOpError::NotAllocated {
            base: free,
            npages: 1,
            page: free
        })
    );
    // Never grown, in a chunk with a bitmap: also `NotHandedOut` without the lock.
    assert_eq!(
        batch.free(h, 0),
        Err(RangeOpError::NotHandedOut { page: 0 })
    );
    assert_eq!(
        pa.check_free(0, 1),
        Err(RangeOpError::NotGrown {
            base: 0,
            npages: 1,
            page: 0
        })
    );
    // Far outside: no bitmap at all.
    let far = 1 << 40;
    assert_eq!(
        batch.free(h, far),
        Err(RangeOpError::NotGrown {
            base: far,
            npages: 1,
            page: far
        })
    );
    assert_eq!(
        batch.free(h, free + 8),
        Err(RangeOpError::Unaligned { base: free + 8 })
    );
    assert!(batch.is_empty());
    // Messages name the page.
    let msg = RangeOpError::NotHandedOut { page: free }.to_string();
    assert!(
        msg.contains("0xa000") && msg.contains("not handed out"),
        "{msg}"
    );
    let msg = RangeOpError::Held {
        base: free,
        npages: 2,
        page: free + PAGE_SIZE,
    }
    .to_string();
    assert!(msg.contains("0xb000") && msg.contains("held by a page cache or free batch"));
}

#[test]
fn batches_and_caches_refuse_other_allocators() {
    let mut md_a = HeapMetadata::default();
    let mut a = grown(&mut md_a, 0, 4 * MIB);
    let mut md_b = HeapMetadata::default();
    let mut b = grown(&mut md_b, 0, 4 * MIB);
    let (ha, hb) = (a.handed_out(), b.handed_out());
    assert_ne!(ha, hb);
    assert_eq!(ha, a.handed_out());
    let pa_page = a.alloc(1).unwrap().base;
    let pb_page = b.alloc(1).unwrap().base;
    assert_eq!(pa_page, pb_page, "the same address in both");

    let mut batch = FreeBatch::new();
    batch.free(ha, pa_page).unwrap();
    assert_eq!(batch.owner(), Some(ha));
    let foreign = |page| RangeOpError::ForeignAllocator {
        page,
        owner: ha.id(),
        other: hb.id(),
    };
    // A page of `b` into a batch of `a`'s pages.
    assert_eq!(batch.free(hb, pb_page), Err(foreign(pb_page)));
    assert!(hb.is_handed_out(pb_page), "nothing changed in b");
    // Returning `a`'s pages to `b`: refused, even though `b` has the same page allocated.
    let (free_b, held_b) = counts(&b);
    assert_eq!(batch.flush(&mut b), Err(foreign(pa_page)));
    assert_eq!(batch.return_half(&mut b), Err(foreign(pa_page)));
    assert_eq!(counts(&b), (free_b, held_b));
    assert_eq!(batch.len(), 1);
    b.check_invariants().unwrap();
    // A cache of `a` into `b`.
    let mut cache = a.alloc_to_cache();
    let first = cache.base() + u64::from(cache.cache().trailing_zeros()) * PAGE_SIZE;
    assert_eq!(cache.flush(&mut b), Err(foreign(first)));
    assert_eq!(counts(&b), (free_b, held_b));
    // Home again.
    assert_eq!(batch.flush(&mut a), Ok(1));
    assert_eq!(batch.owner(), None);
    cache.flush(&mut a).unwrap();
    // An empty batch belongs to nobody and takes `b`'s page.
    batch.free(hb, pb_page).unwrap();
    assert_eq!(batch.flush(&mut b), Ok(1));
    assert_eq!(a.free_pages(), a.total_pages());
    assert_eq!(b.free_pages(), b.total_pages());
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
}

#[test]
fn a_batch_refuses_pages_another_batch_or_a_cache_holds() {
    let mut md = HeapMetadata::default();
    let mut pa = grown(&mut md, 0, 4 * MIB);
    let h = pa.handed_out();
    let mut cache = pa.alloc_to_cache();
    let (mut one, mut two) = (FreeBatch::new(), FreeBatch::new());
    let pages: Vec<u64> = (0..FreeBatch::CAPACITY)
        .map(|_| pa.alloc(1).unwrap().base)
        .collect();
    for &p in &pages {
        one.free(h, p).unwrap();
    }
    assert!(one.is_full());
    for &p in &pages {
        assert_eq!(two.free(h, p), Err(RangeOpError::NotHandedOut { page: p }));
    }
    for i in 0..64 {
        let p = cache.base() + i * PAGE_SIZE;
        assert_eq!(two.free(h, p), Err(RangeOpError::NotHandedOut { page: p }));
    }
    assert!(two.is_empty());
    assert_eq!(pa.held_pages(), 2 * 64);
    assert_eq!(one.flush(&mut pa), Ok(FreeBatch::CAPACITY));
    cache.flush(&mut pa).unwrap();
    assert_eq!(pa.free_pages(), pa.total_pages());
    pa.check_invariants().unwrap();
}
