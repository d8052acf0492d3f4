//! The diagrams of the guide's on-ramp (`kernel/pagealloc/GUIDE.md`, "From a bitmap to a
//! tree"), drawn from real data: the crate's flat bitmap model (`FirstFitBitmap`), a real
//! `PageAlloc`, and `buddy_system_allocator`, the buddy allocator the benchmark compares
//! with. Every state is made by a seeded workload, so the pictures repeat exactly.
//!
//! ```text
//! cargo test -p guide-tools --test diagrams -- --ignored   # (re)writes kernel/docs/guide/*.svg
//! cargo test -p guide-tools --test diagrams                # checks the committed files are current
//! ```

use pagealloc::testutil::Rng;
use std::fmt::Write as _;
use std::path::PathBuf;

use pagealloc::inspect::{ChunkIdx, PallocSum};
use pagealloc::inspect::{LEVEL_LOG_PAGES, LEVEL_SHIFT, PALLOC_CHUNK_PAGES, SUMMARY_LEVELS};
use pagealloc::testutil::HeapMetadata;
use pagealloc::{AddrRange, Contents, MetadataLayout, PageAlloc};
use pagealloc_model::FirstFitBitmap;

const PAGE: u64 = 4096;
const ALLOCATED: &str = "#c0504d";
const FREE: &str = "#a9d18e";
const FOUND: &str = "#2f6eba";
const MUTED: &str = "#d9d9d9";
const INK: &str = "#222222";

/// A tiny SVG writer.
struct Svg {
    width: u32,
    height: u32,
    body: String,
}

impl Svg {
    fn new(width: u32, height: u32) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, stroke: Option<&str>) {
        let stroke = stroke.map_or(String::new(), |s| {
            format!(r#" stroke="{s}" stroke-width="1""#)
        });
        writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"{stroke}/>"#
        )
        .unwrap();
    }

    fn text(&mut self, x: f64, y: f64, size: u32, s: &str) {
        let s = s
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-family="monospace" font-size="{size}" fill="{INK}">{s}</text>"#
        )
        .unwrap();
    }

    fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

/// 256 pages in the flat model, fragmented; `first_fit(6)` and the bits it reads.
fn flat_bitmap() -> String {
    const PAGES: usize = 256;
    let mut bm = FirstFitBitmap::new(PAGES as u64 * PAGE);
    bm.add_free(0, PAGES);
    let mut rng = Rng(0x5eed);
    let mut held = Vec::new();
    loop {
        let n = 1 + rng.below(8) as usize;
        let Some(base) = bm.alloc(n) else { break };
        held.push((base, n));
        if bm.free_pages() < PAGES / 5 {
            break;
        }
    }
    // Free every third run: holes of 1 to 8 pages.
    for &(base, n) in held.iter().skip(1).step_by(3) {
        bm.free(base, n);
    }
    let want = 6;
    let found = bm.first_fit(want).expect("a run of 6") / PAGE;
    let read = found as usize + want; // a linear scan reads every bit up to the run's end
    let (cols, cell) = (32, 22.0);
    let mut svg = Svg::new(32 * 22 + 40, 8 * 22 + 110);
    svg.text(
        20.0,
        24.0,
        14,
        &format!("A flat bitmap of {PAGES} pages (FirstFitBitmap), one bit per page"),
    );
    for i in 0..PAGES {
        let (x, y) = (
            20.0 + (i % cols) as f64 * cell,
            40.0 + (i / cols) as f64 * cell,
        );
        let free = bm.is_free(i as u64 * PAGE);
        let in_run = (found as usize..found as usize + want).contains(&i);
        let fill = if in_run {
            FOUND
        } else if free {
            FREE
        } else {
            ALLOCATED
        };
        let stroke = if i < read { INK } else { "white" };
        svg.rect(x + 1.0, y + 1.0, cell - 3.0, cell - 3.0, fill, Some(stroke));
    }
    let y = 40.0 + 8.0 * cell + 22.0;
    svg.text(
        20.0,
        y,
        13,
        &format!(
            "first_fit({want}) reads every bit from page 0 (outlined): {read} bits to find page {found}"
        ),
    );
    svg.text(
        20.0,
        y + 20.0,
        13,
        "green free, red allocated, blue the run found; on 4 GiB the scan can read 1M bits",
    );
    svg.finish()
}

