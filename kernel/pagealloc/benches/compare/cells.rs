//! What a table cell holds (a metric, n/a, a failure), the run configuration, and the
//! per-cell context and timed runs.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Unit {
    Ns,
    Count,
    Ratio,
    Ms,
    KibPerGib,
}

#[derive(Clone)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) unit: Unit,
    pub(crate) value: f64,
    /// Extrapolated from part of the operations: (done, planned).
    pub(crate) partial: Option<(usize, usize)>,
}

pub(crate) enum Cell {
    /// Not applicable, with the reason.
    Na(String),
    /// Did not finish its set-up within the budget.
    Dnf(String),
    Done {
        metrics: Vec<Metric>,
        notes: Vec<String>,
        peak_heap: usize,
    },
    Failed(String),
}

/// Per-cell limits and counts.
#[derive(Clone)]
pub(crate) struct Cfg {
    pub(crate) runs: usize,
    pub(crate) budget: Duration,
    /// The most pages a fill or a set-up hands out one at a time.
    pub(crate) window_pages: usize,
    pub(crate) churn_pairs: usize,
    pub(crate) mixed_ops: usize,
    pub(crate) frag_ops: usize,
    pub(crate) doomed_ops: usize,
    pub(crate) seed: u64,
    /// Print machine-readable op counts (the `--instructions` child).
    pub(crate) child: bool,
}

/// Shared state of one cell's workload.
pub(crate) struct Ctx<'c> {
    pub(crate) cfg: &'c Cfg,
    pub(crate) bytes: u64,
    pub(crate) caps: Caps,
    pub(crate) t0: Instant,
}

impl Ctx<'_> {
    pub(crate) fn npages(&self) -> usize {
        pages_of(self.bytes)
    }

    pub(crate) fn window(&self) -> usize {
        self.npages().min(self.cfg.window_pages)
    }

    /// The end of the set-up: two budgets after the cell started.
    pub(crate) fn setup_deadline(&self) -> Instant {
        self.t0 + self.cfg.budget * 2
    }

    /// `budgets` budgets from now.
    pub(crate) fn after(&self, budgets: f64) -> Instant {
        Instant::now() + self.cfg.budget.mul_f64(budgets)
    }

    pub(crate) fn rng(&self, salt: u64) -> Rng {
        Rng::new(self.cfg.seed ^ self.bytes.rotate_left(17) ^ salt)
    }

    pub(crate) fn dnf(&self, what: &str, t: &Timed) -> Cell {
        Cell::Dnf(format!(
            "{what}: {} of {} ops in {:.0} s",
            t.done,
            t.planned,
            self.t0.elapsed().as_secs_f64()
        ))
    }
}

/// Collects metrics over runs and turns them into medians.
pub(crate) struct Runs {
    pub(crate) names: Vec<(&'static str, Unit)>,
    pub(crate) samples: Vec<Vec<f64>>,
    pub(crate) partial: Vec<Option<(usize, usize)>>,
}

impl Runs {
    /// Allocates all it needs up front, so it does not show in a peer's heap peak.
    pub(crate) fn new(names: &[(&'static str, Unit)], runs: usize) -> Runs {
        Runs {
            names: names.to_vec(),
            samples: names.iter().map(|_| Vec::with_capacity(runs)).collect(),
            partial: vec![None; names.len()],
        }
    }

    pub(crate) fn timed(&mut self, slot: usize, t: &Timed) {
        self.samples[slot].push(t.ns_per_op());
        if t.partial() {
            self.partial[slot] = Some((t.done, t.planned));
        }
    }

    pub(crate) fn value(&mut self, slot: usize, v: f64) {
        self.samples[slot].push(v);
    }

    pub(crate) fn metrics(self) -> Vec<Metric> {
        self.names
            .iter()
            .zip(self.samples)
            .zip(self.partial)
            .filter(|(((_, _), s), _)| !s.is_empty())
            .map(|(((name, unit), s), partial)| Metric {
                name,
                unit: *unit,
                value: median(s),
                partial,
            })
            .collect()
    }
}

/// Prints op counts for the `--instructions` parent: one line per metric slot.
pub(crate) fn report_ops(cfg: &Cfg, slot: usize, t: &Timed) {
    if cfg.child {
        println!("OPS slot={slot} ops={}", t.done);
    }
}

/// Frees everything in `live`, then checks that a drain gets every page back: first as
/// 2 MiB requests, then single pages. Returns a note if the check ran out of time.
pub(crate) fn teardown_and_drain<P: Peer>(
    ctx: &Ctx<'_>,
    p: &mut P,
    live: &[(u64, usize)],
    err: &mut Option<String>,
) -> Option<String> {
    // Rebuild the shadow from what the bench believes is live: any overlap is a bug that
    // the timed runs (which ran unchecked) introduced.
    let mut shadow = Shadow::new(ctx.npages());
    for &(a, n) in live {
        if let Err(e) = shadow.take(a, p.consumed_pages(n), 1) {
            err.get_or_insert(format!("after the timed runs: {e}"));
            return None;
        }
    }
    let mut c = Checked {
        p,
        shadow: &mut shadow,
        err,
    };
    let deadline = ctx.after(2.0);
    let t = timed_loop(live.len(), deadline, |i| {
        c.free(live[i].0, live[i].1);
        true
    });
    if t.partial() {
        return Some("leak check skipped: teardown ran out of time".into());
    }
    c.flush();
    let expect = c.capacity_pages();
    let mut got: Vec<(u64, usize)> = Vec::with_capacity(expect / HUGE_PAGES + 1024);
    let mut pages = 0;
    if ctx.caps.multi {
        let t = timed_loop(usize::MAX, deadline, |_| match c.alloc(HUGE_PAGES) {
            Some(a) => {
                got.push((a, HUGE_PAGES));
                true
            }
            None => false,
        });
        if Instant::now() >= deadline {
            return Some("leak check skipped: drain ran out of time".into());
        }
        pages += t.done * HUGE_PAGES;
    }
    let t = timed_loop(usize::MAX, deadline, |_| match c.alloc(1) {
        Some(a) => {
            got.push((a, 1));
            true
        }
        None => false,
    });
    if Instant::now() >= deadline {
        return Some("leak check skipped: drain ran out of time".into());
    }
    pages += t.done;
    if pages != expect {
        c.fail(format!(
            "leak: after freeing everything only {pages} of {expect} pages could be allocated"
        ));
    }
    for &(a, n) in &got {
        c.free(a, n);
    }
    c.flush();
    None
}

pub(crate) fn finish(
    err: Option<String>,
    metrics: Vec<Metric>,
    mut notes: Vec<String>,
    leak_note: Option<String>,
    peak_heap: usize,
) -> Cell {
    if let Some(e) = err {
        return Cell::Failed(e);
    }
    notes.extend(leak_note);
    Cell::Done {
        metrics,
        notes,
        peak_heap,
    }
}

// ---------------------------------------------------------------------------------------
// Workloads.
