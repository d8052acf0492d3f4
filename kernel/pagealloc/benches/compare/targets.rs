//! Issue 11's targets, judged from one run's own cells and printed after the tables.
//! Nothing here asserts: a missed target is a line that says "MISSED".

use super::*;

/// A run's cells: per workload, rows x sizes, in the order of `rows` and `sizes`.
pub(crate) struct Results<'a> {
    pub(crate) rows: &'a [Row],
    pub(crate) sizes: &'a [u64],
    pub(crate) tables: &'a [(Workload, Vec<Vec<Cell>>)],
    /// Values are instructions per op (`--instructions`), not ns.
    pub(crate) instructions: bool,
    pub(crate) init_baseline: Option<f64>,
}

impl Results<'_> {
    /// Metric `idx` (in table order) of row `key` at size index `si`.
    fn get(&self, w: Workload, key: &str, si: usize, idx: usize) -> Option<f64> {
        let (_, table) = self.tables.iter().find(|(tw, _)| *tw == w)?;
        let ri = self.rows.iter().position(|r| r.key == key)?;
        match table.get(ri)?.get(si)? {
            Cell::Done { metrics, .. } => metrics.get(idx).map(|m| m.value),
            _ => None,
        }
    }

    fn name(&self, key: &str) -> &'static str {
        self.rows
            .iter()
            .find(|r| r.key == key)
            .map_or("?", |r| r.name)
    }

    /// A time (ns) or an instruction count, as this run measured.
    fn fmt(&self, v: f64) -> String {
        if self.instructions {
            format!("{v:.0} instr.")
        } else {
            // `fmt_ns` names the unit itself from 1 us up.
            let t = fmt_ns(v);
            if t.ends_with(|c: char| c.is_ascii_digit()) {
                format!("{t} ns")
            } else {
                t
            }
        }
    }

    /// Ours / peer per size, judged at the worst size: "at most `max` x the peer".
    fn ratio_line(&self, what: &str, w: Workload, idx: usize, peer: &str, max: f64) {
        let mut per_size = Vec::new();
        let mut worst: Option<(f64, f64, f64, usize)> = None;
        for si in 0..self.sizes.len() {
            if let (Some(v), Some(pv)) = (self.get(w, "ours", si, idx), self.get(w, peer, si, idx))
            {
                let r = v / pv;
                per_size.push(format!("{} {}", size_name(self.sizes[si]), fmt_ratio(r)));
                if worst.is_none_or(|(_, _, wr, _)| r > wr) {
                    worst = Some((v, pv, r, si));
                }
            }
        }
        let target = format!("at most {max}x {peer} at every size");
        match worst {
            Some((v, pv, r, si)) => line(
                what,
                &format!(
                    "{} vs {} = {} (worst, {}; {})",
                    self.fmt(v),
                    self.fmt(pv),
                    fmt_ratio(r),
                    size_name(self.sizes[si]),
                    per_size.join(", ")
                ),
                &target,
                Some(r <= max),
            ),
            None => line(what, "no cells to compare", &target, None),
        }
    }
}

fn line(what: &str, value: &str, target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    };
    println!("  {what:34} {value}");
    println!("  {:34} target: {target}: {verdict}", "");
}

