//! The harness of [`run_ops_with`](crate::run_ops_with): both allocators, what the run
//! remembers about them, and one method per op that runs it on both and compares.
//!
//! Longer than the project's ~600-line guideline on purpose: each op's method needs the
//! same private state of both allocators, and one file keeps every comparison the fuzz
//! target and the property tests rely on in one place to audit.

use std::fmt::Debug;

use pagealloc::testutil::{PAGE_CACHE_PAGES, PAGE_SIZE, PALLOC_CHUNK_PAGES, new_page_cache};
use pagealloc::{
    AddrRange, AllocError, Allocation, Constraints, Contents, FreeBatch, PageAlloc, PageCache,
    RangeOpError,
};

use crate::bits::*;
use crate::flat::*;
use crate::ops::*;

/// Both allocators and what the run remembers about them.
pub(crate) struct Harness<'m> {
    pub(crate) pa: PageAlloc<'m>,
    pub(crate) model: FlatModel,
    /// Another allocator, for foreign flushes, and a page it handed out.
    pub(crate) other: PageAlloc<'m>,
    pub(crate) other_page: u64,
    /// Allocations the caller holds, `(base, npages)`.
    pub(crate) live: Vec<(u64, usize)>,
    /// Recently freed ranges, for double frees.
    pub(crate) freed: Vec<(u64, usize)>,
    pub(crate) caches: [(PageCache<'m>, ModelCache); CPUS],
    /// Each CPU's free batch and the pages the model says it holds, oldest first.
    pub(crate) batches: [(FreeBatch<'m>, Vec<u64>); CPUS],
    /// Each CPU's last flushed cache.
    pub(crate) flushed: [Option<ModelCache>; CPUS],
    pub(crate) stats: RunStats,
    /// The current op was a refusal: compare everything afterwards.
    pub(crate) refused: bool,
    /// Check counts and invariants after every op, not only at full checks.
    pub(crate) full: bool,
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
    pub(crate) fn step(&mut self, op: &Op) -> Result<(), String> {
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

    pub(crate) fn check(&self, full: bool) -> Result<(), String> {
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
    pub(crate) fn drain(&mut self) -> Result<(), String> {
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