/// An allocator over 8 chunks (16 MiB), fragmented by a seeded workload.
fn fragmented_chunks(md: &mut HeapMetadata, layout: MetadataLayout) -> PageAlloc<'_> {
    let mut pa = PageAlloc::new(layout, md.metadata()).unwrap();
    pa.grow(AddrRange::new(0, 16 << 20), Contents::Unknown)
        .unwrap();
    let mut rng = Rng(0xfeed);
    let mut held = Vec::new();
    for _ in 0..400 {
        let big = rng.below(4) == 0;
        let n = 1 + rng.below(if big { 300 } else { 24 }) as usize;
        if let Ok(a) = pa.alloc(n) {
            held.push((a.base, n));
        }
    }
    for (k, &(base, n)) in held.iter().enumerate() {
        if rng.below(5) < 2 || k % 97 == 0 {
            pa.free(base, n).unwrap();
        }
    }
    pa
}

/// One level of summaries over 8 chunks: which chunks a search for 200 pages can skip.
fn one_level() -> String {
    let layout = MetadataLayout::for_regions(&[AddrRange::new(0, 16 << 20)]).unwrap();
    let mut md = HeapMetadata::new(&layout);
    let mut pa = fragmented_chunks(&mut md, layout);
    let want = 200;
    let leaves: Vec<PallocSum> = pa
        .inspect()
        .summaries(SUMMARY_LEVELS - 1)
        .map(Iterator::collect::<Vec<_>>)
        .unwrap_or_default()[..8]
        .to_vec();
    let rows: Vec<Vec<bool>> = (0..8)
        .map(|c| {
            let d = pa.inspect().chunk_data(ChunkIdx::new(c)).unwrap();
            (0..PALLOC_CHUNK_PAGES)
                .map(|p| d.alloc_bits().get(p))
                .collect()
        })
        .collect();
    let found = pa.alloc(want).unwrap().base;
    let (px, row_h) = (1.4, 22.0);
    let mut svg = Svg::new(20 + 512 * 14 / 10 + 400, 8 * 22 + 120);
    svg.text(
        20.0,
        24.0,
        14,
        "One level of summaries: 8 chunks of 512 pages, each with (start, max, end)",
    );
    for (c, row) in rows.iter().enumerate() {
        let y = 40.0 + c as f64 * row_h;
        let skip = leaves[c].max() < want && leaves[c].end() == 0;
        // One rectangle per run of pages of one colour.
        let fill_of = |p: usize| {
            let addr = ChunkIdx::new(c).base() + p as u64 * PAGE;
            if (found..found + want as u64 * PAGE).contains(&addr) {
                FOUND
            } else if row[p] {
                ALLOCATED
            } else {
                FREE
            }
        };
        let mut p = 0;
        while p < PALLOC_CHUNK_PAGES {
            let fill = fill_of(p);
            let from = p;
            while p < PALLOC_CHUNK_PAGES && fill_of(p) == fill {
                p += 1;
            }
            let w = (p - from) as f64 * px;
            svg.rect(20.0 + from as f64 * px, y, w, row_h - 6.0, fill, None);
        }
        let note = if leaves[c].max() >= want {
            "max >= 200: the run may lie inside"
        } else if skip {
            "max < 200: only its start can end a run"
        } else {
            "max < 200: its start and end can join a run"
        };
        svg.text(
            30.0 + 512.0 * px,
            y + 12.0,
            12,
            &format!("chunk {c} {}  {note}", leaves[c]),
        );
    }
    let y = 40.0 + 8.0 * row_h + 20.0;
    svg.text(
        20.0,
        y,
        13,
        &format!(
            "alloc({want}) found {found:#x} (blue) reading 8 summaries instead of 4096 bits; the summaries"
        ),
    );
    svg.text(
        20.0,
        y + 20.0,
        13,
        "of 8 chunks are one 64-byte cache line. Memory of 4 GiB has 2048 chunks: summarize the summaries.",
    );
    svg.finish()
}

