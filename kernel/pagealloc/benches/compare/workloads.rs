//! The workloads: seeded request sequences (fill, churn, mixed, huge, fragment, init),
//! the same for every allocator.

use super::*;

// ---------------------------------------------------------------------------------------
// Seeded randomness (SplitMix64): the same stream for every allocator. Not the tests'
// `testutil::Rng` on purpose: the workloads behind the numbers in BENCHMARKS.md (and their
// exact callgrind counts) come from this stream, and a new one would make them unrepeatable.

#[derive(Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c909)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        scale(self.next(), n)
    }
}

/// Maps a random word to `0..n` without division.
pub(crate) fn scale(r: u64, n: usize) -> usize {
    ((u128::from(r) * n as u128) >> 64) as usize
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Workload {
    Fill,
    Churn,
    Mixed,
    Huge,
    Fragmented,
    Init,
}

pub(crate) const WORKLOADS: [Workload; 6] = [
    Workload::Fill,
    Workload::Churn,
    Workload::Mixed,
    Workload::Huge,
    Workload::Fragmented,
    Workload::Init,
];

impl Workload {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Workload::Fill => "fill",
            Workload::Churn => "churn",
            Workload::Mixed => "mixed",
            Workload::Huge => "huge",
            Workload::Fragmented => "fragmented",
            Workload::Init => "init",
        }
    }

    pub(crate) fn title(self) -> &'static str {
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

    pub(crate) fn legend(self) -> &'static str {
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

    pub(crate) fn needs(self, caps: Caps) -> Option<&'static str> {
        match self {
            Workload::Churn | Workload::Fragmented if !caps.free => Some("cannot free"),
            Workload::Mixed if !caps.free || !caps.multi => Some("single frames only, cannot free"),
            Workload::Huge if !caps.aligned || !caps.free => Some("single frames only"),
            _ => None,
        }
    }
}

/// Allocates single pages until `n` are live or the allocator is full.
pub(crate) fn alloc_singles<P: Peer>(
    p: &mut P,
    n: usize,
    deadline: Instant,
    out: &mut Vec<u64>,
) -> Timed {
    timed_loop(n, deadline, |_| match p.alloc(1) {
        Some(a) => {
            out.push(a);
            true
        }
        None => false,
    })
}

/// Fills what is left of memory: 2 MiB blocks, then single pages.
pub(crate) fn fill_background<P: Peer>(
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

pub(crate) struct FillW<'c>(pub(crate) Ctx<'c>);

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
pub(crate) fn free_rest<P: Peer>(p: &mut P, addrs: &[u64]) {
    for &a in addrs {
        p.free(a, 1);
    }
}

/// Memory in the state the churn and fragmented workloads start from: the window handed
/// out one page at a time, and everything above it as 2 MiB blocks.
pub(crate) struct Filled {
    pub(crate) singles: Vec<u64>,
    pub(crate) background: Vec<(u64, usize)>,
}

pub(crate) fn fill_all<P: Peer>(ctx: &Ctx<'_>, p: &mut P) -> Result<Filled, Cell> {
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

pub(crate) struct ChurnW<'c>(pub(crate) Ctx<'c>);

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
pub(crate) fn churn_pair<P: Peer>(
    p: &mut P,
    live: &mut Vec<u64>,
    rng: &mut Rng,
    failures: &mut usize,
) {
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
