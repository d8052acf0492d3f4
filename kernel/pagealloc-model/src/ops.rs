//! The operations and the interpreter that runs them on the allocator and the model,
//! demanding identical answers.

use std::fmt::Debug;

use pagealloc::testutil::{HeapMetadata, PALLOC_CHUNK_BYTES};
use pagealloc::{AddrRange, Contents, FreeBatch, MetadataLayout, PageAlloc, PageCache};

use crate::flat::*;
use crate::harness::Harness;

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
    /// Keep known-zero bits (the default); without them
    /// (`MetadataLayout::without_known_zero`) every allocation must report 0 zeroed pages.
    pub known_zero: bool,
}

impl RunConfig {
    /// Every block of the span, full comparison after every op.
    pub const fn new(span_limit: u64) -> RunConfig {
        RunConfig {
            span_limit,
            l2_blocks: usize::MAX,
            full_check_every: 1,
            known_zero: true,
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
    let mut layout = MetadataLayout::new(config.span_limit, config.l2_blocks)
        .unwrap_or_else(|e| panic!("model run: {e}"));
    let mut model = FlatModel::new(config.span_limit, config.l2_blocks);
    if !config.known_zero {
        layout = layout.without_known_zero();
        model = model.without_known_zero();
    }
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
        model,
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
    if !config.known_zero && h.stats.zeroed_pages != 0 {
        return Err(format!(
            "{} zeroed pages reported without known-zero tracking",
            h.stats.zeroed_pages
        ));
    }
    Ok(h.stats)
}
