//! An interactive console on the serial port for looking into memory management: allocate
//! and free frames, watch the page allocator's summaries and bitmaps change, run its
//! invariant checks. `./run-qemu.sh --shell` boots into it (the binary `src/bin/shell.rs`).
//!
//! Input comes through the UART's receive interrupt ([`crate::serial::enable_input`]);
//! the loop halts the CPU until a byte arrives. Commands write to any [`fmt::Write`], so
//! the tests below run them without a terminal.
//!
//! The console never holds the frame allocator's lock while it formats output or uses
//! the heap: growing the heap takes frames, which takes that lock.

pub mod churn;
mod holding;
pub mod line;
pub mod parse;
pub mod show;
mod tree;
pub mod walk;

use alloc::vec::Vec;
use core::fmt::{self, Write};

use bootloader_api::info::MemoryRegion;
use pagealloc::inspect::chunk_page_index;
use pagealloc::inspect::{ChunkIdx, MAX_SEARCH_ADDR, PallocData, PallocSum};
use pagealloc::inspect::{
    LEVEL_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES, PHYS_ADDR_BITS, SUMMARY_LEVELS,
};
use pagealloc::{AddrRange, PageAlloc};
use x86_64::structures::paging::{Page, PageTableFlags};
use x86_64::{PhysAddr, VirtAddr};

use crate::memory_map::{self, Kind, Size};
use crate::mm::frames::{self, FrameRequest, Frames, Zone, Zones};
use crate::mm::{self, AddressSpace};
use crate::rng::XorShift;
use line::{Key, LineEditor};
use parse::{Aspace, COMMANDS, Command, NUMBERS_HELP, parse_command, usage_of};
use show::{CHUNK_LEGEND, PageState, Range, write_chunk, write_entry};
use tree::*;

/// What the console prints when it waits for a command.
pub const PROMPT: &str = "mm> ";

/// Runs the console until `quit`, then exits QEMU with success.
pub fn run(regions: &'static [MemoryRegion]) -> ! {
    let mut out = SerialOut;
    let mut console = Console::new(regions);
    let _ = console.banner(&mut out);
    crate::serial::enable_input();
    let mut editor = LineEditor::new();
    loop {
        let _ = out.write_str(PROMPT);
        let lost_before = crate::serial::input_dropped();
        let key = loop {
            match editor.feed(crate::serial::read_byte(), &mut out) {
                Ok(Key::Pending) => {}
                Ok(key) => break key,
                Err(_) => break Key::Enter,
            }
        };
        let lost = crate::serial::input_dropped() - lost_before;
        let flow = match input_problem(key, lost) {
            Some(why) => {
                let _ = writeln!(out, "{why}");
                Flow::Continue
            }
            None => console.execute_line(editor.line(), &mut out),
        };
        editor.clear();
        if flow == Flow::Quit {
            crate::qemu::exit_qemu(crate::qemu::QemuExitCode::Success);
        }
    }
}

/// Why a line must not run: it arrived incomplete. `lost` is how many input bytes were
/// dropped while it was typed (the receive queue was full).
pub fn input_problem(key: Key, lost: u64) -> Option<InputProblem> {
    if lost > 0 {
        Some(InputProblem::Lost(lost))
    } else if key == Key::TooLong {
        Some(InputProblem::TooLong)
    } else {
        None
    }
}

/// A line that was not run, and why.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InputProblem {
    /// Bytes were lost.
    Lost(u64),
    /// Longer than [`line::MAX_LINE`].
    TooLong,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputProblem::Lost(n) => write!(
                f,
                "input: {n} byte{} lost (more than {} arrived before the console could read them): the line was not run",
                if *n == 1 { "" } else { "s" },
                crate::serial::RX_CAPACITY
            ),
            InputProblem::TooLong => write!(
                f,
                "input: the line is longer than {} characters: it was not run",
                line::MAX_LINE
            ),
        }
    }
}

/// Writes to COM1.
struct SerialOut;

impl Write for SerialOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::serial_print!("{s}");
        Ok(())
    }
}

