//! The operations and the interpreter that runs them on the allocator and the model,
//! demanding identical answers.

use std::fmt::Debug;

use pagealloc::testutil::{
    HeapMetadata, PAGE_CACHE_PAGES, PAGE_SIZE, PALLOC_CHUNK_BYTES, PALLOC_CHUNK_PAGES,
    new_page_cache,
};
use pagealloc::{
    AddrRange, AllocError, Allocation, Constraints, Contents, FreeBatch, MetadataLayout, PageAlloc,
    PageCache, RangeOpError,
};

use crate::bits::*;
use crate::flat::*;

/// Page caches in a run of [`run_ops`], as if that many CPUs each kept one.
pub const CPUS: usize = 4;

/// The kinds of deliberately bad frees [`Op::BadFree`] makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BadFree {
    /// A range freed before (and not reallocated since, else the op is skipped).
    Double,
    /// A live allocation's base plus a sub-page offset.
    Unaligned,
    /// A live allocation's base with zero pages.
    ZeroPages,
    /// A live allocation extended down by some pages.
    OverlapBelow,
    /// A live allocation extended up by some pages.
    OverlapAbove,
    /// An arbitrary page in or just beyond the span: free, not grown or in a cache.
    Foreign,
}

/// One step of a [`run_ops`] sequence. Indices select among remembered state modulo its
/// length, so any value is meaningful; an op that has nothing to act on is skipped.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Op {
    /// Grow `[base_page, base_page + npages)` pages.
    Grow {
        /// First page (address / 4096).
        base_page: u64,
        /// Pages.
        npages: u64,
        /// [`Contents::Zeroed`] if set, else [`Contents::Unknown`].
        zeroed: bool,
    },
    /// Grow with raw byte values, to exercise the refusals.
    GrowBytes {
        /// Base address.
        base: u64,
        /// Size in bytes.
        size_bytes: u64,
        /// [`Contents::Zeroed`] if set.
        zeroed: bool,
    },
    /// [`PageAlloc::alloc`].
    Alloc {
        /// Pages.
        npages: usize,
    },
    /// [`PageAlloc::alloc_constrained`].
    AllocConstrained {
        /// Pages.
        npages: usize,
        /// Alignment in pages (not necessarily a power of two).
        align_pages: usize,
        /// Lowest address.
        min_addr: u64,
        /// Exclusive limit.
        max_addr: u64,
    },
    /// [`PageAlloc::alloc_constrained`] with a window placed on the model's free run
    /// number `run`: from `offset` pages in, `npages + slack` pages long, so that tight
    /// and exact fits (and near misses) are common.
    AllocConstrainedInFree {
        /// Free run (modulo their number).
        run: usize,
        /// Pages into the run (modulo its length).
        offset: usize,
        /// Pages.
        npages: usize,
        /// Alignment in pages.
        align_pages: usize,
        /// Window pages beyond `npages`.
        slack: usize,
    },
    /// [`PageAlloc::alloc_range`] of part of the model's free run number `run`: from
    /// `offset` pages in, at most `npages` pages.
    AllocRangeInFree {
        /// Free run (modulo their number).
        run: usize,
        /// Pages into the run (modulo its length).
        offset: usize,
        /// Pages, clipped to the run.
        npages: usize,
    },
    /// [`PageAlloc::alloc_range`] of an arbitrary range.
    AllocRange {
        /// Base address.
        base: u64,
        /// Pages.
        npages: usize,
    },
    /// Frees live allocation `index`.
    Free {
        /// Live allocation (modulo their number).
        index: usize,
    },
    /// Frees part of live allocation `index`: `npages` pages from `skip` pages in.
    FreePart {
        /// Live allocation (modulo their number).
        index: usize,
        /// Pages skipped (modulo the allocation's length).
        skip: usize,
        /// Pages freed (clipped to what is left, at least 1).
        npages: usize,
    },
    /// A free that must be refused; skipped when the model says it would succeed.
    BadFree {
        /// How the range is made.
        kind: BadFree,
        /// Live or freed allocation the range derives from.
        index: usize,
        /// Extra pages, offset or address the kind uses.
        delta: u64,
    },
    /// [`PageAlloc::free`] of an arbitrary range; skipped when the model says it would
    /// succeed (that would free pages the run still tracks as live).
    FreeRange {
        /// Base address.
        base: u64,
        /// Pages.
        npages: usize,
    },
    /// Flushes CPU `cpu`'s cache if it holds pages, then refills it with
    /// [`PageAlloc::alloc_to_cache`].
    CacheFill {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// [`PageCache::alloc`] from CPU `cpu`'s cache.
    CacheAlloc {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Pages.
        npages: usize,
    },
    /// [`PageCache::flush`] of CPU `cpu`'s cache.
    CacheFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// Flushes again a copy of the cache CPU `cpu` flushed last; skipped unless the model
    /// says it is refused.
    StaleFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// Flushes a made-up cache; skipped unless the model says it is refused.
    ForgedFlush {
        /// Any page of the block (rounded down to 64 pages).
        base_page: u64,
        /// Cache bits (0 becomes 1).
        cache: u64,
        /// Zeroed bits (masked by `cache`).
        known_zero: u64,
    },
    /// [`FreeBatch::free`] into CPU `cpu`'s batch of one page of live allocation `index`
    /// (`skip` pages in). A full batch must refuse it first; then half is returned.
    BatchFree {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Live allocation (modulo their number).
        index: usize,
        /// Pages into it (modulo its length).
        skip: usize,
    },
    /// [`FreeBatch::alloc`] from CPU `cpu`'s batch.
    BatchAlloc {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
    /// [`FreeBatch::return_half`] (`half`) or [`FreeBatch::flush`] of CPU `cpu`'s batch.
    BatchFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Return only the older half.
        half: bool,
    },
    /// [`FreeBatch::free`] of a page that is not handed out: held by a cache or batch
    /// (`kind` 0), freed before (1), anywhere (2), or unaligned (3); skipped when the
    /// model says it would succeed.
    BadBatchFree {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
        /// Which page (modulo 4).
        kind: u8,
        /// Selects among the candidates.
        index: usize,
        /// Address or offset.
        delta: u64,
    },
    /// [`PageAlloc::free`] (`how` 0), [`PageAlloc::free_zeroed`] (1) or
    /// [`PageAlloc::alloc_range`] (2) of `npages` from a page a cache or batch holds:
    /// refused.
    HeldFree {
        /// Held page (modulo their number).
        index: usize,
        /// Pages.
        npages: usize,
        /// Which entry point (modulo 3).
        how: u8,
    },
    /// CPU `cpu`'s cache and batch flushed into another allocator, and a page of that
    /// allocator freed into the batch: refused while they hold pages.
    ForeignFlush {
        /// CPU (modulo [`CPUS`]).
        cpu: usize,
    },
}

