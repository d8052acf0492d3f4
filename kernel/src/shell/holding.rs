//! The console's frame commands: `alloc`, `free` and `fill`, on the frames it holds as
//! handles, and what a refused free names.

use super::*;

impl Console {
    pub(super) fn alloc(
        &mut self,
        npages: usize,
        align_pages: usize,
        below: Option<u64>,
        out: &mut dyn Write,
    ) -> fmt::Result {
        if self.held.try_reserve(1).is_err() {
            return writeln!(out, "alloc: the heap has no room to record an allocation");
        }
        let mut req = FrameRequest::pages(npages).aligned(align_pages);
        if let Some(limit) = below {
            req = req.below(limit);
        }
        match frames::alloc_uncached(req) {
            Ok(f) => {
                let (base, n) = (f.start_address().as_u64(), f.npages());
                self.held.push(f);
                self.last_alloc = Some(base);
                writeln!(
                    out,
                    "allocated {n} frame{} at {} (zone {})",
                    plural(n),
                    Range(base, base + n as u64 * PAGE_SIZE),
                    Zone::of(base).name()
                )
            }
            Err(e) => {
                writeln!(out, "alloc: {e}")?;
                cached_note(&e, out)
            }
        }
    }

    pub(super) fn free(&mut self, addr: u64, npages: usize, out: &mut dyn Write) -> fmt::Result {
        let limit = (npages as u64)
            .checked_mul(PAGE_SIZE)
            .and_then(|b| addr.checked_add(b));
        let Some(phys) = PhysAddr::try_new(addr).ok() else {
            return writeln!(out, "free: {addr:#x} is not a physical address");
        };
        if limit.is_none_or(|l| l > 1 << PHYS_ADDR_BITS) {
            return writeln!(
                out,
                "free: {npages} frames at {addr:#x} run past the physical address space"
            );
        }
        let overlap = |f: &Frames, limit: u64| {
            let b = f.start_address().as_u64();
            let end = b + f.npages() as u64 * PAGE_SIZE;
            (addr.max(b), limit.min(end))
        };
        // Pages of the range that this console holds (its runs never overlap).
        let mine = match limit {
            Some(limit) if npages > 0 => self
                .held
                .iter()
                .map(|e| overlap(e, limit))
                .filter(|(lo, hi)| lo < hi)
                .map(|(lo, hi)| (hi - lo) / PAGE_SIZE)
                .sum::<u64>(),
            _ => 0,
        };
        if let Some(limit) = limit
            && npages > 0
            && mine == npages as u64
        {
            // A run may be split in two: make room first, so that nothing can fail after
            // the frames are freed.
            if self.held.try_reserve(2).is_err() {
                return writeln!(out, "free: the heap has no room to record the rest");
            }
            // Free the part of each held run that lies in the range, through its handle;
            // what lies outside the range stays held.
            let mut k = 0;
            while k < self.held.len() {
                let (lo, hi) = overlap(&self.held[k], limit);
                if lo >= hi {
                    k += 1;
                    continue;
                }
                let mut run = self.held.swap_remove(k);
                let run_base = run.start_address().as_u64();
                let mut middle = match run.split_off(((lo - run_base) / PAGE_SIZE) as usize) {
                    Some(rest) => {
                        self.held.push(run);
                        rest
                    }
                    None => run,
                };
                if let Some(tail) = middle.split_off(((hi - lo) / PAGE_SIZE) as usize) {
                    self.held.push(tail);
                }
                if let Err((middle, e)) = middle.free_uncached() {
                    self.held.push(middle);
                    return writeln!(out, "free: {e}");
                }
            }
            return writeln!(
                out,
                "freed {npages} frame{} at {}",
                plural(npages),
                Range(addr, limit)
            );
        }
        // Not (all) this console's. Name the lowest page that cannot be freed, whatever
        // the reason; a range with none belongs to the kernel and is not freed from here.
        // (Unaligned and empty ranges go to the allocator for its own error.)
        if let Some(limit) = limit
            && npages > 0
            && addr.is_multiple_of(PAGE_SIZE)
            && let Some(problem) = first_problem(addr, limit)
        {
            return writeln!(out, "free: {problem}");
        }
        if frames::with_zones(|zones| kernel_owned(zones, addr, npages)) {
            return writeln!(
                out,
                "free: {} is in use by the kernel, not by this console: not freed",
                Range(addr, limit.unwrap_or(u64::MAX))
            );
        }
        match frames::free_uncached(phys, npages) {
            Err(e) => writeln!(out, "free: {e}"),
            Ok(()) => writeln!(out, "freed {npages} frames at {addr:#x}"),
        }
    }