/// Whether the session goes on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flow {
    /// Wait for the next command.
    Continue,
    /// `quit` was typed.
    Quit,
}

/// The console's state: what it allocated, its address space, and the summaries as the
/// last `tree` saw them.
pub struct Console {
    regions: &'static [MemoryRegion],
    /// The frames this console allocated and still holds, as their handles (runs that
    /// never overlap, in no order).
    held: Vec<Frames>,
    last_alloc: Option<u64>,
    space: Option<AddressSpace>,
    rng: XorShift,
    snapshot: Snapshot,
    /// Whether `tree` has printed every zone once.
    trees_shown: bool,
}

impl Console {
    /// A console for a machine with this memory map (after `kernel::init`).
    pub fn new(regions: &'static [MemoryRegion]) -> Console {
        Console {
            regions,
            held: Vec::new(),
            last_alloc: None,
            space: None,
            rng: XorShift::new(0x5eed),
            snapshot: Snapshot::new(),
            trees_shown: false,
        }
    }

    /// Frames this console holds: `(runs, frames)`.
    pub fn holding(&self) -> (usize, usize) {
        (self.held.len(), self.held.iter().map(Frames::npages).sum())
    }

    fn banner(&self, out: &mut dyn Write) -> fmt::Result {
        let usable = memory_map::usable_summary(self.regions);
        writeln!(out)?;
        writeln!(
            out,
            "=== kernel {}: memory console ===",
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(
            out,
            "{} of usable memory, managed by Go's page allocator (kernel/pagealloc), one per zone.",
            Size(usable.bytes)
        )?;
        writeln!(out, "Type `help` for the commands, `quit` to leave.")
    }

    /// Parses and runs one line of input.
    pub fn execute_line(&mut self, line: &str, out: &mut dyn Write) -> Flow {
        let result = match parse_command(line) {
            Ok(None) => Ok(Flow::Continue),
            Ok(Some(cmd)) => self.execute(cmd, out),
            Err(e) => writeln!(out, "{e}").map(|()| Flow::Continue),
        };
        // Output that cannot be written cannot be reported either; go on.
        result.unwrap_or(Flow::Continue)
    }

    /// Runs one command.
    pub fn execute(&mut self, cmd: Command, out: &mut dyn Write) -> Result<Flow, fmt::Error> {
        match cmd {
            Command::Help => help(out)?,
            Command::Map => self.map(out)?,
            Command::Stats => self.stats(out)?,
            Command::Alloc {
                npages,
                align_pages,
                below,
            } => self.alloc(npages, align_pages, below, out)?,
            Command::Free { addr, npages } => self.free(addr, npages, out)?,
            Command::Tree { node: None, zone } => self.tree_paths(zone, out)?,
            Command::Tree {
                node: Some((level, index)),
                zone,
            } => self.tree_node(level, index, zone, out)?,
            Command::Walk { npages, zone } => walk_command(npages, zone, out)?,
            Command::Chunk(addr) => match addr.or(self.last_alloc) {
                Some(addr) => chunk(addr, out)?,
                None => writeln!(
                    out,
                    "no allocation yet: give an address\nusage: {}",
                    usage_of("chunk")
                )?,
            },
            Command::Fill(percent) => self.fill(percent, out)?,
            Command::Churn(pairs) => churn::run(pairs, out)?,
            Command::Check => match frames::check_invariants() {
                Ok(()) => {
                    writeln!(out, "check: every invariant holds in every zone")?;
                }
                Err((z, e)) => writeln!(out, "check: zone {}: {e}", z.name())?,
            },
            Command::Heap => {
                let h = mm::heap::stats();
                writeln!(
                    out,
                    "heap: {} mapped, {} in use; it grows on demand up to {}",
                    Size(h.size as u64),
                    Size(h.used as u64),
                    Size(h.max as u64)
                )?;
            }
            Command::Aspace(op) => self.aspace(op, out)?,
            Command::Quit => {
                writeln!(out, "bye")?;
                return Ok(Flow::Quit);
            }
        }
        Ok(Flow::Continue)
    }

    fn map(&self, out: &mut dyn Write) -> fmt::Result {
        writeln!(
            out,
            "memory map: {} regions from the bootloader; neighbours of one kind joined:",
            self.regions.len()
        )?;
        writeln!(
            out,
            "  {:<18}  {:<18}  {:>10}  kind",
            "start", "end (exclusive)", "size"
        )?;
        for span in memory_map::merged(self.regions) {
            writeln!(
                out,
                "  {:#018x}  {:#018x}  {:>10}  {}",
                span.start,
                span.end,
                Size(span.len()),
                Kind(span.kind)
            )?;
        }
        writeln!(
            out,
            "zones: one page allocator each, grown with the usable memory in their range"
        )?;
        for z in Zone::ALL {
            let mut ranges = [AddrRange::new(0, 0); 6];
            let Some((n, total)) = frames::with_zones(|zones| {
                let pa = zone(zones, z)?;
                let grown = pa.inspect().grown();
                for (slot, r) in ranges.iter_mut().zip(grown) {
                    *slot = *r;
                }
                Some((grown.len(), pa.total_pages()))
            }) else {
                continue;
            };
            let (base, limit) = z.range();
            write!(
                out,
                "  {:<6} {:<24} {:>8} frames:",
                z.name(),
                Range(base, limit.min(1 << 48)),
                total
            )?;
            for (k, r) in ranges[..n.min(ranges.len())].iter().enumerate() {
                let sep = if k == 0 { " " } else { ", " };
                write!(out, "{sep}{}", Range(r.base, r.limit))?;
            }
            if n > ranges.len() {
                write!(out, " and {} more", n - ranges.len())?;
            }
            writeln!(out)?;
        }
        let meta = mm::init_report().map(|r| r.metadata);
        if let Some(m) = meta {
            writeln!(
                out,
                "allocator metadata (summaries, chunk map, bitmaps) at {}, allocated in its zone",
                Range(m.base, m.limit)
            )?;
        }
        Ok(())
    }

    fn stats(&self, out: &mut dyn Write) -> fmt::Result {
        let s = mm::stats();
        let size = |pages: usize| Size(pages as u64 * PAGE_SIZE);
        writeln!(
            out,
            "frames of 4 KiB: {} managed ({}), {} free ({}; {} in page caches), {} in use ({}); metadata {}",
            s.total_pages,
            size(s.total_pages),
            s.free_pages,
            size(s.free_pages),
            s.cached_pages,
            s.used_pages,
            size(s.used_pages),
            Size(s.metadata_bytes as u64)
        )?;
        for z in Zone::ALL {
            let Some(search) =
                frames::with_zones(|zones| zone(zones, z).map(|pa| pa.inspect().search_addr()))
            else {
                continue;
            };
            let zs = s.zones[z];
            write!(
                out,
                "  zone {:<6} {:>8} frames {:>8} free  largest free run {:>8}  search address ",
                z.name(),
                zs.total_pages,
                zs.free_pages,
                zs.largest_free_run
            )?;
            if search == MAX_SEARCH_ADDR {
                writeln!(out, "none (no free page)")?;
            } else {
                writeln!(out, "{search:#x}")?;
            }
        }
        let (runs, frames) = self.holding();
        writeln!(
            out,
            "this console holds {frames} frame{} in {runs} run{}",
            plural(frames),
            plural(runs)
        )?;
        match crate::serial::input_dropped() {
            0 => Ok(()),
            n => writeln!(out, "serial input: {n} bytes lost (sent faster than read)"),
        }
    }

    fn aspace(&mut self, op: Aspace, out: &mut dyn Write) -> fmt::Result {
        let free_before = mm::stats().free_pages;
        let used_since = |before: usize| before.abs_diff(mm::stats().free_pages);
        match (op, self.space.as_mut()) {
            (Aspace::New, Some(_)) => {
                writeln!(out, "aspace: there is one already (`aspace drop` it first)")
            }
            (Aspace::New, None) => match AddressSpace::new() {
                Ok(space) => {
                    let pml4 = space.pml4_frame().start_address().as_u64();
                    self.space = Some(space);
                    writeln!(
                        out,
                        "address space created: its top-level table (PML4) is the frame at {pml4:#x}"
                    )
                }
                Err(e) => writeln!(out, "aspace: {e}"),
            },
            (_, None) => writeln!(out, "aspace: none yet (`aspace new` creates one)"),
            (Aspace::Map(addr), Some(space)) => {
                let Ok(virt) = VirtAddr::try_new(addr) else {
                    return writeln!(out, "aspace: {addr:#x} is not a canonical virtual address");
                };
                let page = Page::containing_address(virt);
                match space.map_user(page, PageTableFlags::WRITABLE) {
                    Ok(frame) => {
                        let n = used_since(free_before);
                        writeln!(
                            out,
                            "mapped page {:#x} -> frame {:#x}: {n} frame{} for the page and new page tables",
                            page.start_address().as_u64(),
                            frame.start_address().as_u64(),
                            plural(n)
                        )
                    }
                    Err(e) => writeln!(out, "aspace: {e}"),
                }
            }
            (Aspace::Drop, Some(_)) => {
                self.space = None;
                let n = used_since(free_before);
                writeln!(
                    out,
                    "dropped the address space: {n} frame{} came back",
                    plural(n)
                )
            }
        }
    }
}

fn help(out: &mut dyn Write) -> fmt::Result {
    writeln!(out, "commands:")?;
    for (_, usage, what) in COMMANDS {
        writeln!(out, "  {usage:<31} {what}")?;
    }
    writeln!(out, "{NUMBERS_HELP}")
}

/// `walk N [ZONE]`: the search `alloc N` would make, traced (see [`walk`]).
fn walk_command(npages: usize, only: Option<Zone>, out: &mut dyn Write) -> fmt::Result {
    if npages == 0 {
        return writeln!(out, "walk: a search for zero pages finds nothing to trace");
    }
    // Like `alloc`: the first zone in fallback order unless one is named.
    let Some((z, trace)) = frames::with_zones(|zones| {
        let z = match only {
            Some(z) => z,
            None => Zone::FALLBACK
                .into_iter()
                .find(|&z| zone(zones, z).is_some())?,
        };
        Some((z, walk::trace(zone(zones, z)?, npages)))
    }) else {
        return writeln!(out, "walk: no such zone on this machine");
    };
    trace.write(z.name(), out)
}

/// `chunk ADDR`: the bitmap of the chunk holding `addr`.
fn chunk(addr: u64, out: &mut dyn Write) -> fmt::Result {
    if addr >= 1 << PHYS_ADDR_BITS {
        return writeln!(out, "chunk: {addr:#x} is not a physical address");
    }
    let z = Zone::of(addr);
    let ci = ChunkIdx::of(addr);
    let base = ci.base();
    let limit = base + PALLOC_CHUNK_PAGES as u64 * PAGE_SIZE;
    // Grown pages of the chunk, one bit each, like the allocation bitmap.
    let mut grown = [0u64; PALLOC_CHUNK_PAGES / 64];
    let found = frames::with_zones(|zones| {
        let pa = zone(zones, z)?;
        let data: PallocData = pa.inspect().chunk_data(ci)?;
        for r in pa.inspect().grown() {
            let (lo, hi) = (r.base.max(base), r.limit.min(limit));
            for p in (lo..hi).step_by(PAGE_SIZE as usize) {
                let i = chunk_page_index(p);
                grown[i / 64] |= 1 << (i % 64);
            }
        }
        Some((
            data,
            pa.inspect()
                .summary(SUMMARY_LEVELS - 1, ci.index())
                .unwrap(),
        ))
    });
    let Some((data, sum)) = found else {
        return writeln!(
            out,
            "chunk {} ({}): no zone manages memory in it",
            ci.index(),
            Range(base, limit)
        );
    };
    let state = |i: usize| {
        if grown[i / 64] & (1 << (i % 64)) == 0 {
            PageState::Hole
        } else if data.alloc_bits().get(i) {
            PageState::Allocated
        } else {
            PageState::Free
        }
    };
    let free = (0..PALLOC_CHUNK_PAGES)
        .filter(|&i| state(i) == PageState::Free)
        .count();
    let holes = (0..PALLOC_CHUNK_PAGES)
        .filter(|&i| state(i) == PageState::Hole)
        .count();
    writeln!(
        out,
        "chunk {} ({}) in zone {}: {free} free, {} allocated, {holes} not managed; summary {sum}",
        ci.index(),
        Range(base, limit),
        z.name(),
        PALLOC_CHUNK_PAGES - free - holes
    )?;
    write_chunk(out, base, state)?;
    writeln!(out, "  {CHUNK_LEGEND}")
}

fn zone(zones: &Zones, z: Zone) -> Option<&PageAlloc<'static>> {
    zones.zones[z].as_ref()
}

const fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::holding::kernel_owned;
    use super::*;
    use alloc::string::String;

    fn console() -> Console {
        Console::new(&crate::testing::boot_info().memory_regions)
    }

    fn run(c: &mut Console, line: &str) -> String {
        let mut out = String::new();
        assert_eq!(c.execute_line(line, &mut out), Flow::Continue, "{line}");
        out
    }

    #[test_case]
    fn churn_gives_every_frame_back() {
        let mut c = console();
        let out = run(&mut c, "churn 300");
        assert!(
            out.contains("300 single-frame alloc+free pairs each"),
            "{out}"
        );
        assert!(
            out.contains("(all back); 0 frames found with another CPU's stamp"),
            "{out}"
        );
        assert!(!out.contains("out of memory"), "{out}");
        assert!(run(&mut c, "churn 0").contains("N is 1 to 1000000"));
    }

    /// The base address in "allocated N frames at 0xBASE..".
    fn allocated_at(out: &str) -> u64 {
        let hex = out
            .split(" at 0x")
            .nth(1)
            .and_then(|s| s.split("..").next())
            .unwrap_or_else(|| panic!("no address in {out:?}"));
        u64::from_str_radix(hex, 16).unwrap()
    }

    #[test_case]
    fn alloc_then_tree_shows_the_summaries_change() {
        let mut c = console();
        let first = run(&mut c, "tree");
        assert!(first.contains("zone DMA32: search address 0x"), "{first}");
        assert!(!first.contains(" was "), "nothing changed yet:\n{first}");
        // A whole free chunk: its summary must go from all free to all allocated. (A
        // small run may land in a hole and leave every summary as it was.)
        let out = run(&mut c, "alloc 2M align 2M");
        let base = allocated_at(&out);
        let tree = run(&mut c, "tree");
        let leaf = alloc::format!("L4[{}] ", base >> 21);
        let line = tree
            .lines()
            .find(|l| l.contains(&leaf))
            .unwrap_or_else(|| panic!("{leaf} not shown:\n{tree}"));
        assert!(
            line.ends_with("(start=0, max=0, end=0)  was (start=512, max=512, end=512)"),
            "{line}"
        );
        assert!(
            !run(&mut c, "tree").contains(" was "),
            "a second tree sees no change"
        );
        run(&mut c, &alloc::format!("free {base:#x} 512"));
        assert!(run(&mut c, "tree").contains("was (start=0, max=0, end=0)"));
    }

    /// The character `chunk` draws for the page at `addr` (in its own chunk's picture, so
    /// it does not matter where a run lies relative to chunks and rows).
    fn cell(c: &mut Console, addr: u64) -> char {
        let picture = run(c, &alloc::format!("chunk {addr:#x}"));
        let i = chunk_page_index(addr);
        let row = picture.lines().nth(1 + i / 64).unwrap();
        let cells: String = row.split_whitespace().skip(1).collect();
        cells.chars().nth(i % 64).unwrap()
    }

    #[test_case]
    fn chunk_shows_an_allocation() {
        let mut c = console();
        let out = run(&mut c, "alloc 3");
        assert!(out.starts_with("allocated 3 frames at 0x"), "{out}");
        let base = allocated_at(&out);
        let picture = run(&mut c, "chunk");
        assert!(
            picture.starts_with(&alloc::format!("chunk {} (", base >> 21)),
            "{picture}"
        );
        let pages = [base, base + 4096, base + 2 * 4096];
        for p in pages {
            assert_eq!(cell(&mut c, p), '#', "page {p:#x}");
        }
        assert_eq!(
            run(&mut c, &alloc::format!("free {base:#x} 3")),
            alloc::format!("freed 3 frames at {}\n", Range(base, base + 3 * 4096))
        );
        assert_eq!(c.holding(), (0, 0));
        for p in pages {
            assert_eq!(cell(&mut c, p), '.', "page {p:#x}");
        }
    }

    #[test_case]
    fn frees_are_checked() {
        let mut c = console();
        let base = allocated_at(&run(&mut c, "alloc 4"));
        // Part of a run: the rest stays held.
        assert!(
            run(&mut c, &alloc::format!("free {:#x} 1", base + 4096))
                .starts_with("freed 1 frame at")
        );
        assert_eq!(c.holding(), (2, 3));
        // Straight back to the allocator (not to a CPU's batch): its bitmap shows it free.
        assert_eq!(cell(&mut c, base + 4096), '.');
        let again = run(&mut c, &alloc::format!("free {:#x} 1", base + 4096));
        assert_eq!(
            again,
            alloc::format!(
                "free: page {:#x} is not allocated (double free?)\n",
                base + 4096
            )
        );
        let meta = mm::init_report().unwrap().metadata.base;
        let kernel = run(&mut c, &alloc::format!("free {meta:#x} 1"));
        assert!(
            kernel.contains("holds the allocator's metadata"),
            "{kernel}"
        );
        assert!(run(&mut c, "free 0x123 1").contains("not aligned"));
        // The two pieces, freed as one range: the lowest page that is free is named.
        assert!(
            run(&mut c, &alloc::format!("free {base:#x} 4"))
                .contains(&alloc::format!("page {:#x} is not allocated", base + 4096))
        );
        run(&mut c, &alloc::format!("free {base:#x} 1"));
        run(&mut c, &alloc::format!("free {:#x} 2", base + 2 * 4096));
        assert_eq!(c.holding(), (0, 0));
        assert_eq!(
            run(&mut c, "check"),
            "check: every invariant holds in every zone\n"
        );
    }

    #[test_case]
    fn a_bad_free_names_its_lowest_bad_page() {
        let mut c = console();
        // From address 0 over everything: whatever the layout, the first page that cannot
        // be freed is the lowest one; the metadata (at the top) is not what is reported.
        let out = run(&mut c, "free 0x0 4G");
        assert!(out.starts_with("free: page 0x0 "), "{out}");
        assert!(!out.contains("metadata"), "{out}");
        // A range of kernel memory running into the metadata: the metadata is named.
        let meta = mm::init_report().unwrap().metadata;
        let out = run(&mut c, &alloc::format!("free {:#x} 2", meta.base - 4096));
        let below_is_free = frames::with_zones(|zones| !kernel_owned(zones, meta.base - 4096, 1));
        if !below_is_free {
            assert!(out.contains("holds the allocator's metadata"), "{out}");
        }
        // A range across the DMA / DMA32 boundary, of allocated pages on both sides.
        let low = allocated_at(&run(&mut c, "alloc 1 below 16M"));
        let out = run(
            &mut c,
            &alloc::format!("free {:#x} 2", (16u64 << 20) - 4096),
        );
        assert!(
            out.contains("is not allocated")
                || out.contains("never grown")
                || out.contains("crosses from zone DMA into zone DMA32 at 0x1000000"),
            "{out}"
        );
        run(&mut c, &alloc::format!("free {low:#x} 1"));
        assert_eq!(c.holding(), (0, 0));
    }

    #[test_case]
    fn walk_ends_where_alloc_allocates() {
        let mut c = console();
        // Sizes that take the fast path, a tree search within a chunk, one across chunks.
        for (n, below) in [
            (1, "16M"),
            (3, "16M"),
            (300, "16M"),
            (600, "16M"),
            (700, "4G"),
        ] {
            let zone = if below == "16M" { "dma" } else { "dma32" };
            let walk = run(&mut c, &alloc::format!("walk {n} {zone}"));
            let result = walk
                .lines()
                .find_map(|l| l.strip_prefix("result: "))
                .unwrap_or_else(|| panic!("no result:\n{walk}"));
            let out = run(&mut c, &alloc::format!("alloc {n} below {below}"));
            let got = allocated_at(&out);
            assert!(
                result.starts_with(&alloc::format!("{n} page{} at {got:#x}..", plural(n))),
                "walk said {result}, alloc gave {got:#x}:\n{walk}"
            );
            run(&mut c, &alloc::format!("free {got:#x} {n}"));
        }
        let walk = run(&mut c, "walk 600 dma");
        assert!(walk.contains("fast path: no"), "{walk}");
        assert!(
            walk.contains("rule 2:") || walk.contains("rule 3:"),
            "{walk}"
        );
        assert!(run(&mut c, "walk 3 dma").contains("fast path: the search address's chunk"));
        assert!(run(&mut c, "walk 1G dma").contains("result: no run of 262144 free pages"));
        assert_eq!(c.holding(), (0, 0));
    }

    #[test_case]
    fn tree_shows_a_zone_or_what_changed() {
        let mut c = console();
        let first = run(&mut c, "tree");
        assert!(first.contains("zone DMA: search address"), "{first}");
        assert!(first.contains("zone DMA32: search address"), "{first}");
        let low = allocated_at(&run(&mut c, "alloc 1 below 16M"));
        let second = run(&mut c, "tree");
        assert!(second.contains("zone DMA: search address"), "{second}");
        assert!(
            second.contains("zone DMA32: unchanged since the last `tree`"),
            "{second}"
        );
        let only = run(&mut c, "tree dma32");
        assert!(only.starts_with("zone DMA32: search address"), "{only}");
        assert!(!only.contains("zone DMA:"), "{only}");
        assert!(run(&mut c, "tree 0 0 dma").starts_with("zone DMA: L0[0]"));
        assert!(!run(&mut c, "tree 0 0 dma").contains("DMA32"));
        run(&mut c, &alloc::format!("free {low:#x} 1"));
    }

    #[test_case]
    fn constrained_allocations_and_their_errors() {
        let mut c = console();
        let out = run(&mut c, "alloc 2M align 2M");
        let base = allocated_at(&out);
        assert_eq!(base % (2 << 20), 0, "{out}");
        assert!(out.contains("allocated 512 frames"), "{out}");
        let low = allocated_at(&run(&mut c, "alloc 1 below 16M"));
        assert!(low < 16 << 20);
        assert!(run(&mut c, "alloc 3 align 3").contains("not a power of two"));
        assert!(run(&mut c, "alloc 0").contains("zero pages"));
        let oom = run(&mut c, "alloc 1G");
        assert!(oom.contains("out of memory"), "{oom}");
        if mm::stats().cached_pages > 0 {
            assert!(
                oom.contains("of the free frames sit in the CPUs' page caches"),
                "{oom}"
            );
        }
        run(&mut c, &alloc::format!("free {base:#x} 2M"));
        run(&mut c, &alloc::format!("free {low:#x} 1"));
        assert_eq!(c.holding(), (0, 0));
    }

    #[test_case]
    fn fill_moves_memory_use_both_ways() {
        let mut c = console();
        let s = mm::stats();
        let pct = s.used_pages * 100 / s.total_pages;
        let out = run(&mut c, &alloc::format!("fill {}", pct + 3));
        assert!(out.contains(&alloc::format!("fill: {}.", pct + 3)), "{out}");
        assert!(c.holding().0 > 10);
        assert!(run(&mut c, "fill 0").contains("the rest is the kernel's own memory"));
        assert_eq!(c.holding(), (0, 0));
    }

    #[test_case]
    fn tree_of_one_node_and_bad_nodes() {
        let mut c = console();
        let out = run(&mut c, "tree 0 0");
        assert!(out.starts_with("zone DMA: L0[0]"), "{out}");
        assert!(out.contains("\n  L1[7] "), "eight children:\n{out}");
        assert!(run(&mut c, "tree 4 8").contains("a chunk: its children are the 512 pages"));
        assert!(run(&mut c, "tree 0 100").contains("no zone has an entry L0[100]"));
        assert!(run(&mut c, "tree 9 0").contains("usage: tree [LEVEL INDEX] [ZONE]"));
        let huge = run(&mut c, "tree 0 0xffffffffffffffff");
        let roots = 1usize << (PHYS_ADDR_BITS - LEVEL_SHIFT[0]); // 32768 for 48 bits
        assert!(huge.starts_with(&alloc::format!("tree: level 0 has {roots} entries")));
    }

    #[test_case]
    fn address_spaces_from_the_console() {
        let mut c = console();
        assert!(run(&mut c, "aspace map 0x400000").contains("none yet"));
        assert!(run(&mut c, "aspace new").starts_with("address space created"));
        assert!(run(&mut c, "aspace new").contains("there is one already"));
        let out = run(&mut c, "aspace map 0x400000");
        assert!(out.starts_with("mapped page 0x400000 -> frame 0x"), "{out}");
        assert!(run(&mut c, "aspace map 0xffff800000000000").contains("not a user address"));
        assert!(run(&mut c, "aspace map 0x800000000000").contains("not a canonical"));
        assert!(run(&mut c, "aspace drop").starts_with("dropped the address space"));
    }

    #[test_case]
    fn incomplete_lines_are_not_run() {
        assert_eq!(input_problem(Key::Enter, 0), None);
        assert_eq!(input_problem(Key::TooLong, 0), Some(InputProblem::TooLong));
        assert_eq!(input_problem(Key::Enter, 3), Some(InputProblem::Lost(3)));
        let msg = alloc::format!("{}", InputProblem::Lost(44));
        assert!(msg.starts_with("input: 44 bytes lost (more than "), "{msg}");
        assert!(msg.ends_with("the line was not run"), "{msg}");
    }

    #[test_case]
    fn every_command_answers() {
        let mut c = console();
        let help = run(&mut c, "help");
        for (name, _, _) in COMMANDS {
            assert!(help.contains(name), "{name} missing from help");
        }
        assert!(run(&mut c, "map").contains("usable"));
        assert!(run(&mut c, "stats").contains("zone DMA32"));
        assert!(run(&mut c, "heap").starts_with("heap: "));
        assert!(run(&mut c, "chunk").starts_with("no allocation yet"));
        assert!(run(&mut c, "chunk 0").contains("'#' allocated"));
        assert!(run(&mut c, "chunk 0x10000000000").contains("no zone manages"));
        assert!(run(&mut c, "chunk 0xffffffffffffffff").contains("is not a physical address"));
        assert!(run(&mut c, "free 0x1000 0xffffffffffffffff").contains("run past the physical"));
        assert!(run(&mut c, "free 0xfffffffffffff000 1").contains("not a physical address"));
        assert!(run(&mut c, "alloc 0xffffffffffffffff").contains("exceeds the address space"));
        assert!(run(&mut c, "alloc 1 align 0x8000000000000000").contains("not a power of two"));
        assert!(run(&mut c, "alloc 1 below 0").contains("out of memory"));
        assert_eq!(run(&mut c, ""), "");
        assert!(run(&mut c, "bogus").starts_with("unknown command `bogus`"));
        let mut out = String::new();
        assert_eq!(c.execute_line("quit", &mut out), Flow::Quit);
    }
}