/// The radix tree over 4 GiB: at each level the block a search for 300 pages scans.
fn tree() -> String {
    let region = AddrRange::new(0, 4 << 30);
    let layout = MetadataLayout::for_regions(&[region]).unwrap();
    let mut md = HeapMetadata::new(&layout);
    let mut pa = PageAlloc::new(layout, md.metadata()).unwrap();
    pa.grow(AddrRange::new(0, region.size()), Contents::Unknown)
        .unwrap();
    let mut rng = Rng(0xabc);
    let mut held = Vec::new();
    while pa.free_pages() > 420_000 {
        let big = rng.below(8) == 0;
        let n = 1 + rng.below(if big { 2000 } else { 200 }) as usize;
        held.push((pa.alloc(n).unwrap().base, n));
    }
    for &(base, n) in &held {
        if rng.below(3) == 0 && n < 290 {
            pa.free(base, n).unwrap();
        }
    }
    let want = 300;
    // The path `find` takes: at each level, the first entry whose max fits (rule 3),
    // unless a run carried across entries completes first (rule 2, then the search ends).
    let search = pa.inspect().search_addr();
    let mut rows = Vec::new();
    let mut i = 0usize;
    let mut ended = false;
    for l in 0..SUMMARY_LEVELS {
        let level = pa
            .inspect()
            .summaries(l)
            .map(Iterator::collect::<Vec<_>>)
            .unwrap_or_default();
        let first = if l == 0 { 0 } else { i * 8 };
        let len = if l == 0 { level.len() } else { 8 };
        let j0 = ((search >> LEVEL_SHIFT[l]) as usize)
            .saturating_sub(first)
            .min(len);
        let j0 = if l == 0 || (search >> LEVEL_SHIFT[l]) as usize / 8 == i {
            j0
        } else {
            0
        };
        let (mut size, mut chosen) = (0usize, None);
        let mut marks = vec!["skipped"; len];
        for j in j0..len {
            let s = level[first + j];
            if s == PallocSum::EMPTY {
                size = 0;
                marks[j] = "empty";
            } else if size + s.start() >= want {
                marks[j] = "found";
                ended = true;
                break;
            } else if s.max() >= want {
                marks[j] = "descend";
                chosen = Some(first + j);
                break;
            } else {
                marks[j] = "passed";
                size = if size == 0 || s.start() < 1 << LEVEL_LOG_PAGES[l] {
                    s.end()
                } else {
                    size + (1 << LEVEL_LOG_PAGES[l])
                };
            }
        }
        rows.push((l, first, level[first..first + len].to_vec(), marks));
        match chosen {
            Some(k) if !ended => i = k,
            _ => break,
        }
    }
    let found = pa.alloc(want).unwrap().base;
    let (box_w, box_h) = (118.0, 40.0);
    let mut svg = Svg::new(20 + 8 * 122 + 160, 60 + rows.len() as u32 * 62 + 60);
    svg.text(
        20.0,
        24.0,
        14,
        &format!("The radix tree over 4 GiB: the blocks find({want}) reads, root to chunk"),
    );
    for (row, (l, first, sums, marks)) in rows.iter().enumerate() {
        let y = 44.0 + row as f64 * 62.0;
        let per = 1u64 << (LEVEL_SHIFT[*l] - 20);
        svg.text(
            20.0 + 8.0 * 122.0 + 10.0,
            y + 24.0,
            12,
            &format!("L{l}: {per} MiB each"),
        );
        for (j, (s, mark)) in sums.iter().zip(marks).enumerate() {
            let x = 20.0 + j as f64 * 122.0;
            let fill = match *mark {
                "descend" | "found" => FOUND,
                "skipped" | "empty" => MUTED,
                _ => "#f2e6c9",
            };
            svg.rect(x, y, box_w, box_h, fill, Some(INK));
            svg.text(x + 4.0, y + 15.0, 11, &format!("L{l}[{}]", first + j));
            svg.text(
                x + 4.0,
                y + 31.0,
                11,
                &format!("{}/{}/{}", s.start(), s.max(), s.end()),
            );
        }
    }
    let y = 44.0 + rows.len() as f64 * 62.0 + 14.0;
    svg.text(
        20.0,
        y,
        12,
        "each box: start/max/end in pages; blue: descended into (max >= 300) or run found;",
    );
    svg.text(
        20.0,
        y + 18.0,
        12,
        &format!(
            "grey: below the search address or empty; beige: passed, its end carried. Found {found:#x}."
        ),
    );
    svg.finish()
}

