//! Running the table's rows and printing the tables, ratios and notes.

use super::*;

/// One row of the tables.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) key: &'static str,
    pub(crate) caps: Caps,
    pub(crate) run: fn(Workload, &Cfg, u64) -> Cell,
}

pub(crate) fn row<S: Subject>() -> Row {
    Row {
        name: S::NAME,
        key: S::KEY,
        caps: S::CAPS,
        run: run_cell::<S>,
    }
}

pub(crate) fn run_cell<S: Subject>(w: Workload, cfg: &Cfg, bytes: u64) -> Cell {
    if let Some(why) = w.needs(S::CAPS) {
        return Cell::Na(why.into());
    }
    let ctx = Ctx {
        cfg,
        bytes,
        caps: S::CAPS,
        t0: Instant::now(),
    };
    let out = match w {
        Workload::Fill => S::with(bytes, FillW(ctx)),
        Workload::Churn => S::with(bytes, ChurnW(ctx)),
        Workload::Mixed => S::with(bytes, MixedW(ctx)),
        Workload::Huge => S::with(bytes, HugeW(ctx)),
        Workload::Fragmented => S::with(bytes, FragW(ctx)),
        Workload::Init => return run_init::<S>(cfg, bytes),
    };
    out.unwrap_or_else(Cell::Na)
}

pub(crate) fn run_init<S: Subject>(cfg: &Cfg, bytes: u64) -> Cell {
    let t0 = Instant::now();
    let (mut ms, mut heap) = (Vec::new(), 0);
    for run in 0..cfg.runs.max(3) {
        if run > 0 && t0.elapsed() >= cfg.budget {
            break;
        }
        match S::with(bytes, InitW) {
            Ok(s) => {
                if cfg.child {
                    println!("OPS slot=0 ops=1");
                }
                ms.push(s.ns / 1e6);
                heap = s.heap_bytes;
            }
            Err(e) => return Cell::Na(e),
        }
    }
    let gib = bytes as f64 / GIB as f64;
    let metrics = vec![
        Metric {
            name: "",
            unit: Unit::Ms,
            value: median(ms),
            partial: None,
        },
        Metric {
            name: "",
            unit: Unit::KibPerGib,
            value: heap as f64 / 1024.0 / gib,
            partial: None,
        },
    ];
    Cell::Done {
        metrics,
        notes: Vec::new(),
        peak_heap: 0,
    }
}

pub(crate) fn rows() -> Vec<Row> {
    vec![
        row::<TutorialS>(),
        row::<FirstFitS>(),
        row::<BitmapS>(),
        row::<BuddyS>(),
        row::<FreeListS>(),
        row::<FrameAllocS>(),
        row::<OursS<true>>(),
        row::<OursS<false>>(),
        row::<OursCachedS>(),
    ]
}

pub(crate) fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 1000.0 {
        format!("{ns:.0}")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.1}s", ns / 1e9)
    }
}

pub(crate) fn fmt_metric(m: &Metric) -> String {
    let v = match m.unit {
        Unit::Ns => fmt_ns(m.value),
        Unit::Count => format!("{:.0}", m.value),
        Unit::Ratio => format!("{:.2}", m.value),
        Unit::Ms => {
            let ns = m.value * 1e6;
            if ns < 1000.0 {
                format!("{ns:.0}ns")
            } else {
                fmt_ns(ns)
            }
        }
        Unit::KibPerGib => format!("{:.1}K", m.value),
    };
    let approx = if m.partial.is_some() { "~" } else { "" };
    if m.name.is_empty() {
        format!("{approx}{v}")
    } else {
        format!("{} {approx}{v}", m.name)
    }
}

pub(crate) fn fmt_ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}x")
    } else {
        format!("{r:.0}x")
    }
}

pub(crate) fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 40 && bytes.is_multiple_of(1 << 40) {
        format!("{} TiB", bytes >> 40)
    } else if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .to_ascii_uppercase()
        .as_str()
    {
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("bad size unit in {s:?} (use M, G or T)")),
    };
    let bytes = n << shift;
    if bytes == 0 || !bytes.is_multiple_of(2 << 20) {
        return Err(format!("size {s:?} must be a non-zero multiple of 2 MiB"));
    }
    Ok(bytes)
}

pub(crate) fn header(opts: &Opts) {
    let c = &opts.cfg;
    println!(
        "pagealloc comparison: {} run(s) per cell (median), budget {:.1} s per cell, seed {:#x}",
        c.runs,
        c.budget.as_secs_f64(),
        c.seed
    );
    println!(
        "window for one-page-at-a-time set-ups: {} GiB; churn {} pairs, mixed {} ops, fragmented {} holes and {} doomed requests per run",
        c.window_pages as u64 * PAGE / GIB,
        c.churn_pairs,
        c.mixed_ops,
        c.frag_ops,
        c.doomed_ops
    );
    println!(
        "'~' = extrapolated from the ops that fit in the budget; see the notes under each table"
    );
    println!();
}

