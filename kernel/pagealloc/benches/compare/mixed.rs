//! The workloads that mix request sizes: mixed, huge, fragment, and init.

use super::*;

pub(crate) struct MixedW<'c>(pub(crate) Ctx<'c>);

/// One step of the mixed workload; the same three random words are drawn every step, so
/// the sequence stays the same for every allocator.
#[derive(Clone, Copy)]
pub(crate) struct MixedStep {
    pub(crate) coin: u64,
    pub(crate) npages: usize,
    pub(crate) pick: u64,
}

impl MixedStep {
    pub(crate) fn draw(rng: &mut Rng) -> MixedStep {
        let coin = rng.next();
        let npages = 1 + rng.below(HUGE_PAGES);
        let pick = rng.next();
        MixedStep { coin, npages, pick }
    }
}

pub(crate) struct MixedState {
    pub(crate) live: Vec<(u64, usize)>,
    pub(crate) requested: usize,
    pub(crate) failures: usize,
    pub(crate) npages: usize,
}

impl MixedState {
    #[inline(always)]
    pub(crate) fn step<P: Peer>(&mut self, p: &mut P, s: MixedStep) {
        let occ = self.requested as f64 / self.npages as f64;
        let alloc = self.live.is_empty() || occ < 0.5 || (occ < 0.8 && s.coin & 1 == 0);
        if alloc {
            match p.alloc(s.npages) {
                Some(a) => {
                    self.live.push((a, s.npages));
                    self.requested += s.npages;
                }
                None => self.failures += 1,
            }
        } else {
            let (a, n) = self.live.swap_remove(scale(s.pick, self.live.len()));
            p.free(a, n);
            self.requested -= n;
        }
    }
}

impl Visitor for MixedW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let n = ctx.npages();
        let mut shadow = Shadow::new(n);
        let mut err = None;
        let mut st = MixedState {
            live: Vec::with_capacity(n / 128 + 4096),
            requested: 0,
            failures: 0,
            npages: n,
        };
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        // Set-up: random sizes up to 65% occupancy.
        let mut rng = ctx.rng(10);
        let t = timed_loop(usize::MAX, ctx.setup_deadline(), |_| {
            let npages = 1 + rng.below(HUGE_PAGES);
            match c.alloc(npages) {
                Some(a) => {
                    st.live.push((a, npages));
                    st.requested += npages;
                }
                None => st.failures += 1,
            }
            st.requested * 100 < n * 65 && st.failures < 1000
        });
        if Instant::now() >= ctx.setup_deadline() {
            return ctx.dnf(
                "set-up (65% occupancy)",
                &Timed {
                    planned: n * 65 / 100 / 256,
                    ..t
                },
            );
        }
        let ops = ctx.cfg.mixed_ops;
        let mut steps: Vec<MixedStep> = Vec::with_capacity(ops);
        let mut runs = Runs::new(
            &[("", Unit::Ns), ("fail", Unit::Count), ("c/r", Unit::Ratio)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();
        let mut rng = ctx.rng(11);
        st.failures = 0;
        let t = timed_loop(ops, ctx.after(0.5), |_| {
            st.step(&mut c, MixedStep::draw(&mut rng));
            true
        });
        if t.done < 2 {
            return ctx.dnf("checked mixed", &t);
        }
        let k = t.done;
        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            let mut rng = ctx.rng(12 + run as u64);
            st.failures = 0;
            // The draws are made before the timed loop, so the random numbers are not timed.
            steps.clear();
            steps.extend((0..k).map(|_| MixedStep::draw(&mut rng)));
            let t = measure_0(k, run_cut, |i| {
                st.step(p, steps[i]);
                true
            });
            // Two ops make a pair.
            let t = Timed {
                done: t.done / 2,
                planned: ops / 2,
                ns: t.ns,
            };
            runs.timed(0, &t);
            report_ops(ctx.cfg, 0, &t);
            runs.value(1, st.failures as f64 * 1000.0 / t.done.max(1) as f64);
            let req: usize = st.live.iter().map(|&(_, n)| n).sum();
            let cons: usize = st.live.iter().map(|&(_, n)| p.consumed_pages(n)).sum();
            runs.value(2, cons as f64 / req.max(1) as f64);
        }
        let peak = heap_peak() - base_heap;
        let leak = teardown_and_drain(ctx, p, &st.live, &mut err);
        finish(err, runs.metrics(), Vec::new(), leak, peak)
    }
}

