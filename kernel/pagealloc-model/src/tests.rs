//! The model against itself and the interpreter against the allocator.

use pagealloc::testutil::PAGE_SIZE;
use pagealloc::{AddrRange, AllocError, Constraints, Contents, GrowError, RangeOpError};

use crate::bits::*;
use crate::decode::*;
use crate::flat::*;
use crate::ops::*;

const MIB: u64 = 1 << 20;

#[test]
fn bit_helpers() {
    let mut w = vec![0u64; 3];
    put_bits(&mut w, 60, 70, true);
    assert_eq!(w, [0xf << 60, !0, 0x3]);
    assert_eq!(count_bits(&w, 0, 192), 70);
    assert_eq!(count_bits(&w, 62, 3), 3);
    assert_eq!(find_bit(&w, 0, 192, true), 60);
    assert_eq!(find_bit(&w, 60, 192, false), 130);
    assert_eq!(find_bit(&w, 131, 150, true), 150);
    put_bits(&mut w, 64, 64, false);
    assert_eq!(w, [0xf << 60, 0, 0x3]);
}

#[test]
fn first_fit_bitmap() {
    let mut f = FirstFitBitmap::new(4 * MIB);
    assert_eq!(f.capacity_pages(), 1024);
    assert_eq!(f.alloc(1), None);
    f.add_free(0x1000, 10);
    f.add_free(0x10_0000, 200);
    assert_eq!(f.free_pages(), 210);
    assert_eq!(f.alloc(11), Some(0x10_0000));
    assert_eq!(f.alloc(10), Some(0x1000));
    assert_eq!(f.alloc(1), Some(0x10_0000 + 11 * PAGE_SIZE));
    f.free(0x1000 + 3 * PAGE_SIZE, 2);
    assert_eq!(f.alloc(1), Some(0x1000 + 3 * PAGE_SIZE));
    assert_eq!(f.next_run(0), Some((0x1000 + 4 * PAGE_SIZE, 1)));
    assert_eq!(f.alloc(0), None);
    assert_eq!(f.free_pages(), 210 - 21);
}

#[test]
#[should_panic(expected = "page already free")]
fn first_fit_rejects_double_free() {
    let mut f = FirstFitBitmap::new(MIB);
    f.add_free(0, 4);
    f.free(PAGE_SIZE, 1);
}

#[test]
fn model_semantics() {
    let mut m = FlatModel::new(3 * MIB, usize::MAX);
    assert_eq!(m.span_limit(), 4 * MIB);
    assert_eq!(
        m.grow(AddrRange::new(0x2000, 0x2000 + 0x3000), Contents::Zeroed),
        Ok(())
    );
    assert_eq!(
        m.grow(AddrRange::new(0x8000, 0x8000 + 0x1000), Contents::Unknown),
        Ok(())
    );
    assert_eq!(
        m.grow(AddrRange::new(0x4000, 0x4000 + 0x5000), Contents::Unknown),
        Err(GrowError::Overlap {
            region: AddrRange::new(0x4000, 0x9000),
            existing: AddrRange::new(0x2000, 0x5000),
        })
    );
    assert_eq!(m.state(0x1000), PageState::NotGrown);
    assert_eq!(m.state(0x2000), PageState::Free { zeroed: true });
    assert_eq!(m.free_runs(), [(0x2000, 3), (0x8000, 1)]);
    let a = m.alloc(2).unwrap();
    assert_eq!((a.base, a.zeroed_pages), (0x2000, 2));
    assert_eq!(
        m.free(0x1000, 2),
        Err(RangeOpError::NotGrown {
            base: 0x1000,
            npages: 2,
            page: 0x1000
        })
    );
    assert_eq!(
        m.free(0x3000, 3),
        Err(RangeOpError::NotGrown {
            base: 0x3000,
            npages: 3,
            page: 0x5000
        })
    );
    assert_eq!(
        m.free(0x3000, 2),
        Err(RangeOpError::NotAllocated {
            base: 0x3000,
            npages: 2,
            page: 0x4000
        })
    );
    assert_eq!(
        m.alloc_range(0x3000, 2),
        Err(RangeOpError::NotFree {
            base: 0x3000,
            npages: 2,
            page: 0x3000
        })
    );
    assert_eq!(m.free(0x2000, 2), Ok(()));
    assert_eq!(m.state(0x2000), PageState::Free { zeroed: false });
    let c = Constraints::aligned(8);
    assert_eq!(m.alloc_constrained(1, c).map(|a| a.base), Ok(0x8000));
    let w = Constraints::within(0x3000, 0x5000);
    assert_eq!(m.alloc_constrained(2, w).map(|a| a.base), Ok(0x3000));
    assert_eq!(
        m.alloc_constrained(1, w),
        Err(AllocError::OutOfMemory {
            npages: 1,
            constraints: w
        })
    );
    let mut cache = m.alloc_to_cache();
    assert_eq!(
        cache,
        ModelCache {
            base: 0,
            cache: 0b100,
            known_zero: 0
        }
    );
    assert_eq!(m.free_pages(), 0);
    assert!(m.alloc_to_cache().is_empty());
    assert_eq!(cache.alloc(1), Some((0x2000, 0)));
    let flush = |m: &FlatModel, base: u64, cache: u64| {
        m.check_flush(&ModelCache {
            base,
            cache,
            known_zero: 0,
        })
    };
    let not_grown = |base: u64, page: u64| RangeOpError::NotGrown {
        base,
        npages: 64,
        page,
    };
    // Pages 2 and 8 are grown and allocated, 2 held (the model was not told that
    // the cache handed it out) and 8 handed out; pages 0, 1 and 5 were never grown.
    assert_eq!(m.state(0x2000), PageState::Held);
    assert_eq!(flush(&m, 0, 1 << 2), Ok(()));
    assert_eq!(
        flush(&m, 0, 1 << 2 | 1 << 8),
        Err(RangeOpError::NotHeld {
            base: 0,
            npages: 64,
            page: 0x8000
        })
    );
    assert_eq!(flush(&m, 0, 1), Err(not_grown(0, 0)));
    assert_eq!(
        flush(&m, 0, 1 << 2 | 1 << 5 | 1 << 8),
        Err(not_grown(0, 0x5000))
    );
    // A chunk with a bitmap that no grow touched.
    assert_eq!(
        flush(&m, 2 * MIB, 0b10),
        Err(not_grown(2 * MIB, 2 * MIB + 0x1000))
    );
    assert_eq!(m.free(0x8000, 1), Ok(()));
    assert_eq!(
        flush(&m, 0, 1 << 2 | 1 << 8),
        Err(RangeOpError::NotAllocated {
            base: 0,
            npages: 64,
            page: 0x8000
        })
    );
    assert_eq!(
        m.check_flush(&ModelCache {
            base: 64 * MIB,
            cache: 1,
            known_zero: 0
        }),
        Err(RangeOpError::NotGrown {
            base: 64 * MIB,
            npages: 64,
            page: 64 * MIB
        })
    );
}