    /// `fill PERCENT`: allocates runs of 1 to 16 frames, or frees runs this console holds
    /// (in random order, which leaves holes), until PERCENT of memory is in use.
    pub(super) fn fill(&mut self, percent: u8, out: &mut dyn Write) -> fmt::Result {
        let s = mm::stats();
        let target = s.total_pages * percent as usize / 100;
        let mut used = s.used_pages;
        let (mut allocated, mut freed) = (0usize, 0usize);
        let mut biggest = 16;
        let mut stopped = None;
        let mut oom = None;
        while used < target {
            if self.held.try_reserve(1).is_err() {
                stopped = Some("the heap has no room to record more runs");
                break;
            }
            let want = (1 + self.rng.below(biggest) as usize).min(target - used);
            match frames::alloc_uncached(FrameRequest::pages(want)) {
                Ok(f) => {
                    used += f.npages();
                    allocated += f.npages();
                    self.held.push(f);
                }
                // Memory may be too fragmented for long runs; go on with single frames.
                Err(_) if biggest > 1 => biggest = 1,
                Err(e) => {
                    stopped = Some("no free frame left in the zones");
                    oom = Some(e);
                    break;
                }
            }
        }
        while used > target && !self.held.is_empty() {
            let k = self.rng.below(self.held.len() as u64) as usize;
            let run = self.held.swap_remove(k);
            let n = run.npages();
            if let Err((run, e)) = run.free_uncached() {
                self.held.push(run);
                writeln!(out, "fill: {e}")?;
                break;
            }
            used -= n;
            freed += n;
        }
        let s = mm::stats();
        let (runs, held) = self.holding();
        // In tenths of a percent, rounded down when the target was not reached (so an
        // early stop never reads 100%), else to the nearest: frees come in whole runs.
        let total = s.total_pages.max(1);
        let permille = if stopped.is_some() {
            s.used_pages * 1000 / total
        } else {
            (s.used_pages * 1000 + total / 2) / total
        };
        writeln!(
            out,
            "fill: {}.{}% in use ({} of {} pages): allocated {allocated}, freed {freed}; \
             this console holds {held} page{} in {runs} run{}",
            permille / 10,
            permille % 10,
            s.used_pages,
            s.total_pages,
            plural(held),
            plural(runs)
        )?;
        if let Some(why) = stopped {
            writeln!(out, "fill: stopped before {percent}%: {why}")?;
            if let Some(e) = oom {
                cached_note(&e, out)?;
            }
        } else if used > target {
            writeln!(out, "fill: the rest is the kernel's own memory")?;
        }
        Ok(())
    }
}

/// After an out-of-memory error: how many of the free frames it counts sit in the CPUs'
/// page caches and free batches, which the console does not allocate from.
pub(super) fn cached_note(e: &frames::FrameError, out: &mut dyn Write) -> fmt::Result {
    let cached = mm::stats().cached_pages;
    if matches!(e, frames::FrameError::OutOfMemory { .. }) && cached > 0 {
        writeln!(
            out,
            "  ({cached} of the free frames sit in the CPUs' page caches and free batches; \
             the console allocates from the zones' allocators only)"
        )?;
    }
    Ok(())
}