/// Prints one block with every target of issue 11 this run can judge.
pub(crate) fn print_targets(res: &Results<'_>) {
    let unit = if res.instructions {
        "instructions per op"
    } else {
        "time per op, median of the runs"
    };
    println!();
    println!("## issue 11 targets ({unit}; ours = {})", res.name("ours"));
    println!();
    res.ratio_line(
        "uncached single-page alloc (fill)",
        Workload::Fill,
        0,
        "bitmap",
        2.0,
    );
    res.ratio_line(
        "uncached single-page free (fill)",
        Workload::Fill,
        1,
        "bitmap",
        2.0,
    );
    res.ratio_line(
        "2 MiB aligned alloc (huge)",
        Workload::Huge,
        0,
        "freelist",
        2.0,
    );
    res.ratio_line("2 MiB free (huge)", Workload::Huge, 2, "freelist", 2.0);
    res.ratio_line(
        "mixed exact sizes, per pair",
        Workload::Mixed,
        0,
        "framealloc",
        1.0,
    );

    // Mixed: exact sizes and no failures, at every size.
    let (mut cr, mut fail, mut n) = (f64::MIN, f64::MIN, 0);
    for si in 0..res.sizes.len() {
        if let (Some(f), Some(c)) = (
            res.get(Workload::Mixed, "ours", si, 1),
            res.get(Workload::Mixed, "ours", si, 2),
        ) {
            fail = fail.max(f);
            cr = cr.max(c);
            n += 1;
        }
    }
    let fa_cr: Vec<String> = (0..res.sizes.len())
        .filter_map(|si| res.get(Workload::Mixed, "framealloc", si, 2))
        .map(|c| format!("{c:.2}"))
        .collect();
    let target = "consumed/requested exactly 1.00 and 0 failures at every size";
    if n == 0 {
        line("mixed: consumed/requested, fails", "no cells", target, None);
    } else {
        line(
            "mixed: consumed/requested, fails",
            &format!(
                "worst c/r {cr:.4}, worst {fail:.0} failed per 1000 pairs over {n} size(s) (framealloc c/r {})",
                if fa_cr.is_empty() {
                    "-".into()
                } else {
                    fa_cr.join(", ")
                }
            ),
            target,
            Some((cr - 1.0).abs() < 1e-9 && fail == 0.0),
        );
    }

    // Fragmented doomed request: flat over the sizes.
    let doomed: Vec<(u64, f64)> = (0..res.sizes.len())
        .filter_map(|si| {
            res.get(Workload::Fragmented, "ours", si, 0)
                .map(|v| (res.sizes[si], v))
        })
        .collect();
    // Time is noisy on a shared machine; instructions are exact.
    let flat = if res.instructions { 1.1 } else { 1.5 };
    let target = format!("flat: max/min over the sizes at most {flat}x");
    if doomed.len() < 2 {
        line(
            "fragmented doomed 2-page request",
            "needs at least two sizes (--sizes 256M,...,1T)",
            &target,
            None,
        );
    } else {
        let max = doomed.iter().map(|d| d.1).fold(f64::MIN, f64::max);
        let min = doomed.iter().map(|d| d.1).fold(f64::MAX, f64::min);
        let all: Vec<String> = doomed
            .iter()
            .map(|(s, v)| format!("{} {}", size_name(*s), res.fmt(*v)))
            .collect();
        line(
            "fragmented doomed 2-page request",
            &format!("max/min {} ({})", fmt_ratio(max / min), all.join(", ")),
            &target,
            Some(max / min <= flat),
        );
    }

    // Init and metadata at the largest size this run has for ours.
    let Some(si) = (0..res.sizes.len())
        .rev()
        .find(|&si| res.get(Workload::Init, "ours", si, 0).is_some())
    else {
        line("init", "no init cells", "-", None);
        println!();
        return;
    };
    let size = size_name(res.sizes[si]);
    let init = res.get(Workload::Init, "ours", si, 0).unwrap_or(f64::NAN);
    let fmt_init = |v: f64| {
        if res.instructions {
            format!("{v:.0} instr.")
        } else {
            format!("{v:.2} ms")
        }
    };
    let peer = res
        .get(Workload::Init, "bitmap", si, 0)
        .map(|pv| format!(" (bitmap-allocator {})", fmt_init(pv)))
        .unwrap_or_default();
    let (baseline, met) = match res.init_baseline {
        Some(b) => (
            format!(", {} of the baseline {}", fmt_ratio(init / b), fmt_init(b)),
            Some(init * 2.0 <= b),
        ),
        None => (", no --init-baseline given".into(), None),
    };
    line(
        &format!("init, {size}"),
        &format!("{}{peer}{baseline}", fmt_init(init)),
        "at most 0.5x the baseline (ours before issue 11, same machine and mode)",
        met,
    );
    // Metric 1 in both modes: after the time (or instruction count) of the build.
    let md_idx = 1;
    if let Some(md) = res.get(Workload::Init, "ours", si, md_idx) {
        let peer = res
            .get(Workload::Init, "bitmap", si, md_idx)
            .map(|pv| format!(" (bitmap-allocator {pv:.1})"))
            .unwrap_or_default();
        line(
            &format!("metadata KiB per GiB, {size}"),
            &format!("{md:.1}{peer}"),
            "at most 48 with known-zero tracking",
            Some(md <= 48.0),
        );
    }
    if let Some(md) = res.get(Workload::Init, "ours-nozero", si, md_idx) {
        line(
            &format!("metadata KiB per GiB without known-zero, {size}"),
            &format!("{md:.1}"),
            "at most 40 (ours-nozero: `MetadataLayout::without_known_zero`)",
            Some(md <= 40.0),
        );
    }
    println!();
}