/// A buddy allocator and first fit on the same requests over 64 frames.
fn buddy() -> String {
    const FRAMES: usize = 64;
    let mut b = buddy_system_allocator::FrameAllocator::<33>::new();
    b.add_frame(0, FRAMES);
    let mut ff = FirstFitBitmap::new(FRAMES as u64 * PAGE);
    ff.add_free(0, FRAMES);
    // (name, frames); `None` frees A.
    let steps: [(&str, Option<usize>); 6] = [
        ("A", Some(16)),
        ("B", Some(4)),
        ("C", Some(4)),
        ("A", None),
        ("D", Some(8)),
        ("E", Some(5)),
    ];
    let mut buddy_blocks: Vec<(&str, usize, usize, usize)> = Vec::new(); // name, base, n, consumed
    let mut ff_blocks: Vec<(&str, usize, usize)> = Vec::new();
    for (name, n) in steps {
        match n {
            Some(n) => {
                let at = b.alloc(n).expect("room");
                buddy_blocks.push((name, at, n, n.next_power_of_two()));
                let at = ff.alloc(n).expect("room") / PAGE;
                ff_blocks.push((name, at as usize, n));
            }
            None => {
                let k = buddy_blocks.iter().position(|x| x.0 == name).unwrap();
                let (_, at, n, _) = buddy_blocks.remove(k);
                b.dealloc(at, n);
                let k = ff_blocks.iter().position(|x| x.0 == name).unwrap();
                let (_, at, n) = ff_blocks.remove(k);
                ff.free(at as u64 * PAGE, n);
            }
        }
    }
    let cell = 14.0;
    let mut svg = Svg::new(20 + 64 * 14 + 20, 250);
    svg.text(
        20.0,
        24.0,
        14,
        "64 frames; A=16, B=4, C=4, free A, D=8, E=5: buddy_system_allocator vs first fit",
    );
    let draw = |svg: &mut Svg, y: f64, label: &str, blocks: &[(&str, usize, usize, usize)]| {
        svg.text(20.0, y - 6.0, 13, label);
        for f in 0..FRAMES {
            svg.rect(20.0 + f as f64 * cell, y, cell - 1.0, 30.0, FREE, None);
        }
        for &(name, at, n, consumed) in blocks {
            for f in at..at + consumed {
                let fill = if f < at + n { ALLOCATED } else { "#f4b183" };
                svg.rect(20.0 + f as f64 * cell, y, cell - 1.0, 30.0, fill, None);
            }
            svg.text(20.0 + at as f64 * cell + 3.0, y + 20.0, 12, name);
        }
    };
    let bb: Vec<_> = buddy_blocks.clone();
    draw(
        &mut svg,
        60.0,
        "buddy (sizes rounded up to a power of two; light: the rounding)",
        &bb,
    );
    let fb: Vec<_> = ff_blocks.iter().map(|&(n, a, k)| (n, a, k, k)).collect();
    draw(
        &mut svg,
        130.0,
        "first fit (exact sizes, lowest address)",
        &fb,
    );
    let d = buddy_blocks.iter().find(|x| x.0 == "D").unwrap();
    let e = buddy_blocks.iter().find(|x| x.0 == "E").unwrap();
    svg.text(
        20.0,
        195.0,
        12,
        &format!(
            "buddy: D (8 frames) at frame {}, although frames 0..16 were free: it takes a free block of",
            d.1
        ),
    );
    svg.text(
        20.0,
        213.0,
        12,
        &format!(
            "its size first; E (5 frames) at frame {} takes a block of {}. First fit: D at {}, E at {}.",
            e.1,
            e.3,
            ff_blocks.iter().find(|x| x.0 == "D").unwrap().1,
            ff_blocks.iter().find(|x| x.0 == "E").unwrap().1
        ),
    );
    svg.finish()
}

fn diagrams() -> [(&'static str, String); 4] {
    [
        ("flat-bitmap.svg", flat_bitmap()),
        ("one-level.svg", one_level()),
        ("tree.svg", tree()),
        ("buddy.svg", buddy()),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernel/docs/guide")
}

#[test]
#[ignore = "writes the diagrams: cargo test -p guide-tools --test diagrams -- --ignored"]
fn write_diagrams() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, svg) in diagrams() {
        std::fs::write(dir().join(name), svg).unwrap();
    }
}

#[test]
fn committed_diagrams_are_current() {
    for (name, svg) in diagrams() {
        let path = dir().join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == svg,
            "{} is not what the tool draws now: run `cargo test -p guide-tools --test diagrams -- --ignored`",
            path.display()
        );
    }
}
