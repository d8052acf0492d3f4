//! `MetadataLayout::without_known_zero`: a third less metadata, the same allocations,
//! and no page ever reported zero.

use pagealloc::testutil::HeapMetadata;
use pagealloc::{AddrRange, Constraints, Contents, MetadataLayout, PageAlloc, RangeOpError};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn the_record_costs_32_kib_per_gib() {
    let with = MetadataLayout::for_regions(&[AddrRange::new(0, 4 * GIB)]).unwrap();
    let without = with.without_known_zero();
    assert!(with.tracks_known_zero());
    assert!(!without.tracks_known_zero());
    assert_eq!(with.span_limit(), without.span_limit());
    assert_eq!(with.level_len(), without.level_len());
    assert_eq!((with.bytes() - without.bytes()) as u64 / 4, 32 * 1024);
    // About 68 KiB per GiB remain: allocation and handed-out bits, summaries.
    let per_gib = without.bytes() as u64 / 4;
    assert!((68 * 1024..70 * 1024).contains(&per_gib), "{per_gib}");
    // Metadata sized for the smaller layout is enough.
    let mut md = HeapMetadata::new(&without);
    assert!(PageAlloc::new(without, md.metadata()).is_ok());
}

/// Runs the same ops on an allocator with the record and one without: the same
/// addresses, errors and free runs; the one without reports no zeroed page.
#[test]
fn same_allocations_and_no_zeroed_pages() {
    let regions = [
        AddrRange::new(PAGE * 3, 5 * MIB),
        AddrRange::new(6 * MIB + PAGE * 17, 40 * MIB),
    ];
    let layout = MetadataLayout::for_regions(&regions).unwrap();
    let (mut md_a, mut md_b) = (HeapMetadata::default(), HeapMetadata::default());
    let mut with = md_a.page_alloc(layout);
    let mut without = md_b.page_alloc(layout.without_known_zero());
    for r in regions {
        with.grow(r, Contents::Zeroed).unwrap();
        without.grow(r, Contents::Zeroed).unwrap();
    }
    let a = with.alloc(700).unwrap();
    let b = without.alloc(700).unwrap();
    assert_eq!((a.base, a.npages), (b.base, b.npages));
    assert_eq!(a.zeroed_pages, 700);
    assert_eq!(b.zeroed_pages, 0);

    // Every page of an allocation is dirty.
    let mut dirty = Vec::new();
    let c = without
        .alloc_constrained_with(100, Constraints::aligned(64), &mut |base, n| {
            dirty.push((base, n))
        })
        .unwrap();
    assert_eq!(dirty, vec![(c.base, 100)]);
    let mut dirty_with = Vec::new();
    let cw = with
        .alloc_constrained_with(100, Constraints::aligned(64), &mut |base, n| {
            dirty_with.push((base, n))
        })
        .unwrap();
    assert_eq!((cw.base, cw.zeroed_pages, c.zeroed_pages), (c.base, 100, 0));
    assert!(dirty_with.is_empty());

    // free_zeroed frees like free, with the same errors.
    assert_eq!(
        with.free_zeroed(a.base, 700),
        without.free_zeroed(b.base, 700)
    );
    assert_eq!(
        without.free_zeroed(b.base, 1),
        Err(RangeOpError::NotAllocated {
            base: b.base,
            npages: 1,
            page: b.base
        })
    );
    let a = with.alloc_range(a.base, 700).unwrap();
    let b = without.alloc_range(b.base, 700).unwrap();
    assert_eq!((a.zeroed_pages, b.zeroed_pages), (700, 0));
    with.free_zeroed(a.base + 10 * PAGE, 5).unwrap();
    without.free_zeroed(b.base + 10 * PAGE, 5).unwrap();
    let x = with.alloc(5).unwrap();
    let y = without.alloc(5).unwrap();
    assert_eq!(
        (x.base, x.zeroed_pages, y.base, y.zeroed_pages),
        (y.base, 5, a.base + 10 * PAGE, 0)
    );

    // A page cache carries no known-zero bits; a flush records none.
    let mut pc = without.alloc_to_cache();
    let mut pcw = with.alloc_to_cache();
    assert_eq!((pc.base(), pc.cache()), (pcw.base(), pcw.cache()));
    assert_ne!(pcw.known_zero(), 0);
    assert_eq!(pc.known_zero(), 0);
    assert_eq!(pc.alloc(1).map(|(p, z)| (p, z + 1)), pcw.alloc(1));
    pc.flush(&mut without).unwrap();
    pcw.flush(&mut with).unwrap();

    assert_eq!(
        with.free_runs().collect::<Vec<_>>(),
        without.free_runs().collect::<Vec<_>>()
    );
    assert_eq!(with.free_pages(), without.free_pages());
    with.check_invariants().unwrap();
    without.check_invariants().unwrap();

    // Nothing is ever zero: take everything.
    let mut zeroed = 0;
    while let Ok(a) = without.alloc(64) {
        zeroed += a.zeroed_pages;
    }
    while let Ok(a) = without.alloc(1) {
        zeroed += a.zeroed_pages;
    }
    assert_eq!((zeroed, without.free_pages()), (0, 0));
    without.check_invariants().unwrap();
}