/// How a [`run_ops_with`] run is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunConfig {
    /// The allocator's span limit.
    pub span_limit: u64,
    /// Blocks of chunk bitmaps in the pool; `usize::MAX` for every block of the span.
    pub l2_blocks: usize,
    /// Compare the full state (every bitmap, the free runs, held pages) every this many
    /// ops, and always after a refused op and at the end; 0: only at the end, for big
    /// spans where one full check costs as much as thousands of ops. The free and total
    /// counts are compared after every op, the invariants checked after every op when
    /// this is 1 and with each full comparison otherwise.
    pub full_check_every: usize,
}

impl RunConfig {
    /// Every block of the span, full comparison after every op.
    pub const fn new(span_limit: u64) -> RunConfig {
        RunConfig {
            span_limit,
            l2_blocks: usize::MAX,
            full_check_every: 1,
        }
    }
}

/// What happened in a run, for tests that check their ops do something.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RunStats {
    /// Ops applied (not skipped).
    pub applied: usize,
    /// Ops skipped (nothing to act on, or a "bad" op the model says would succeed).
    pub skipped: usize,
    /// Successful grows.
    pub grows: usize,
    /// Refused grows.
    pub grow_errors: usize,
    /// Successful `alloc`/`alloc_constrained`.
    pub allocs: usize,
    /// Failed `alloc`/`alloc_constrained` (any error).
    pub alloc_errors: usize,
    /// Of the successful allocations, those with `align_pages > 1` or a window.
    pub constrained_allocs: usize,
    /// Successful `alloc_range`.
    pub range_allocs: usize,
    /// Refused `alloc_range`.
    pub range_alloc_errors: usize,
    /// Valid frees (whole or partial).
    pub frees: usize,
    /// Refused frees.
    pub free_errors: usize,
    /// Caches filled with at least one page.
    pub cache_fills: usize,
    /// Successful cache allocations.
    pub cache_allocs: usize,
    /// Flushes of non-empty caches.
    pub flushes: usize,
    /// Refused flushes.
    pub flush_errors: usize,
    /// Pages freed into batches.
    pub batch_frees: usize,
    /// Pages allocated from batches.
    pub batch_allocs: usize,
    /// Refused frees into batches (not counting full batches).
    pub batch_free_errors: usize,
    /// Frees refused because a cache or batch holds the page.
    pub held_refusals: usize,
    /// Refused flushes into another allocator.
    pub foreign_refusals: usize,
    /// Pages known to be zero that allocations reported.
    pub zeroed_pages: usize,
}

