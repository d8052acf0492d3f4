//! `walk N`: the search an `alloc N` makes, step by step, replayed from the allocator's
//! public state (its summary levels, search address and chunk bitmaps) without changing it.
//!
//! [`trace`] follows `PageAlloc::alloc` and `PageAlloc::find` in
//! `kernel/pagealloc/src/pagealloc.rs` rule for rule and records each step in a fixed
//! array (it runs under the frame allocator's lock, where the heap must not be used);
//! [`Trace::write`] prints it afterwards. The kernel's tests check that the address it
//! ends at is the one `alloc` returns.

use core::fmt::{self, Write};

use alloc::vec::Vec;
use pagealloc::PageAlloc;
use pagealloc::inspect::chunk_page_index;
use pagealloc::inspect::{ChunkIdx, MAX_SEARCH_ADDR, PallocData, PallocSum};
use pagealloc::inspect::{
    LEVEL_BITS, LEVEL_LOG_PAGES, LEVEL_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES, SUMMARY_BLOCK_ENTRIES,
    SUMMARY_LEVELS,
};

use super::show::{PageState, Range, write_chunk, write_entry};

/// Steps a trace keeps; a root level longer than this is cut short.
const MAX_STEPS: usize = 64;

/// What one entry did to the search.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rule {
    /// Rule 1: nothing free; the carried run is broken.
    Empty,
    /// Rule 2: the carried run plus the entry's free start is long enough.
    Found,
    /// Rule 3: a long enough run lies inside: descend.
    Descend,
    /// Rule 4: a new run begins at the entry's free end.
    NewRun,
    /// Rule 4, an entirely free entry: it extends the carried run.
    Extend,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    level: usize,
    index: usize,
    sum: PallocSum,
    rule: Rule,
    /// The carried run before this entry, in pages.
    carried: usize,
    /// The carried run after it, and where it starts.
    run: (usize, u64),
}

/// The search, as recorded by [`trace`].
pub struct Trace {
    npages: usize,
    search_addr: u64,
    /// The leaf the fast path looked at, its summary, and whether the run fit there.
    fast: Option<(usize, PallocSum, bool)>,
    steps: [Option<Step>; MAX_STEPS],
    n_steps: usize,
    /// Per level: the first entry of the block scanned and how many were skipped because
    /// they lie below the search address.
    blocks: [Option<(usize, usize)>; SUMMARY_LEVELS],
    /// The chunk whose bitmap was searched, from which page, with its bitmap.
    bitmap: Option<(ChunkIdx, usize, PallocData)>,
    result: Option<u64>,
}

impl Trace {
    /// Where the search ends: the address `alloc` would return.
    pub fn result(&self) -> Option<u64> {
        self.result
    }

    fn push(&mut self, step: Step) {
        if self.n_steps < MAX_STEPS {
            self.steps[self.n_steps] = Some(step);
            self.n_steps += 1;
        }
    }
}

/// Replays `alloc(npages)` on `pa` without allocating.
pub fn trace(pa: &PageAlloc, npages: usize) -> Trace {
    let search = pa.inspect().search_addr();
    let mut t = Trace {
        npages,
        search_addr: search,
        fast: None,
        steps: [None; MAX_STEPS],
        n_steps: 0,
        blocks: [None; SUMMARY_LEVELS],
        bitmap: None,
        result: None,
    };
    let leaves = pa
        .inspect()
        .summaries(SUMMARY_LEVELS - 1)
        .map(Iterator::collect::<Vec<_>>)
        .unwrap_or_default();
    if npages == 0 || search == MAX_SEARCH_ADDR || ChunkIdx::of(search).index() >= leaves.len() {
        return t;
    }
    // The fast path: the chunk of the search address, if the run can fit from there on.
    let ci = ChunkIdx::of(search);
    let from = chunk_page_index(search);
    let fits = PALLOC_CHUNK_PAGES - from >= npages && leaves[ci.index()].max() >= npages;
    t.fast = Some((ci.index(), leaves[ci.index()], fits));
    if fits {
        return search_bitmap(pa, t, ci, from);
    }
    let mut i = 0usize;
    for l in 0..SUMMARY_LEVELS {
        let log_pages = LEVEL_LOG_PAGES[l];
        i <<= LEVEL_BITS[l];
        let level = pa
            .inspect()
            .summaries(l)
            .map(Iterator::collect::<Vec<_>>)
            .unwrap_or_default();
        let (first, len) = if l == 0 {
            (0, level.len())
        } else {
            (i, SUMMARY_BLOCK_ENTRIES)
        };
        // Entries below the search address's entry hold nothing free: skip them.
        let search_idx = (search >> LEVEL_SHIFT[l]) as usize;
        let j0 = if l == 0 {
            search_idx
        } else if search_idx & !(SUMMARY_BLOCK_ENTRIES - 1) == i {
            search_idx & (SUMMARY_BLOCK_ENTRIES - 1)
        } else {
            0
        };
        t.blocks[l] = Some((first, j0));
        let entry_base = |j: usize| ((first + j) as u64) << LEVEL_SHIFT[l];
        let (mut base, mut size) = (0u64, 0usize);
        let mut descend = None;
        for j in j0..len {
            let sum = level[first + j];
            let carried = size;
            let rule = if sum == PallocSum::EMPTY {
                size = 0;
                Rule::Empty
            } else if size + sum.start() >= npages {
                if size == 0 {
                    base = entry_base(j);
                }
                size += sum.start();
                Rule::Found
            } else if sum.max() >= npages {
                descend = Some(first + j);
                Rule::Descend
            } else if size == 0 || sum.start() < 1 << log_pages {
                size = sum.end();
                base = entry_base(j + 1) - size as u64 * PAGE_SIZE;
                Rule::NewRun
            } else {
                size += 1 << log_pages;
                Rule::Extend
            };
            t.push(Step {
                level: l,
                index: first + j,
                sum,
                rule,
                carried,
                run: (size, base),
            });
            if rule == Rule::Found {
                t.result = Some(base);
                return t;
            }
            if rule == Rule::Descend {
                break;
            }
        }
        match descend {
            Some(k) => i = k,
            None => return t, // only the root can end here: nothing long enough
        }
    }
    search_bitmap(pa, t, ChunkIdx::new(i), 0)
}