pub(crate) struct HugeW<'c>(pub(crate) Ctx<'c>);

impl Visitor for HugeW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let n = ctx.npages();
        let mut shadow = Shadow::new(n);
        let mut err = None;
        let mut live: Vec<u64> = Vec::with_capacity(n / HUGE_PAGES + 1);
        let mut runs = Runs::new(
            &[("a", Unit::Ns), ("d", Unit::Ns), ("f", Unit::Ns)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let ta = timed_loop(usize::MAX, ctx.setup_deadline(), |_| {
            match c.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                Some(a) => {
                    live.push(a);
                    true
                }
                None => false,
            }
        });
        if Instant::now() >= ctx.setup_deadline() {
            return ctx.dnf(
                "checked fill with 2 MiB frames",
                &Timed {
                    planned: n / HUGE_PAGES,
                    ..ta
                },
            );
        }
        let blocks = live.len();
        let want = c.capacity_pages() / HUGE_PAGES;
        if blocks + 1 < want {
            c.fail(format!(
                "only {blocks} 2 MiB frames of {want} could be allocated"
            ));
        }
        let td = timed_loop(ctx.cfg.doomed_ops, ctx.after(0.5), |_| {
            if let Some(a) = c.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                live.push(a);
            }
            true
        });
        if live.len() > blocks {
            c.fail("a 2 MiB request succeeded after the fill had failed".into());
        }
        let k_doomed = td.done.max(1);
        for &a in &live {
            c.free(a, HUGE_PAGES);
        }
        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            live.clear();
            let t = measure_0(usize::MAX, run_cut, |_| {
                match p.alloc_aligned(HUGE_PAGES, HUGE_PAGES) {
                    Some(a) => {
                        live.push(a);
                        true
                    }
                    None => false,
                }
            });
            runs.timed(
                0,
                &Timed {
                    planned: t.done,
                    ..t
                },
            );
            report_ops(ctx.cfg, 0, &t);
            let t = measure_1(k_doomed, run_cut, |_| {
                p.alloc_aligned(HUGE_PAGES, HUGE_PAGES).is_none()
            });
            runs.timed(
                1,
                &Timed {
                    planned: ctx.cfg.doomed_ops,
                    ..t
                },
            );
            report_ops(ctx.cfg, 1, &t);
            let t = measure_2(live.len(), ctx.after(1.0), |i| p.free(live[i], HUGE_PAGES));
            runs.timed(2, &t);
            report_ops(ctx.cfg, 2, &t);
            if t.partial() {
                for &a in &live[t.done..] {
                    p.free(a, HUGE_PAGES);
                }
                break;
            }
        }
        let peak = heap_peak() - base_heap;
        live.clear();
        let leak = teardown_and_drain(ctx, p, &[], &mut err);
        finish(err, runs.metrics(), Vec::new(), leak, peak)
    }
}

pub(crate) struct FragW<'c>(pub(crate) Ctx<'c>);