pub(crate) fn print_table(w: Workload, rows: &[Row], sizes: &[u64], table: &[Vec<Cell>]) {
    let mut notes: Vec<String> = Vec::new();
    let mut note = |s: String| -> usize {
        if let Some(i) = notes.iter().position(|n| *n == s) {
            i + 1
        } else {
            notes.push(s);
            notes.len()
        }
    };
    let texts: Vec<Vec<String>> = table
        .iter()
        .zip(rows)
        .map(|(cells, r)| {
            cells
                .iter()
                .zip(sizes)
                .map(|(c, &s)| match c {
                    Cell::Na(why) => format!("n/a [{}]", note(format!("{}: {why}", r.name))),
                    Cell::Dnf(why) => format!(
                        "dnf [{}]",
                        note(format!(
                            "{} at {}: did not finish, {why}",
                            r.name,
                            size_name(s)
                        ))
                    ),
                    Cell::Failed(e) => format!(
                        "CHECK FAILED [{}]",
                        note(format!("{} at {}: {e}", r.name, size_name(s)))
                    ),
                    Cell::Done {
                        metrics, notes: cn, ..
                    } => {
                        let mut t = metrics.iter().map(fmt_metric).collect::<Vec<_>>().join(" ");
                        let mut refs = Vec::new();
                        for n in cn {
                            refs.push(note(format!("{} at {}: {n}", r.name, size_name(s))));
                        }
                        if let Some((done, planned)) = metrics.iter().find_map(|m| m.partial) {
                            refs.push(note(format!(
                                "{} at {}: '~' extrapolated from {done} of {planned} ops",
                                r.name,
                                size_name(s)
                            )));
                        }
                        if !refs.is_empty() {
                            let refs: Vec<String> = refs.iter().map(usize::to_string).collect();
                            write!(t, " [{}]", refs.join(",")).unwrap();
                        }
                        t
                    }
                })
                .collect()
        })
        .collect();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(9);
    let col_w: Vec<usize> = (0..sizes.len())
        .map(|si| {
            texts
                .iter()
                .map(|r| r[si].len())
                .max()
                .unwrap_or(0)
                .max(size_name(sizes[si]).len())
        })
        .collect();
    println!("## {}", w.title());
    println!("{}", w.legend());
    println!();
    let mut line = format!("| {:name_w$} |", "allocator");
    for (si, &s) in sizes.iter().enumerate() {
        write!(line, " {:>width$} |", size_name(s), width = col_w[si]).unwrap();
    }
    println!("{line}");
    let mut sep = format!("|{}|", "-".repeat(name_w + 2));
    for &cw in &col_w {
        write!(sep, "{}:|", "-".repeat(cw + 1)).unwrap();
    }
    println!("{sep}");
    for (r, t) in rows.iter().zip(&texts) {
        let mut line = format!("| {:name_w$} |", r.name);
        for (si, cell) in t.iter().enumerate() {
            write!(line, " {:>width$} |", cell, width = col_w[si]).unwrap();
        }
        println!("{line}");
    }
    println!();
    print_ratios(w, rows, sizes, table);
    for (i, n) in notes.iter().enumerate() {
        println!("[{}] {n}", i + 1);
    }
    println!();
}