fn search_bitmap(pa: &PageAlloc, mut t: Trace, ci: ChunkIdx, from: usize) -> Trace {
    if let Some(data) = pa.inspect().chunk_data(ci) {
        t.bitmap = Some((ci, from, data));
        t.result = data
            .find_free(t.npages, from)
            .map(|(j, _)| ci.base() + j as u64 * PAGE_SIZE);
    }
    t
}

impl Trace {
    /// Prints the trace: the fast path, each level's block with the entries skipped below
    /// the search address, each entry's rule and the carried run, and the bitmap.
    pub fn write(&self, zone: &str, out: &mut dyn Write) -> fmt::Result {
        let n = self.npages;
        if self.search_addr == MAX_SEARCH_ADDR {
            return writeln!(out, "walk: zone {zone} has no free page");
        }
        writeln!(
            out,
            "walk {n} page{} in zone {zone}; search address {:#x} (no page below it is free)",
            if n == 1 { "" } else { "s" },
            self.search_addr
        )?;
        let Some((leaf, sum, fits)) = self.fast else {
            return writeln!(
                out,
                "walk: the search address lies beyond the zone's chunks"
            );
        };
        let room = PALLOC_CHUNK_PAGES - chunk_page_index(self.search_addr);
        if fits {
            writeln!(
                out,
                "fast path: the search address's chunk L4[{leaf}] has max={} >= {n} and {room} pages from the search address on: search only its bitmap",
                sum.max()
            )?;
        } else if room < n {
            writeln!(
                out,
                "fast path: no, only {room} pages from the search address to the end of its chunk L4[{leaf}]: search the tree from the root"
            )?;
        } else {
            writeln!(
                out,
                "fast path: no, the search address's chunk L4[{leaf}] has max={} < {n}: search the tree from the root",
                sum.max()
            )?;
        }
        let mut level = usize::MAX;
        for step in self.steps[..self.n_steps].iter().flatten() {
            if step.level != level {
                level = step.level;
                self.write_block_header(level, out)?;
            }
            write_entry(out, 2, step.level, step.index, step.sum, None)?;
            self.write_rule(step, out)?;
        }
        if self.n_steps == MAX_STEPS {
            writeln!(out, "  ... (the rest of the root level is not shown)")?;
        }
        if let Some((ci, from, data)) = &self.bitmap {
            writeln!(
                out,
                "bitmap of chunk L4[{}]: the first {n} free pages in a row from page {from} (PallocBits::find):",
                ci.index()
            )?;
            let run = self
                .result
                .map(|a| chunk_page_index(a)..chunk_page_index(a) + n);
            write_chunk(out, ci.base(), |p| {
                if run.as_ref().is_some_and(|r| r.contains(&p)) {
                    PageState::Found
                } else if data.alloc_bits().get(p) {
                    PageState::Allocated
                } else {
                    PageState::Free
                }
            })?;
            writeln!(
                out,
                "  '+' the run found, '#' allocated or not managed, '.' free"
            )?;
        }
        match self.result {
            Some(a) => writeln!(
                out,
                "result: {n} page{} at {}",
                if n == 1 { "" } else { "s" },
                Range(a, a + n as u64 * PAGE_SIZE)
            ),
            None => writeln!(
                out,
                "result: no run of {n} free pages in this zone (out of memory)"
            ),
        }
    }

    fn write_block_header(&self, l: usize, out: &mut dyn Write) -> fmt::Result {
        let pages = 1usize << LEVEL_LOG_PAGES[l];
        let (first, skipped) = self.blocks[l].unwrap_or((0, 0));
        if l == 0 {
            write!(out, "L0, the root level (an entry covers {pages} pages)")?;
        } else {
            write!(
                out,
                "L{l}, block L{l}[{first}..{}] (an entry covers {pages} pages)",
                first + SUMMARY_BLOCK_ENTRIES
            )?;
        }
        if skipped > 0 {
            write!(
                out,
                "; L{l}[{first}..{}] lie below the search address's entry: skipped",
                first + skipped
            )?;
        }
        writeln!(out, ":")
    }

    fn write_rule(&self, s: &Step, out: &mut dyn Write) -> fmt::Result {
        let n = self.npages;
        let (start, max) = (s.sum.start(), s.sum.max());
        match s.rule {
            Rule::Empty => writeln!(
                out,
                "      rule 1: nothing free; the carried run is broken: carried = 0"
            ),
            Rule::Found => writeln!(
                out,
                "      rule 2: carried {} + start {start} >= {n}: found, at {:#x}",
                s.carried, s.run.1
            ),
            Rule::Descend => writeln!(
                out,
                "      rule 3: carried {} + start {start} < {n}, max {max} >= {n}: descend into its children",
                s.carried
            ),
            Rule::NewRun => writeln!(
                out,
                "      rule 4: carried {} + start {start} < {n}, max {max} < {n}: a run may begin at its end: carried = end = {} from {:#x}",
                s.carried, s.run.0, s.run.1
            ),
            Rule::Extend => writeln!(
                out,
                "      rule 4: all free, carried {} + {start} < {n}: it extends the carried run: carried = {} from {:#x}",
                s.carried, s.run.0, s.run.1
            ),
        }
    }
}