/// Runs `ops` on a [`PageAlloc`] over `span_limit` and on a [`FlatModel`]; see
/// [`run_ops_with`].
pub fn run_ops(span_limit: u64, ops: &[Op]) -> Result<RunStats, String> {
    run_ops_with(RunConfig::new(span_limit), ops)
}

/// Runs `ops` on a [`PageAlloc`] (with [`HeapMetadata`]) and on a [`FlatModel`] and
/// demands the same result from both for every op. After every op the allocator's
/// invariants are checked and its counts compared; the full state is compared as
/// `config` says. At the end every cache is flushed and every live allocation freed,
/// which must leave all grown memory free.
///
/// Returns a description of the first difference, with the op's index.
///
/// # Panics
/// If the allocator panics, or `config.span_limit` is beyond the address space.
pub fn run_ops_with(config: RunConfig, ops: &[Op]) -> Result<RunStats, String> {
    let layout = MetadataLayout::new(config.span_limit, config.l2_blocks)
        .unwrap_or_else(|e| panic!("model run: {e}"));
    let mut md = HeapMetadata::new(&layout);
    let pa = PageAlloc::new(layout, md.metadata()).map_err(|e| format!("PageAlloc::new: {e}"))?;
    // Another allocator, for foreign flushes, with one page handed out.
    let other_layout = MetadataLayout::new(PALLOC_CHUNK_BYTES, 1).expect("one chunk");
    let mut other_md = HeapMetadata::new(&other_layout);
    let mut other =
        PageAlloc::new(other_layout, other_md.metadata()).expect("metadata sized from layout");
    other
        .grow(AddrRange::new(0, PALLOC_CHUNK_BYTES), Contents::Unknown)
        .expect("one chunk");
    let other_page = other.alloc(1).expect("a free page").base;
    let mut h = Harness {
        pa,
        model: FlatModel::new(config.span_limit, config.l2_blocks),
        other,
        other_page,
        live: Vec::new(),
        freed: Vec::new(),
        caches: core::array::from_fn(|_| (PageCache::empty(), ModelCache::default())),
        batches: core::array::from_fn(|_| (FreeBatch::new(), Vec::new())),
        flushed: [None; CPUS],
        stats: RunStats::default(),
        refused: false,
        full: config.full_check_every == 1,
    };
    for (k, op) in ops.iter().enumerate() {
        let at = |e: String| format!("op #{k} {op:?}: {e}");
        h.refused = false;
        h.step(op).map_err(at)?;
        let every = config.full_check_every;
        let full = every != 0 && (k % every == 0 || h.refused);
        h.check(full).map_err(at)?;
    }
    h.drain()
        .map_err(|e| format!("draining after {} ops: {e}", ops.len()))?;
    Ok(h.stats)
}