/// Ours against the peers, per time metric: the fastest peer (lower is better) and, for
/// mixed and fragmented, the exact-size peers the targets name.
pub(crate) fn print_ratios(w: Workload, rows: &[Row], sizes: &[u64], table: &[Vec<Cell>]) {
    let ours: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.key, "ours" | "ours-nozero" | "cached"))
        .map(|(i, _)| i)
        .collect();
    if ours.is_empty() || w == Workload::Init {
        return;
    }
    let time_metrics = |c: &Cell| -> Vec<(String, f64)> {
        match c {
            Cell::Done { metrics, .. } => metrics
                .iter()
                .filter(|m| m.unit == Unit::Ns || m.unit == Unit::Ms)
                .map(|m| (m.name.to_string(), m.value))
                .collect(),
            _ => Vec::new(),
        }
    };
    let peers: Vec<usize> = (0..rows.len()).filter(|i| !ours.contains(i)).collect();
    let exact_peers: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|&i| matches!(rows[i].key, "bitmap" | "freelist"))
        .collect();
    println!(
        "time of ours / time of the fastest peer (below 1x = faster than every peer); for mixed and fragmented also the speed-up over the exact-size peers (their time / ours):"
    );
    for &oi in &ours {
        let mut line = format!("  {:24}", rows[oi].name);
        for (si, &s) in sizes.iter().enumerate() {
            let mine = time_metrics(&table[oi][si]);
            if mine.is_empty() {
                write!(line, " | {}: -", size_name(s)).unwrap();
                continue;
            }
            let mut parts = Vec::new();
            for (name, v) in &mine {
                let best = peers
                    .iter()
                    .filter_map(|&pi| {
                        time_metrics(&table[pi][si])
                            .into_iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, pv)| (pv, pi))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let label = if name.is_empty() {
                    String::new()
                } else {
                    format!("{name} ")
                };
                match best {
                    Some((pv, pi)) => {
                        parts.push(format!("{label}{} of {}", fmt_ratio(v / pv), rows[pi].key))
                    }
                    None => parts.push(format!("{label}-")),
                }
                if matches!(w, Workload::Mixed | Workload::Fragmented) {
                    for &pi in &exact_peers {
                        let pv = time_metrics(&table[pi][si])
                            .into_iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, pv)| pv);
                        match (&table[pi][si], pv) {
                            (_, Some(pv)) => parts.push(format!(
                                "{} speed-up {}",
                                rows[pi].key,
                                fmt_ratio(pv / v)
                            )),
                            (Cell::Dnf(_), None) => parts.push(format!("{} dnf", rows[pi].key)),
                            _ => {}
                        }
                    }
                }
            }
            write!(line, " | {}: {}", size_name(s), parts.join(", ")).unwrap();
        }
        println!("{line}");
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Instruction counts: re-run each cell under callgrind and divide the instructions of
// each timed loop (`measure_N`, callees included) by its op count.

pub(crate) fn instructions(opts: &Opts, rows: &[Row]) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir();
    let sizes: Vec<u64> = if opts.sizes_given {
        opts.sizes.clone()
    } else {
        vec![256 << 20]
    };
    println!("instructions per op under callgrind (--runs 1, --quick op counts), timed loops only");
    let mut tables = Vec::new();
    for &w in &opts.only {
        println!();
        println!("## {}: instructions per op", w.title());
        let mut table = Vec::new();
        for r in rows {
            let mut cells = Vec::new();
            for &s in &sizes {
                if let Some(why) = w.needs(r.caps) {
                    cells.push(Cell::Na(why.into()));
                    continue;
                }
                let Some(cell) = instructions_cell(&exe, &dir, opts, w, r, s) else {
                    return;
                };
                let parts: Vec<String> = match &cell {
                    Cell::Done { metrics, .. } => metrics.iter().map(fmt_metric).collect(),
                    Cell::Na(e) | Cell::Dnf(e) | Cell::Failed(e) => vec![format!("({e})")],
                };
                println!("  {:28} {:>8}: {}", r.name, size_name(s), parts.join(", "));
                cells.push(cell);
            }
            table.push(cells);
        }
        tables.push((w, table));
    }
    print_targets(&Results {
        rows,
        sizes: &sizes,
        tables: &tables,
        instructions: true,
        init_baseline: opts.init_baseline,
    });
}

