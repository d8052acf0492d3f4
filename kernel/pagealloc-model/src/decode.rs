//! Fuzzer bytes to operations.

use pagealloc::testutil::{
    MAX_NPAGES, PAGE_SHIFT, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES, PALLOC_CHUNKS_L2_ENTRIES,
};

use crate::ops::*;

/// Reads op parameters from fuzzer bytes; reads past the end give zeros.
pub(crate) struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A page count weighted towards the sizes where the allocator changes paths.
    fn npages(&mut self) -> usize {
        let b = self.u8();
        match b % 8 {
            0 => [1, 2, 63, 64, 65, 511, 512, 513, 1024, 1100][usize::from(self.u8() % 10)],
            1..=4 => 1 + usize::from(b >> 3) % 16,
            5 | 6 => 1 + usize::from(self.u16()) % 1100,
            _ => match self.u8() % 4 {
                0 => 0,
                1 => MAX_NPAGES + 1,
                _ => 1 + self.u32() as usize % (4 * PALLOC_CHUNK_PAGES * PALLOC_CHUNKS_L2_ENTRIES),
            },
        }
    }

    /// An address in or a little beyond a span of `span_pages` pages: page aligned
    /// except now and then.
    fn addr(&mut self, span_pages: u64) -> u64 {
        let page = u64::from(self.u32()) % (span_pages + 2 * PALLOC_CHUNK_PAGES as u64);
        let a = page << PAGE_SHIFT;
        if self.u8() == 0xff {
            a + 1 + u64::from(self.u8())
        } else {
            a
        }
    }
}