#[test]
fn model_cache_alloc_is_lowest_run() {
    let mut c = ModelCache {
        base: 0x40_0000,
        cache: 0b1110_1101,
        known_zero: 0b1000_0001,
    };
    assert_eq!(c.alloc(3), Some((0x40_0000 + 5 * PAGE_SIZE, 1)));
    assert_eq!(c.alloc(2), Some((0x40_0000 + 2 * PAGE_SIZE, 0)));
    assert_eq!(c.alloc(2), None);
    assert_eq!(c.alloc(1), Some((0x40_0000, 1)));
    assert_eq!(c.alloc(65), None);
    assert!(c.is_empty());
}

#[test]
fn run_ops_smoke() {
    let ops = [
        Op::Grow {
            base_page: 3,
            npages: 1000,
            zeroed: true,
        },
        Op::Grow {
            base_page: 1100,
            npages: 600,
            zeroed: false,
        },
        Op::Alloc { npages: 513 },
        Op::Alloc { npages: 1 },
        Op::AllocConstrained {
            npages: 64,
            align_pages: 64,
            min_addr: 0,
            max_addr: u64::MAX,
        },
        Op::CacheFill { cpu: 0 },
        Op::CacheAlloc { cpu: 0, npages: 3 },
        Op::BadFree {
            kind: BadFree::OverlapAbove,
            index: 0,
            delta: 0,
        },
        Op::Free { index: 0 },
        Op::BadFree {
            kind: BadFree::Double,
            index: 0,
            delta: 0,
        },
        Op::CacheFlush { cpu: 0 },
        Op::StaleFlush { cpu: 0 },
        Op::AllocRangeInFree {
            run: 1,
            offset: 7,
            npages: 9,
        },
    ];
    let s = run_ops(8 * MIB, &ops).unwrap();
    assert_eq!(
        (s.grows, s.allocs, s.cache_allocs, s.flushes, s.range_allocs),
        (2, 3, 1, 1, 1)
    );
    assert!(s.free_errors >= 1 && s.frees >= 1, "{s:?}");
}

#[test]
fn decoded_byte_soup_agrees() {
    // A fixed xorshift stream as fuzzer input: the decoder and the run must cope.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..8 {
        let data: Vec<u8> = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (config, ops) = decode_ops(&data);
        run_ops_with(config, &ops).unwrap_or_else(|e| panic!("{config:?}: {e}"));
    }
}