impl Visitor for FragW<'_> {
    type Out = Cell;

    fn visit<P: Peer>(self, p: &mut P, _: InitStats) -> Cell {
        let ctx = &self.0;
        let mut shadow = Shadow::new(ctx.npages());
        let mut err = None;
        let mut notes = Vec::new();
        if ctx.window() < ctx.npages() {
            notes.push(format!(
                "pattern over the lowest {} GiB, the rest allocated as 2 MiB blocks",
                ctx.window() as u64 * PAGE / GIB
            ));
        }
        let mut c = Checked {
            p: &mut *p,
            shadow: &mut shadow,
            err: &mut err,
        };
        let Filled {
            singles: mut used,
            background,
        } = match fill_all(ctx, &mut c) {
            Ok(f) => f,
            Err(cell) => return cell,
        };
        // Free every other page in address order.
        used.sort_unstable();
        let odd: Vec<u64> = used.iter().skip(1).step_by(2).copied().collect();
        let t = timed_loop(odd.len(), ctx.setup_deadline(), |i| c.free(odd[i], 1));
        if t.partial() {
            return ctx.dnf("set-up (free every other page)", &t);
        }
        used = used.iter().step_by(2).copied().collect();
        drop(odd);
        let holes_n = ctx.cfg.frag_ops.min(used.len());
        let mut holes: Vec<u64> = Vec::with_capacity(holes_n);
        let mut order: Vec<usize> = (0..holes_n).collect();
        let mut runs = Runs::new(
            &[("d", Unit::Ns), ("h", Unit::Ns), ("f", Unit::Ns)],
            ctx.cfg.runs,
        );
        let base_heap = heap_peak_reset();

        // Checked pass.
        let mut doomed_ok = 0;
        let td = timed_loop(ctx.cfg.doomed_ops, ctx.after(0.5), |_| {
            if let Some(a) = c.alloc(2) {
                doomed_ok += 1;
                c.free(a, 2);
            }
            true
        });
        if doomed_ok > 0 {
            c.fail(format!(
                "{doomed_ok} 2-page requests succeeded in a heap without 2 free pages in a row"
            ));
        }
        let holes_deadline = ctx.after(0.5);
        let th = alloc_singles(&mut c, holes_n, holes_deadline, &mut holes);
        if th.done < holes_n && Instant::now() < holes_deadline {
            c.fail(format!(
                "only {} of {holes_n} holes could be allocated",
                th.done
            ));
        }
        let mut rng = ctx.rng(20);
        shuffle(&mut order[..holes.len()], &mut rng);
        for &i in &order[..holes.len()] {
            c.free(holes[i], 1);
        }
        c.flush();
        if td.done == 0 || th.done == 0 {
            return ctx.dnf("checked pass", &td);
        }
        let (kd, kh) = (td.done, th.done);

        let (runs_end, run_cut) = (ctx.after(1.0), ctx.after(2.0));
        for run in 0..ctx.cfg.runs {
            if run > 0 && Instant::now() >= runs_end {
                break;
            }
            let t = measure_0(kd, run_cut, |_| p.alloc(2).is_none());
            runs.timed(
                0,
                &Timed {
                    planned: ctx.cfg.doomed_ops,
                    ..t
                },
            );
            report_ops(ctx.cfg, 0, &t);
            holes.clear();
            let t = measure_1(kh, run_cut, |_| match p.alloc(1) {
                Some(a) => {
                    holes.push(a);
                    true
                }
                None => false,
            });
            runs.timed(
                1,
                &Timed {
                    planned: holes_n,
                    ..t
                },
            );
            report_ops(ctx.cfg, 1, &t);
            let mut rng = ctx.rng(20);
            shuffle(&mut order[..holes.len()], &mut rng);
            let t = measure_2(holes.len(), ctx.after(1.0), |i| p.free(holes[order[i]], 1));
            runs.timed(
                2,
                &Timed {
                    planned: holes_n,
                    ..t
                },
            );
            report_ops(ctx.cfg, 2, &t);
            p.flush();
            if t.partial() {
                for &i in &order[t.done..holes.len()] {
                    p.free(holes[i], 1);
                }
                break;
            }
        }
        let peak = heap_peak() - base_heap;
        let mut all: Vec<(u64, usize)> = used.iter().map(|&a| (a, 1)).collect();
        all.extend(background);
        let leak = teardown_and_drain(ctx, p, &all, &mut err);
        finish(err, runs.metrics(), notes, leak, peak)
    }
}

pub(crate) fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

pub(crate) struct InitW;

impl Visitor for InitW {
    type Out = InitStats;

    fn visit<P: Peer>(self, _: &mut P, init: InitStats) -> InitStats {
        init
    }
}

// ---------------------------------------------------------------------------------------
// Driver.