/// Decodes fuzzer input into a run: the first bytes choose the span and the memory
/// grown at the start, the rest is a sequence of ops. Every input decodes to something.
pub fn decode_ops(data: &[u8]) -> (RunConfig, Vec<Op>) {
    let mut b = Bytes(data);
    // Small spans by default, so that thousands of inputs run a second; a big one
    // rarely, without full checks until the end.
    let span_chunks: u64 = match b.u8() {
        0..=159 => 1 + u64::from(b.u8() % 16),
        160..=253 => 1 + u64::from(b.u8() % 64),
        // Past the first root entry (8 GiB), where runs cross the root level.
        _ => 4096 - 4 + u64::from(b.u8() % 16),
    };
    let span_pages = span_chunks * PALLOC_CHUNK_PAGES as u64;
    let cfg = b.u8();
    let config = RunConfig {
        span_limit: span_chunks * PALLOC_CHUNK_BYTES,
        l2_blocks: if cfg & 0x7 == 0 {
            1 + usize::from(cfg >> 3) % 4
        } else {
            usize::MAX
        },
        // The full comparison walks every chunk of the span: every 8 ops (and after
        // refusals) on small ones, only at the end on big ones. Results, errors and
        // counts are compared after every op.
        full_check_every: if span_chunks > 1000 { 0 } else { 8 },
        // Known-zero tracking stays on, so the stored corpus keeps its meaning; the
        // property tests run layouts without it.
        known_zero: true,
    };
    let mut ops = Vec::new();
    // Initial memory map: regions with holes between them, in address order.
    let nregions = 1 + b.u8() % 8;
    let mut page = if b.u8() % 4 == 0 {
        0
    } else {
        u64::from(b.u16()) % span_pages
    };
    for _ in 0..nregions {
        if page >= span_pages {
            break;
        }
        let len = 1 + u64::from(b.u32()) % (span_pages - page);
        ops.push(Op::Grow {
            base_page: page,
            npages: len,
            zeroed: b.u8() & 1 == 1,
        });
        page += len + u64::from(b.u16() % 1100);
    }
    let span_addr = |b: &mut Bytes<'_>| b.addr(span_pages);
    while !b.0.is_empty() {
        let op = match b.u8() % 28 {
            0 => Op::Grow {
                base_page: u64::from(b.u32()) % (span_pages + 4),
                npages: 1 + u64::from(b.u16()) % 2048,
                zeroed: b.u8() & 1 == 1,
            },
            1 => Op::GrowBytes {
                base: span_addr(&mut b),
                size_bytes: u64::from(b.u32()),
                zeroed: false,
            },
            2..=4 => Op::Alloc { npages: b.npages() },
            5 | 6 => {
                let npages = b.npages();
                let a = b.u8();
                let align_pages = if a == 0xff { 3 } else { 1 << (a % 11) };
                let w = b.u8();
                let span = span_pages << PAGE_SHIFT;
                let min_addr = if w & 1 == 0 { 0 } else { span_addr(&mut b) };
                let max_addr = match w >> 1 & 3 {
                    0 => u64::MAX,
                    1 => span / 16,
                    2 => span / 4,
                    _ => span_addr(&mut b),
                };
                Op::AllocConstrained {
                    npages,
                    align_pages,
                    min_addr,
                    max_addr,
                }
            }
            7 if b.0.first().is_some_and(|&x| x & 1 == 1) => {
                b.u8();
                Op::AllocConstrainedInFree {
                    run: usize::from(b.u8()),
                    offset: usize::from(b.u16()),
                    npages: b.npages(),
                    align_pages: 1 << (b.u8() % 11),
                    slack: usize::from(b.u8() % 8),
                }
            }
            7 => Op::AllocRangeInFree {
                run: usize::from(b.u8()),
                offset: usize::from(b.u16()),
                npages: b.npages(),
            },
            8 => Op::AllocRange {
                base: span_addr(&mut b),
                npages: b.npages(),
            },
            9 | 10 => Op::Free {
                index: usize::from(b.u8()),
            },
            11 => Op::FreePart {
                index: usize::from(b.u8()),
                skip: usize::from(b.u16()),
                npages: b.npages(),
            },
            12 => {
                let kinds = [
                    BadFree::Double,
                    BadFree::Unaligned,
                    BadFree::ZeroPages,
                    BadFree::OverlapBelow,
                    BadFree::OverlapAbove,
                    BadFree::Foreign,
                ];
                Op::BadFree {
                    kind: kinds[usize::from(b.u8()) % kinds.len()],
                    index: usize::from(b.u8()),
                    delta: b.u64(),
                }
            }
            13 => Op::FreeRange {
                base: span_addr(&mut b),
                npages: b.npages(),
            },
            14 => Op::CacheFill {
                cpu: usize::from(b.u8()),
            },
            15 | 16 => Op::CacheAlloc {
                cpu: usize::from(b.u8()),
                npages: 1 + usize::from(b.u8() % 70),
            },
            17 => Op::CacheFlush {
                cpu: usize::from(b.u8()),
            },
            18 => Op::StaleFlush {
                cpu: usize::from(b.u8()),
            },
            20..=22 => Op::BatchFree {
                cpu: usize::from(b.u8()),
                index: usize::from(b.u8()),
                skip: usize::from(b.u16()),
            },
            23 => Op::BatchAlloc {
                cpu: usize::from(b.u8()),
            },
            24 => {
                let x = b.u8();
                Op::BatchFlush {
                    cpu: usize::from(x >> 1),
                    half: x & 1 == 1,
                }
            }
            25 => Op::BadBatchFree {
                cpu: usize::from(b.u8()),
                kind: b.u8(),
                index: usize::from(b.u8()),
                delta: b.u64(),
            },
            26 => Op::HeldFree {
                index: usize::from(b.u8()),
                npages: 1 + usize::from(b.u8() % 80),
                how: b.u8(),
            },
            27 => Op::ForeignFlush {
                cpu: usize::from(b.u8()),
            },
            _ => Op::ForgedFlush {
                base_page: span_addr(&mut b) >> PAGE_SHIFT,
                cache: b.u64(),
                known_zero: b.u64(),
            },
        };
        ops.push(op);
    }
    (config, ops)
}