/// Why `[addr, limit)` (page aligned, not empty) cannot be freed from the console: the
/// lowest page that is not grown, free, the allocator's metadata, held free by a CPU, or
/// in another zone than the first page. `None` if every page is allocated.
pub(super) fn first_problem(addr: u64, limit: u64) -> Option<FreeProblem> {
    let meta = mm::init_report().map(|r| r.metadata);
    let lowest = |a: Option<FreeProblem>, b: FreeProblem| match a {
        Some(a) if a.page() <= b.page() => Some(a),
        _ => Some(b),
    };
    let mut found: Option<FreeProblem> = None;
    if let Some(m) = meta
        && m.base < limit
        && addr < m.limit
    {
        found = lowest(found, FreeProblem::Metadata(addr.max(m.base)));
    }
    if let Some(page) = frames::held_by_a_cpu(addr, limit) {
        found = lowest(found, FreeProblem::HeldByCpu(page));
    }
    let z = Zone::of(addr);
    let zone_limit = z.range().1;
    if limit > zone_limit {
        found = lowest(found, FreeProblem::CrossesZone(zone_limit));
    }
    // Scan the bitmaps only up to the lowest problem found so far.
    let end = found.map_or(limit.min(zone_limit), |f| f.page());
    let scanned = frames::with_zones(|zones| {
        let Some(pa) = zone(zones, z) else {
            return Some(FreeProblem::NotGrown(addr));
        };
        let mut p = addr;
        while p < end {
            let Some(r) = pa
                .inspect()
                .grown()
                .iter()
                .find(|r| r.base <= p && p < r.limit)
            else {
                return Some(FreeProblem::NotGrown(p));
            };
            // Pages of one grown range, up to its end.
            while p < end.min(r.limit) {
                let allocated = pa
                    .inspect()
                    .chunk_data(ChunkIdx::of(p))
                    .is_some_and(|c| c.alloc_bits().get(chunk_page_index(p)));
                if !allocated {
                    return Some(FreeProblem::Free(p));
                }
                p += PAGE_SIZE;
            }
        }
        None
    });
    match scanned {
        Some(p) => lowest(found, p),
        None => found,
    }
}

/// What [`first_problem`] found, at which page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum FreeProblem {
    NotGrown(u64),
    Free(u64),
    Metadata(u64),
    HeldByCpu(u64),
    CrossesZone(u64),
}

impl FreeProblem {
    fn page(self) -> u64 {
        match self {
            FreeProblem::NotGrown(p)
            | FreeProblem::Free(p)
            | FreeProblem::Metadata(p)
            | FreeProblem::HeldByCpu(p)
            | FreeProblem::CrossesZone(p) => p,
        }
    }
}

impl fmt::Display for FreeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FreeProblem::NotGrown(p) => write!(
                f,
                "page {p:#x} was never grown: no allocator manages it (not usable RAM; see `map`)"
            ),
            FreeProblem::Free(p) => write!(f, "page {p:#x} is not allocated (double free?)"),
            FreeProblem::Metadata(p) => {
                write!(f, "page {p:#x} holds the allocator's metadata: never freed")
            }
            FreeProblem::HeldByCpu(p) => write!(
                f,
                "page {p:#x} is free in a CPU's page cache or free batch (double free?)"
            ),
            FreeProblem::CrossesZone(p) => write!(
                f,
                "the range crosses from zone {} into zone {} at {p:#x}: free each zone's part on its own",
                Zone::of(p - 1).name(),
                Zone::of(p).name()
            ),
        }
    }
}

/// Whether every page of the range is grown and allocated: memory the kernel owns (if
/// this console does not). Anything else the allocator refuses to free by itself.
pub(super) fn kernel_owned(zones: &Zones, addr: u64, npages: usize) -> bool {
    let Some(pa) = zone(zones, Zone::of(addr)) else {
        return false;
    };
    let Some(limit) = (npages as u64)
        .checked_mul(PAGE_SIZE)
        .and_then(|b| addr.checked_add(b))
    else {
        return false;
    };
    // Inside one grown range, so the loop below is bounded by the zone's size.
    if npages == 0
        || !addr.is_multiple_of(PAGE_SIZE)
        || !pa
            .inspect()
            .grown()
            .iter()
            .any(|r| r.base <= addr && limit <= r.limit)
    {
        return false;
    }
    (addr..limit).step_by(PAGE_SIZE as usize).all(|p| {
        pa.inspect()
            .chunk_data(ChunkIdx::of(p))
            .is_some_and(|c| c.alloc_bits().get(chunk_page_index(p)))
    })
}