/// One cell under callgrind: its time metrics replaced by instructions per op (unit
/// `Count`, named by the loop), its other metrics (failures, c/r, KiB per GiB) as the
/// child measured them. None if valgrind cannot be run.
fn instructions_cell(
    exe: &std::path::Path,
    dir: &std::path::Path,
    opts: &Opts,
    w: Workload,
    r: &Row,
    s: u64,
) -> Option<Cell> {
    let out_file = dir.join(format!(
        "compare-callgrind-{}-{}-{}.out",
        w.key(),
        r.key,
        s >> 20
    ));
    let budget = format!("{}", opts.cfg.budget.as_secs_f64() * 20.0);
    let size = format!("{}M", s >> 20);
    let child = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--dump-instr=no"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args([
            "--child", "--quick", "--runs", "1", "--budget", &budget, "--sizes", &size,
        ])
        .args(["--only", w.key(), "--peers", r.key])
        .output();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("cannot run valgrind: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&child.stdout);
    let mut ops = [0usize; 3];
    let mut measured: Vec<f64> = Vec::new();
    let mut cell_note = None;
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix("OPS ") {
            let kv: BTreeMap<&str, usize> = rest
                .split(' ')
                .filter_map(|p| p.split_once('='))
                .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
                .collect();
            ops[kv["slot"]] += kv["ops"];
        } else if let Some(rest) = l.strip_prefix("METRIC ") {
            measured.push(rest.trim().parse().unwrap_or(f64::NAN));
        } else if let Some(rest) = l.strip_prefix("CELL ") {
            cell_note = Some(rest.to_string());
        }
    }
    let annotate = std::process::Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&out_file)
        .output();
    let text = annotate
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    // Inclusive instructions of each slot's loop. Several lines may name one slot (one
    // per instance); within one cell's child they all belong to that slot.
    let mut ir = [0u64; 3];
    let loop_names = ["::measure_0::<", "::measure_1::<", "::measure_2::<"];
    let init_name = "::measure_init::<";
    for l in text.lines() {
        let slot = if w == Workload::Init {
            l.contains(init_name).then_some(0)
        } else {
            loop_names.iter().position(|n| l.contains(n))
        };
        if let Some(slot) = slot {
            let n: String = l
                .trim_start()
                .split(' ')
                .next()
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            ir[slot] += n.parse::<u64>().unwrap_or(0);
        }
    }
    if let Some(e) = cell_note {
        return Some(Cell::Na(e));
    }
    let labels: &[&str] = match w {
        Workload::Fill => &["alloc", "free"],
        Workload::Huge => &["alloc", "doomed", "free"],
        Workload::Fragmented => &["doomed", "hole", "free"],
        Workload::Init => &["build"],
        _ => &["pair"],
    };
    // The child's metrics in table order: the time metrics first, one per slot.
    let mut metrics = Vec::new();
    for (slot, label) in labels.iter().enumerate() {
        if ops[slot] > 0 {
            metrics.push(Metric {
                name: label,
                unit: Unit::Count,
                value: ir[slot] as f64 / ops[slot] as f64,
                partial: None,
            });
        }
    }
    let (names, units): (&[&'static str], &[Unit]) = match w {
        Workload::Mixed => (&["fail", "c/r"], &[Unit::Count, Unit::Ratio]),
        Workload::Init => (&["KiB/GiB"], &[Unit::KibPerGib]),
        _ => (&[], &[]),
    };
    let skip = measured.len().saturating_sub(names.len());
    for ((name, unit), v) in names.iter().zip(units).zip(measured.iter().skip(skip)) {
        metrics.push(Metric {
            name,
            unit: *unit,
            value: *v,
            partial: None,
        });
    }
    Some(Cell::Done {
        metrics,
        notes: Vec::new(),
        peak_heap: 0,
    })
}

// ---------------------------------------------------------------------------------------
// Micro-benchmarks of the bit loops, with the word patterns of Go's
// `BenchmarkPallocBitsSummarize` and `BenchmarkFindBitRange64`.

/// Word patterns: each fills a whole chunk bitmap (1 = allocated).
pub(crate) const MICRO_PATTERNS: [u64; 14] = [
    0,
    !0,
    0xaa,
    0xaaaa_aaaa_aaaa_aaaa,
    0x8000_0000_aaaa_aaaa,
    0xaaaa_aaaa_0000_0001,
    0xbbbb_bbbb_bbbb_bbbb,
    0x8000_0000_bbbb_bbbb,
    0xbbbb_bbbb_0000_0001,
    0xcccc_cccc_cccc_cccc,
    0x4444_4444_4444_4444,
    0x4040_4040_4040_4040,
    0x4000_4000_4000_4000,
    0x1000_4040_44cc_aaff,
];

/// Median ns per call of `f` over `runs` runs of `iters` calls.
pub(crate) fn micro_ns(runs: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    median(samples)
}

pub(crate) fn micro(cfg: &Cfg) {
    let runs = cfg.runs.max(3);
    let iters = 2_000_000;
    println!("## micro: PallocBits::summarize (ns per call; the chunk is 8 copies of the word)");
    println!();
    println!("| pattern            | summarize |");
    println!("|--------------------|----------:|");
    for &p in &MICRO_PATTERNS {
        let bits = PallocBits::from_words([p; 8]);
        let ns = micro_ns(runs, iters, || {
            black_box(black_box(&bits).summarize());
        });
        println!("| {p:#018x} | {ns:9.2} |");
    }
    println!();
    println!("## micro: find_bit_range64 (ns per call; the pattern is the free bits)");
    println!();
    println!("| pattern            |   n=2 |   n=8 |  n=32 |");
    println!("|--------------------|------:|------:|------:|");
    for &p in &MICRO_PATTERNS[..13] {
        let mut line = format!("| {p:#018x} |");
        for n in [2, 8, 32] {
            let ns = micro_ns(runs, iters, || {
                black_box(find_bit_range64(black_box(p), black_box(n)));
            });
            write!(line, " {ns:5.2} |").unwrap();
        }
        println!("{line}");
    }
    println!();
    let sums = [
        PallocSum::pack(3, 3, 300),
        PallocSum::pack(512, 512, 512),
        PallocSum::pack(0, 9, 17),
        PallocSum::EMPTY,
    ];
    let block: [PallocSum; 8] = core::array::from_fn(|i| sums[i % sums.len()]);
    let ns = micro_ns(runs, iters, || {
        black_box(merge_summaries(black_box(&block), 9));
    });
    println!("merge_summaries of one block of 8 leaf summaries: {ns:.2} ns per call");
}