/// Both allocators and what the run remembers about them.
pub(crate) struct Harness<'m> {
    pa: PageAlloc<'m>,
    model: FlatModel,
    /// Another allocator, for foreign flushes, and a page it handed out.
    other: PageAlloc<'m>,
    other_page: u64,
    /// Allocations the caller holds, `(base, npages)`.
    live: Vec<(u64, usize)>,
    /// Recently freed ranges, for double frees.
    freed: Vec<(u64, usize)>,
    caches: [(PageCache<'m>, ModelCache); CPUS],
    /// Each CPU's free batch and the pages the model says it holds, oldest first.
    batches: [(FreeBatch<'m>, Vec<u64>); CPUS],
    /// Each CPU's last flushed cache.
    flushed: [Option<ModelCache>; CPUS],
    stats: RunStats,
    /// The current op was a refusal: compare everything afterwards.
    refused: bool,
    /// Check counts and invariants after every op, not only at full checks.
    full: bool,
}

/// `Ok(got)` if both sides agree.
pub(crate) fn same<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<T, String> {
    if got == want {
        Ok(got)
    } else {
        Err(format!("{what}: allocator {got:?}, model {want:?}"))
    }
}

/// Keeps the list of freed ranges short.
pub(crate) const FREED_MEMORY: usize = 32;

impl<'m> Harness<'m> {
    fn step(&mut self, op: &Op) -> Result<(), String> {
        self.stats.applied += 1;
        match *op {
            Op::Grow {
                base_page,
                npages,
                zeroed,
            } => {
                let base = base_page.saturating_mul(PAGE_SIZE);
                self.grow(base, npages.saturating_mul(PAGE_SIZE), zeroed)
            }
            Op::GrowBytes {
                base,
                size_bytes,
                zeroed,
            } => self.grow(base, size_bytes, zeroed),
            Op::Alloc { npages } => {
                let r = same("alloc", self.pa.alloc(npages), self.model.alloc(npages))?;
                self.allocated(r, false);
                Ok(())
            }
            Op::AllocConstrained {
                npages,
                align_pages,
                min_addr,
                max_addr,
            } => self.alloc_constrained(
                npages,
                Constraints {
                    align_pages,
                    min_addr,
                    max_addr,
                },
            ),
            Op::AllocConstrainedInFree {
                run,
                offset,
                npages,
                align_pages,
                slack,
            } => {
                let runs = self.model.free_runs();
                if runs.is_empty() {
                    return self.skip();
                }
                let (rb, rn) = runs[run % runs.len()];
                let min_addr = rb + page_addr(offset % rn);
                let len = (npages.saturating_add(slack) as u64).saturating_mul(PAGE_SIZE);
                let max_addr = min_addr.saturating_add(len);
                self.alloc_constrained(
                    npages,
                    Constraints {
                        align_pages,
                        min_addr,
                        max_addr,
                    },
                )
            }
            Op::AllocRangeInFree {
                run,
                offset,
                npages,
            } => {
                let runs = self.model.free_runs();
                if runs.is_empty() {
                    return self.skip();
                }
                let (rb, rn) = runs[run % runs.len()];
                let off = offset % rn;
                let n = npages.clamp(1, rn - off);
                self.alloc_range(rb + page_addr(off), n)
            }
            Op::AllocRange { base, npages } => self.alloc_range(base, npages),
            Op::Free { index } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let (base, npages) = self.live.swap_remove(index % self.live.len());
                self.valid_free(base, npages)
            }
            Op::FreePart {
                index,
                skip,
                npages,
            } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let i = index % self.live.len();
                let (base, n) = self.live[i];
                let s = skip % n;
                let k = npages.clamp(1, n - s);
                self.live.swap_remove(i);
                if s > 0 {
                    self.live.push((base, s));
                }
                if s + k < n {
                    self.live.push((base + page_addr(s + k), n - s - k));
                }
                self.valid_free(base + page_addr(s), k)
            }
            Op::BadFree { kind, index, delta } => {
                let Some((base, npages)) = self.bad_range(kind, index, delta) else {
                    return self.skip();
                };
                self.bad_free(base, npages)
            }
            Op::FreeRange { base, npages } => self.bad_free(base, npages),
            Op::CacheFill { cpu } => {
                let cpu = cpu % CPUS;
                if !self.caches[cpu].1.is_empty() {
                    self.flush(cpu)?;
                }
                let got = self.pa.alloc_to_cache();
                let want = self.model.alloc_to_cache();
                same("alloc_to_cache", ModelCache::of(&got), want)?;
                if !want.is_empty() {
                    self.stats.cache_fills += 1;
                }
                self.caches[cpu] = (got, want);
                Ok(())
            }
            Op::CacheAlloc { cpu, npages } => {
                let (pc, mc) = &mut self.caches[cpu % CPUS];
                let r = same("cache alloc", pc.alloc(npages), mc.alloc(npages))?;
                same("cache after alloc", ModelCache::of(pc), *mc)?;
                if let Some((addr, zeroed)) = r {
                    self.model.hand_out(addr, npages);
                    self.live.push((addr, npages));
                    self.stats.cache_allocs += 1;
                    self.stats.zeroed_pages += zeroed;
                }
                Ok(())
            }
            Op::CacheFlush { cpu } => self.flush(cpu % CPUS),
            // A stale copy a buggy caller kept (a `PageCache` cannot be cloned: only the
            // test support can make one).
            Op::StaleFlush { cpu } => match self.flushed[cpu % CPUS] {
                Some(mc) => self.bad_flush(mc),
                None => self.skip(),
            },
            Op::ForgedFlush {
                base_page,
                cache,
                known_zero,
            } => {
                let base = base_page.saturating_mul(PAGE_SIZE) & !(page_addr(PAGE_CACHE_PAGES) - 1);
                let cache = if cache == 0 { 1 } else { cache };
                let mc = ModelCache {
                    base,
                    cache,
                    known_zero: known_zero & cache,
                };
                self.bad_flush(mc)
            }
            Op::BatchFree { cpu, index, skip } => {
                if self.live.is_empty() {
                    return self.skip();
                }
                let i = index % self.live.len();
                let (base, n) = self.live.swap_remove(i);
                let s = skip % n;
                if s > 0 {
                    self.live.push((base, s));
                }
                if s + 1 < n {
                    self.live.push((base + page_addr(s + 1), n - s - 1));
                }
                self.batch_free(cpu % CPUS, base + page_addr(s))
            }
            Op::BatchAlloc { cpu } => {
                let (batch, held) = &mut self.batches[cpu % CPUS];
                let got = batch.alloc();
                same("batch alloc", got, held.pop())?;
                if let Some(addr) = got {
                    self.model.hand_out(addr, 1);
                    self.live.push((addr, 1));
                    self.stats.batch_allocs += 1;
                }
                Ok(())
            }
            Op::BatchFlush { cpu, half } => {
                if self.batches[cpu % CPUS].1.is_empty() {
                    return self.skip();
                }
                self.return_batch(cpu % CPUS, half)
            }
            Op::BadBatchFree {
                cpu,
                kind,
                index,
                delta,
            } => {
                let cpu = cpu % CPUS;
                let addr = match kind % 4 {
                    0 => {
                        let held = self.held_pages();
                        if held.is_empty() {
                            return self.skip();
                        }
                        held[index % held.len()]
                    }
                    1 => {
                        if self.freed.is_empty() {
                            return self.skip();
                        }
                        self.freed[index % self.freed.len()].0
                    }
                    2 => {
                        let span_pages = page_idx(self.model.span_limit()) as u64
                            + 2 * PALLOC_CHUNK_PAGES as u64;
                        page_addr((delta % span_pages) as usize)
                    }
                    _ => {
                        if self.live.is_empty() {
                            return self.skip();
                        }
                        self.live[index % self.live.len()].0 + 1 + delta % (PAGE_SIZE - 1)
                    }
                };
                let Err(want) = self.model.check_batch_free(addr) else {
                    return self.skip();
                };
                let (batch, held) = &mut self.batches[cpu];
                let unaligned = matches!(want, RangeOpError::Unaligned { .. });
                let want = if unaligned || !batch.is_full() {
                    want
                } else {
                    RangeOpError::BatchFull { page: addr }
                };
                same(
                    "refused batch free",
                    batch.free(self.pa.handed_out(), addr),
                    Err(want),
                )
                .map(drop)?;
                same(
                    "batch after refused free",
                    batch.pages().collect(),
                    held.clone(),
                )?;
                self.stats.batch_free_errors += 1;
                self.refused = true;
                Ok(())
            }
            Op::HeldFree { index, npages, how } => {
                let held = self.held_pages();
                if held.is_empty() {
                    return self.skip();
                }
                let base = held[index % held.len()];
                let npages = npages.max(1);
                match how % 3 {
                    0 | 1 => {
                        let want = self.model.check_free(base, npages);
                        let got = if how % 3 == 0 {
                            self.pa.free(base, npages)
                        } else {
                            self.pa.free_zeroed(base, npages)
                        };
                        let Err(want) = want else {
                            return Err(format!("the model accepts a free of held page {base:#x}"));
                        };
                        same("free of a held page", got, Err(want)).map(drop)?;
                        same("check_free", self.pa.check_free(base, npages), Err(want))
                            .map(drop)?;
                    }
                    _ => {
                        let want = self.model.check_alloc_range(base, npages);
                        same(
                            "alloc_range of a held page",
                            self.pa.alloc_range(base, npages).map(drop),
                            want,
                        )
                        .map(drop)?;
                        if want.is_ok() {
                            return Err(format!("the model accepts alloc_range of {base:#x}"));
                        }
                    }
                }
                self.stats.held_refusals += 1;
                self.refused = true;
                Ok(())
            }
            Op::ForeignFlush { cpu } => self.foreign_flush(cpu % CPUS),
        }
    }

    /// Pages held by caches and batches, in a fixed order.
    fn held_pages(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, mc) in &self.caches {
            out.extend(
                (0..PAGE_CACHE_PAGES)
                    .filter(|&i| mc.cache >> i & 1 != 0)
                    .map(|i| mc.base + page_addr(i)),
            );
        }
        for (_, held) in &self.batches {
            out.extend(held.iter().copied());
        }
        out
    }

    /// A valid free of a live page into CPU `cpu`'s batch.
    fn batch_free(&mut self, cpu: usize, addr: u64) -> Result<(), String> {
        if self.batches[cpu].0.is_full() {
            let (batch, _) = &mut self.batches[cpu];
            same(
                "free into a full batch",
                batch.free(self.pa.handed_out(), addr),
                Err(RangeOpError::BatchFull { page: addr }),
            )
            .map(drop)?;
            self.return_batch(cpu, true)?;
        }
        same(
            "batch free",
            self.batches[cpu].0.free(self.pa.handed_out(), addr),
            self.model.batch_free(addr),
        )?
        .map_err(|e| format!("free of a live page into a batch refused: {e}"))?;
        self.batches[cpu].1.push(addr);
        self.stats.batch_frees += 1;
        if self.freed.len() == FREED_MEMORY {
            self.freed.remove(0);
        }
        self.freed.push((addr, 1));
        Ok(())
    }

    /// Returns the older half or all of CPU `cpu`'s batch.
    fn return_batch(&mut self, cpu: usize, half: bool) -> Result<(), String> {
        let (batch, held) = &mut self.batches[cpu];
        let n = if half {
            held.len().div_ceil(2)
        } else {
            held.len()
        };
        let got = if half {
            batch.return_half(&mut self.pa)
        } else {
            batch.flush(&mut self.pa)
        };
        let want = self.model.return_pages(&held[..n]).map(|()| n);
        same("batch return", got, want)?.map_err(|e| format!("return of a batch refused: {e}"))?;
        held.drain(..n);
        same("batch after return", batch.pages().collect(), held.clone())?;
        self.stats.flushes += 1;
        Ok(())
    }

    /// Flushes of CPU `cpu`'s cache and batch into the other allocator.
    fn foreign_flush(&mut self, cpu: usize) -> Result<(), String> {
        let (mine, theirs) = (self.pa.handed_out().id(), self.other.handed_out().id());
        let other_free = self.other.free_pages();
        let (pc, mc) = &mut self.caches[cpu];
        let (batch, held) = &mut self.batches[cpu];
        if mc.is_empty() && held.is_empty() {
            return self.skip();
        }
        if !mc.is_empty() {
            let page = mc.base + page_addr(mc.cache.trailing_zeros() as usize);
            let want = RangeOpError::ForeignAllocator {
                page,
                owner: mine,
                other: theirs,
            };
            same("foreign cache flush", pc.flush(&mut self.other), Err(want)).map(drop)?;
            same("cache after foreign flush", ModelCache::of(pc), *mc)?;
        }
        if let Some(&page) = held.first() {
            let want = RangeOpError::ForeignAllocator {
                page,
                owner: mine,
                other: theirs,
            };
            same(
                "foreign batch flush",
                batch.flush(&mut self.other),
                Err(want),
            )
            .map(drop)?;
            same(
                "foreign batch return",
                batch.return_half(&mut self.other),
                Err(want),
            )
            .map(drop)?;
            let page = self.other_page;
            same(
                "foreign page into a batch",
                batch.free(self.other.handed_out(), page),
                Err(RangeOpError::ForeignAllocator {
                    page,
                    owner: mine,
                    other: theirs,
                }),
            )
            .map(drop)?;
            same(
                "batch after foreign flush",
                batch.pages().collect(),
                held.clone(),
            )?;
        }
        same(
            "other allocator's free pages",
            self.other.free_pages(),
            other_free,
        )?;
        self.other
            .check_invariants()
            .map_err(|e| format!("other allocator: {e}"))?;
        self.stats.foreign_refusals += 1;
        self.refused = true;
        Ok(())
    }

    fn skip(&mut self) -> Result<(), String> {
        self.stats.applied -= 1;
        self.stats.skipped += 1;
        Ok(())
    }

    fn grow(&mut self, base: u64, size_bytes: u64, zeroed: bool) -> Result<(), String> {
        let contents = if zeroed {
            Contents::Zeroed
        } else {
            Contents::Unknown
        };
        // The ops give a size; a range that would end past the address space ends at its top.
        let region = AddrRange::new(base, base.saturating_add(size_bytes));
        let r = same(
            "grow",
            self.pa.grow(region, contents),
            self.model.grow(region, contents),
        )?;
        if r.is_ok() {
            self.stats.grows += 1;
        } else {
            self.stats.grow_errors += 1;
            self.refused = true;
        }
        Ok(())
    }

    fn allocated(&mut self, r: Result<Allocation, AllocError>, constrained: bool) {
        match r {
            Ok(a) => {
                self.live.push((a.base, a.npages));
                self.stats.allocs += 1;
                self.stats.constrained_allocs += usize::from(constrained);
                self.stats.zeroed_pages += a.zeroed_pages;
            }
            Err(_) => self.stats.alloc_errors += 1,
        }
    }

    fn alloc_constrained(&mut self, npages: usize, c: Constraints) -> Result<(), String> {
        let r = same(
            "alloc_constrained",
            self.pa.alloc_constrained(npages, c),
            self.model.alloc_constrained(npages, c),
        )?;
        if let Ok(a) = r {
            let end = u128::from(a.base) + u128::from(PAGE_SIZE) * npages as u128;
            let aligned = u128::from(a.base) % (u128::from(PAGE_SIZE) * c.align_pages as u128) == 0;
            if a.base < c.min_addr || end > u128::from(c.max_addr) || !aligned {
                return Err(format!("{a:?} breaks the constraints"));
            }
        }
        self.allocated(r, c != Constraints::NONE);
        Ok(())
    }

    fn alloc_range(&mut self, base: u64, npages: usize) -> Result<(), String> {
        let r = same(
            "alloc_range",
            self.pa.alloc_range(base, npages),
            self.model.alloc_range(base, npages),
        )?;
        match r {
            Ok(a) => {
                self.live.push((base, npages));
                self.stats.range_allocs += 1;
                self.stats.zeroed_pages += a.zeroed_pages;
            }
            Err(_) => {
                self.stats.range_alloc_errors += 1;
                self.refused = true;
            }
        }
        Ok(())
    }

    /// A free of a range the run holds: both sides must accept it.
    fn valid_free(&mut self, base: u64, npages: usize) -> Result<(), String> {
        same(
            "free",
            self.pa.free(base, npages),
            self.model.free(base, npages),
        )?
        .map_err(|e| format!("free of a live allocation refused: {e}"))?;
        self.stats.frees += 1;
        if self.freed.len() == FREED_MEMORY {
            self.freed.remove(0);
        }
        self.freed.push((base, npages));
        Ok(())
    }

    /// The range a [`BadFree`] of this kind would free.
    fn bad_range(&self, kind: BadFree, index: usize, delta: u64) -> Option<(u64, usize)> {
        let live = (!self.live.is_empty()).then(|| self.live[index % self.live.len()]);
        let extra = 1 + (delta % 8) as usize;
        match kind {
            BadFree::Double => {
                (!self.freed.is_empty()).then(|| self.freed[index % self.freed.len()])
            }
            BadFree::Unaligned => live.map(|(b, n)| (b + 1 + delta % (PAGE_SIZE - 1), n)),
            BadFree::ZeroPages => live.map(|(b, _)| (b, 0)),
            BadFree::OverlapBelow => {
                live.and_then(|(b, n)| b.checked_sub(page_addr(extra)).map(|lo| (lo, n + extra)))
            }
            BadFree::OverlapAbove => live.map(|(b, n)| (b, n + extra)),
            BadFree::Foreign => {
                let span_pages =
                    page_idx(self.model.span_limit()) as u64 + 2 * PALLOC_CHUNK_PAGES as u64;
                Some((page_addr((delta % span_pages) as usize), 1 + index % 16))
            }
        }
    }

    /// A free the model refuses must be refused the same way and change nothing; one the
    /// model accepts is skipped, as it would free pages the run counts as live.
    fn bad_free(&mut self, base: u64, npages: usize) -> Result<(), String> {
        let Err(want) = self.model.check_free(base, npages) else {
            return self.skip();
        };
        same("refused free", self.pa.free(base, npages), Err(want)).map(drop)?;
        same("model free", self.model.free(base, npages), Err(want)).map(drop)?;
        self.stats.free_errors += 1;
        self.refused = true;
        Ok(())
    }

    fn flush(&mut self, cpu: usize) -> Result<(), String> {
        let (pc, mc) = &mut self.caches[cpu];
        if mc.is_empty() {
            same("flush of an empty cache", pc.flush(&mut self.pa), Ok(())).map(drop)?;
            return self.skip();
        }
        let copy = *mc;
        same("flush", pc.flush(&mut self.pa), self.model.flush(mc))?
            .map_err(|e| format!("flush of a live cache refused: {e}"))?;
        same(
            "cache after flush",
            ModelCache::of(pc),
            ModelCache::default(),
        )?;
        self.flushed[cpu] = Some(copy);
        self.stats.flushes += 1;
        Ok(())
    }

    /// Like [`Harness::bad_free`], for a flush.
    fn bad_flush(&mut self, mut mc: ModelCache) -> Result<(), String> {
        let Err(want) = self.model.check_flush(&mc) else {
            return self.skip();
        };
        let mut pc = new_page_cache(Some(self.pa.handed_out()), mc.base, mc.cache, mc.known_zero)
            .map_err(|e| format!("forged cache {mc:?}: {e}"))?;
        same("refused flush", pc.flush(&mut self.pa), Err(want)).map(drop)?;
        same("model flush", self.model.flush(&mut mc), Err(want)).map(drop)?;
        same("cache after refused flush", ModelCache::of(&pc), mc)?;
        self.stats.flush_errors += 1;
        self.refused = true;
        Ok(())
    }

    fn check(&self, full: bool) -> Result<(), String> {
        if full || self.full {
            self.pa
                .check_invariants()
                .map_err(|e| format!("invariant broken: {e}"))?;
        }
        same("free_pages", self.pa.free_pages(), self.model.free_pages())?;
        same(
            "total_pages",
            self.pa.total_pages(),
            self.model.total_pages(),
        )?;
        if full {
            same("held pages", self.pa.held_pages(), self.model.held_pages())?;
            if let Some(d) = self.model.diff(&self.pa) {
                return Err(format!("state differs:\n{d}"));
            }
        }
        Ok(())
    }

    /// Returns everything and checks that all grown memory is free again.
    fn drain(&mut self) -> Result<(), String> {
        for cpu in 0..CPUS {
            if !self.caches[cpu].1.is_empty() {
                self.flush(cpu)?;
            }
            if !self.batches[cpu].1.is_empty() {
                self.return_batch(cpu, false)?;
            }
        }
        while let Some((base, npages)) = self.live.pop() {
            self.valid_free(base, npages)?;
        }
        self.check(true)?;
        same(
            "free pages after draining",
            self.pa.free_pages(),
            self.pa.total_pages(),
        )?;
        Ok(())
    }
}
