//! What the picture shows: physical memory cut into cells of equal size, each with a
//! [`Kind`], read from the frame allocator, the kernel heap's mappings and the page
//! tables.
//!
//! A cell's kind, first match wins:
//! 1. **allocator metadata** if any of its frames holds the page allocator's metadata;
//! 2. **kernel heap** if any of its frames backs a heap page;
//! 3. **page tables** if any of its frames is a page table of the kernel or of a live
//!    address space;
//! 4. **not usable** if the allocator manages none of its frames (a hole in the memory
//!    map, firmware memory, or what the bootloader placed: kernel image, boot data);
//! 5. **free**, **full** or **partly used** by the managed frames alone.
//!
//! Approximations:
//! - a cell takes the colour of the first rule that matches, so one heap frame or page
//!   table makes a whole cell blue or cyan, whatever else it holds;
//! - heap and page-table frames are found by walking the page tables without locks (on
//!   this single-CPU kernel nothing changes them meanwhile: no interrupt handler maps
//!   memory);
//! - the kernel's tables outside the heap's top-level entry are walked once, for the
//!   first picture, since only the heap changes the kernel's tables after boot;
//! - page tables of address spaces beyond [`crate::mm::address_space::MAX_TRACKED`] are
//!   missed;
//! - frames in a CPU's page cache count as free (as [`crate::mm::stats`] counts them),
//!   although the allocator's bitmap shows them allocated.

use crate::mm::address_space;
use crate::mm::frames::{self, FRAME_SIZE, Zone};
use crate::mm::heap::{self, HEAP_START};
use crate::mm::{self, pagealloc};

use super::canvas::Colour;

/// The most cells a picture has.
pub const MAX_CELLS: usize = 8192;

/// Frames in a chunk of the page allocator (one 2 MiB bitmap).
const CHUNK_FRAMES: u64 = 512;

/// What a cell holds; see the [module](self) documentation for the rules.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Every managed frame is free.
    Free,
    /// Some managed frames are free, some not.
    Partial,
    /// No managed frame is free.
    Full,
    /// No frame is managed by the allocator.
    NotUsable,
    /// Holds the page allocator's metadata.
    Metadata,
    /// Holds kernel heap frames.
    Heap,
    /// Holds page tables.
    PageTables,
}

impl Kind {
    /// Every kind, in the legend's order.
    pub const ALL: [Kind; 7] = [
        Kind::Free,
        Kind::Partial,
        Kind::Full,
        Kind::NotUsable,
        Kind::Metadata,
        Kind::Heap,
        Kind::PageTables,
    ];

    /// The legend's text.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Free => "free",
            Kind::Partial => "partly used",
            Kind::Full => "full",
            Kind::NotUsable => "not usable",
            Kind::Metadata => "allocator metadata",
            Kind::Heap => "kernel heap",
            Kind::PageTables => "page tables",
        }
    }

    /// The colour cells of this kind are drawn in.
    pub const fn colour(self) -> Colour {
        match self {
            Kind::Free => Colour::new(0x2ecc40, 0xa0),
            Kind::Partial => Colour::new(0xffc107, 0xe0),
            Kind::Full => Colour::new(0xe03c31, 0x70),
            Kind::NotUsable => Colour::new(0x505050, 0x40),
            Kind::Metadata => Colour::new(0xd040e0, 0xff),
            Kind::Heap => Colour::new(0x3d6bff, 0x58),
            Kind::PageTables => Colour::new(0x00e5e5, 0xc0),
        }
    }
}

const METADATA: u8 = 1;
const HEAP: u8 = 2;
const TABLES: u8 = 4;

/// Counts of one cell.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Cell {
    /// Frames the allocator manages.
    managed: u32,
    /// Managed frames in use.
    used: u32,
    /// `METADATA`, `HEAP`, `TABLES`.
    holds: u8,
}

impl Cell {
    const EMPTY: Cell = Cell {
        managed: 0,
        used: 0,
        holds: 0,
    };

    fn kind(self) -> Kind {
        if self.holds & METADATA != 0 {
            Kind::Metadata
        } else if self.holds & HEAP != 0 {
            Kind::Heap
        } else if self.holds & TABLES != 0 {
            Kind::PageTables
        } else if self.managed == 0 {
            Kind::NotUsable
        } else if self.used == 0 {
            Kind::Free
        } else if self.used >= self.managed {
            Kind::Full
        } else {
            Kind::Partial
        }
    }
}

/// The numbers the picture prints.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Frames the allocator manages.
    pub total_frames: usize,
    /// Free frames, including those in CPU caches.
    pub free_frames: usize,
    /// Frames handed out (metadata included).
    pub used_frames: usize,
    /// The longest run of free frames the allocator can hand out at once.
    pub largest_free_run: usize,
    /// Where that run starts.
    pub largest_free_at: u64,
    /// The search address of the zone ordinary requests try first (where the next
    /// search starts), or [`pagealloc::inspect::MAX_SEARCH_ADDR`] if it has no free page.
    pub search_addr: u64,
    /// Frames backing the kernel heap.
    pub heap_frames: usize,
    /// Page-table frames of the kernel and the live address spaces.
    pub table_frames: usize,
    /// Frames of allocator metadata.
    pub metadata_frames: usize,
    /// Free frames each CPU holds in its page cache and batches (counted in
    /// `free_frames`), for the CPUs online.
    pub cpu_held: [usize; crate::smp::MAX_CPUS],
}

/// The state of every cell at one moment.
pub struct Snapshot {
    frames_per_cell: u64,
    ncells: usize,
    cells: [Cell; MAX_CELLS],
    totals: Totals,
    /// Bit per cell: holds a page table of the kernel outside the heap's top-level entry.
    kernel_tables: [u64; MAX_CELLS / 64],
    /// How many such tables there are.
    kernel_table_frames: usize,
    /// The cell size `kernel_tables` was made for; 0 before it is made.
    kernel_tables_cell_bytes: u64,
}

impl Snapshot {
    /// An empty snapshot (no cells).
    pub const fn new() -> Snapshot {
        Snapshot {
            frames_per_cell: 0,
            ncells: 0,
            cells: [Cell::EMPTY; MAX_CELLS],
            totals: Totals {
                total_frames: 0,
                free_frames: 0,
                used_frames: 0,
                largest_free_run: 0,
                largest_free_at: 0,
                search_addr: 0,
                heap_frames: 0,
                table_frames: 0,
                metadata_frames: 0,
                cpu_held: [0; crate::smp::MAX_CPUS],
            },
            kernel_tables: [0; MAX_CELLS / 64],
            kernel_table_frames: 0,
            kernel_tables_cell_bytes: 0,
        }
    }

    /// Cells in the snapshot.
    pub fn ncells(&self) -> usize {
        self.ncells
    }

    /// The kind of cell `i`.
    pub fn kind(&self, i: usize) -> Option<Kind> {
        self.cells[..self.ncells].get(i).map(|c| c.kind())
    }

    /// The totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Looks at memory now: `ncells` cells of `frames_per_cell` frames from address 0.
    /// The allocator's lock is held only while its bitmaps are counted.
    pub fn take(&mut self, frames_per_cell: u64, ncells: usize) {
        assert!(ncells <= MAX_CELLS, "{ncells} cells, at most {MAX_CELLS}");
        assert!(
            frames_per_cell >= 64 && frames_per_cell.is_power_of_two(),
            "cells are whole 64-frame blocks"
        );
        self.frames_per_cell = frames_per_cell;
        self.ncells = ncells;
        self.totals = Totals::default();
        let cells = &mut self.cells[..ncells];
        cells.fill(Cell::EMPTY);
        let cell_bytes = frames_per_cell * FRAME_SIZE;
        let span = ncells as u64 * cell_bytes;

        let regions = mm::setup::regions();
        for r in regions.usable() {
            for_each_piece(r.base, r.limit.min(span), cell_bytes, |i, n| {
                cells[i].managed += n as u32;
            });
        }
        let meta = mm::init_report().map_or(pagealloc::AddrRange::default(), |r| r.metadata);
        self.totals.metadata_frames = (meta.size() / FRAME_SIZE) as usize;
        for_each_piece(meta.base, meta.limit.min(span), cell_bytes, |i, _| {
            cells[i].holds |= METADATA;
        });

        let totals = &mut self.totals;
        frames::with_zones(|zones| {
            for (i, cell) in cells.iter_mut().enumerate() {
                // Frames without a bitmap, and those no grow covered, count as allocated.
                let base = i as u64 * cell_bytes;
                let mut allocated = 0;
                let mut at = base;
                while at < base + cell_bytes {
                    let idx = ((at / FRAME_SIZE) % CHUNK_FRAMES) as usize;
                    let n = (CHUNK_FRAMES as usize - idx)
                        .min(((base + cell_bytes - at) / FRAME_SIZE) as usize);
                    let chunk = pagealloc::inspect::ChunkIdx::of(at);
                    allocated += match zones.zones[Zone::of(at)]
                        .as_ref()
                        .and_then(|pa| pa.inspect().chunk_data(chunk))
                    {
                        Some(data) => data.alloc_bits().popcnt_range(idx, n),
                        None => n,
                    };
                    at += n as u64 * FRAME_SIZE;
                }
                let unmanaged = frames_per_cell as usize - cell.managed as usize;
                cell.used = allocated.saturating_sub(unmanaged) as u32;
            }
            if let Some(pa) = Zone::FALLBACK.iter().find_map(|&z| zones.zones[z].as_ref()) {
                totals.search_addr = pa.inspect().search_addr();
            }
            for pa in zones.zones.iter().flatten() {
                totals.total_frames += pa.total_pages();
                totals.free_frames += pa.free_pages();
                let run = pa.largest_free_run();
                if run > totals.largest_free_run {
                    totals.largest_free_run = run;
                    totals.largest_free_at = pa
                        .free_runs()
                        .find(|&(_, n)| n == run)
                        .map_or(0, |(base, _)| base);
                }
            }
        });
        // Then what the CPUs hold free (each CPU under its own lock, the zones' lock no
        // longer held; nothing here allocates, so drawing leaves memory as it finds it).
        totals.cpu_held = [0; crate::smp::MAX_CPUS];
        frames::for_each_held_frame(|cpu, page| {
            totals.cpu_held[cpu] += 1;
            totals.free_frames += 1;
            if let Some(cell) = cells.get_mut((page / cell_bytes) as usize) {
                cell.used = cell.used.saturating_sub(1);
            }
        });
        totals.used_frames = totals.total_frames - totals.free_frames;

        // The page tables, and the heap pages they map. Only the heap changes the
        // kernel's tables, and only under its own top-level entry: the rest is walked
        // once (it is big: the mapping of all physical memory has a table per GiB).
        let limit = mapped_limit();
        let kernel_pml4 = mm::kernel_pml4().start_address().as_u64();
        let heap_p4 = p4_index(HEAP_START);
        if self.kernel_tables_cell_bytes != cell_bytes {
            let (bits, count) = (&mut self.kernel_tables, &mut self.kernel_table_frames);
            bits.fill(0);
            *count = 0;
            walk(kernel_pml4, true, |p4| p4 != heap_p4, limit, &mut |v| {
                if let Visit::Table(addr) = v {
                    *count += 1;
                    let i = (addr / cell_bytes) as usize;
                    if i < MAX_CELLS {
                        bits[i / 64] |= 1 << (i % 64);
                    }
                }
            });
            self.kernel_tables_cell_bytes = cell_bytes;
        }
        totals.table_frames = self.kernel_table_frames;
        for (i, cell) in cells.iter_mut().enumerate() {
            if self.kernel_tables[i / 64] & (1 << (i % 64)) != 0 {
                cell.holds |= TABLES;
            }
        }
        let heap_end = HEAP_START + heap::stats().size as u64;
        let mut mark = |addr: u64, what: u8| {
            if let Some(cell) = cells.get_mut((addr / cell_bytes) as usize) {
                cell.holds |= what;
            }
        };
        let mut visit = |v: Visit| match v {
            Visit::Table(addr) => {
                totals.table_frames += 1;
                mark(addr, TABLES);
            }
            Visit::Page { virt, phys } => {
                if (HEAP_START..heap_end).contains(&virt) {
                    totals.heap_frames += 1;
                    mark(phys, HEAP);
                }
            }
        };
        walk(kernel_pml4, false, |p4| p4 == heap_p4, limit, &mut visit);
        // An address space's upper half is the kernel's, walked above.
        address_space::for_each_live(|pml4| {
            let pml4 = pml4.start_address().as_u64();
            walk(pml4, true, |p4| p4 < 256, limit, &mut visit);
        });
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::new()
    }
}

/// Calls `f(cell, frames)` for each cell's part of `[base, limit)`.
fn for_each_piece(base: u64, limit: u64, cell_bytes: u64, mut f: impl FnMut(usize, u64)) {
    let mut at = base;
    while at < limit {
        let end = ((at / cell_bytes + 1) * cell_bytes).min(limit);
        f((at / cell_bytes) as usize, (end - at) / FRAME_SIZE);
        at = end;
    }
}

/// The end of the physical memory the bootloader mapped: the top of its memory map, but
/// at least 4 GiB (it always maps the first 4 GiB).
fn mapped_limit() -> u64 {
    let regions = mm::setup::regions();
    let usable = regions.usable().iter().map(|r| r.limit);
    let other = regions.reserved().iter().map(|(r, _)| r.limit);
    usable.chain(other).fold(4 << 30, u64::max)
}

/// What [`walk`] finds.
enum Visit {
    /// A page table (any level) at this physical address.
    Table(u64),
    /// A 4 KiB page mapped at `virt` to `phys`.
    Page { virt: u64, phys: u64 },
}

const PRESENT: u64 = 1;
const HUGE_PAGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The top-level index of `addr`.
const fn p4_index(addr: u64) -> usize {
    ((addr >> 39) & 511) as usize
}

/// Visits the top-level table at `pml4` (if `top`), every table below the entries that
/// `entries` accepts, and the 4 KiB pages mapped in the heap's top-level entry (the only
/// pages the picture needs). Huge pages are leaves and not visited. Tables at or above
/// `limit` (not mapped, so not readable) are reported but not read.
fn walk(
    pml4: u64,
    top: bool,
    entries: impl Fn(usize) -> bool,
    limit: u64,
    visit: &mut impl FnMut(Visit),
) {
    let heap_p4 = p4_index(HEAP_START);
    if top {
        visit(Visit::Table(pml4));
    }
    for (p4, e4) in read_table(pml4, limit).iter().enumerate() {
        if !entries(p4) || e4 & PRESENT == 0 {
            continue;
        }
        let pdpt = e4 & ADDR_MASK;
        visit(Visit::Table(pdpt));
        for (p3, e3) in read_table(pdpt, limit).iter().enumerate() {
            if e3 & PRESENT == 0 || e3 & HUGE_PAGE != 0 {
                continue;
            }
            let pd = e3 & ADDR_MASK;
            visit(Visit::Table(pd));
            for (p2, e2) in read_table(pd, limit).iter().enumerate() {
                if e2 & PRESENT == 0 || e2 & HUGE_PAGE != 0 {
                    continue;
                }
                let pt = e2 & ADDR_MASK;
                visit(Visit::Table(pt));
                if p4 != heap_p4 {
                    continue;
                }
                for (p1, e1) in read_table(pt, limit).iter().enumerate() {
                    if e1 & PRESENT != 0 {
                        let index = p4 << 39 | p3 << 30 | p2 << 21 | p1 << 12;
                        let virt = sign_extend(index as u64);
                        visit(Visit::Page {
                            virt,
                            phys: e1 & ADDR_MASK,
                        });
                    }
                }
            }
        }
    }
}

fn sign_extend(addr: u64) -> u64 {
    ((addr << 16) as i64 >> 16) as u64
}

/// The entries of the page table at physical address `addr`, or none if it lies
/// outside the mapped physical memory.
fn read_table(addr: u64, limit: u64) -> &'static [u64] {
    if addr + FRAME_SIZE > limit {
        return &[];
    }
    let ptr = mm::phys_to_virt(x86_64::PhysAddr::new(addr)).as_ptr::<[u64; 512]>();
    // SAFETY: `addr` comes from a present entry that points at a lower-level table, so
    // it is a page-table frame; it lies below `limit`, inside the mapping of all
    // physical memory. The tables are only read, and outlive the walk: the kernel's are
    // never freed, and an address space's are freed only after it leaves the list that
    // `for_each_live` holds locked during the walk.
    unsafe { &*ptr }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(managed: u32, used: u32, holds: u8) -> Cell {
        Cell {
            managed,
            used,
            holds,
        }
    }

    #[test_case]
    fn kinds_and_their_priority() {
        assert_eq!(cell(64, 0, 0).kind(), Kind::Free);
        assert_eq!(cell(64, 1, 0).kind(), Kind::Partial);
        assert_eq!(cell(64, 64, 0).kind(), Kind::Full);
        assert_eq!(cell(0, 0, 0).kind(), Kind::NotUsable);
        // Only the managed frames count: half a cell usable and free is free.
        assert_eq!(cell(32, 0, 0).kind(), Kind::Free);
        assert_eq!(cell(32, 32, 0).kind(), Kind::Full);
        // Metadata, then heap, then page tables win over the allocator's view.
        assert_eq!(
            cell(64, 64, METADATA | HEAP | TABLES).kind(),
            Kind::Metadata
        );
        assert_eq!(cell(64, 3, HEAP | TABLES).kind(), Kind::Heap);
        assert_eq!(cell(0, 0, TABLES).kind(), Kind::PageTables);
    }

    #[test_case]
    fn every_kind_has_its_own_colour_and_grey() {
        for (i, a) in Kind::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "Kind::ALL is in declaration order");
            for b in &Kind::ALL[i + 1..] {
                assert_ne!(a.colour().rgb(), b.colour().rgb(), "{a:?} and {b:?}");
                assert_ne!(a.colour().grey, b.colour().grey, "{a:?} and {b:?}");
            }
        }
    }

    #[test_case]
    fn ranges_cut_into_cells() {
        let mut pieces = [(0usize, 0u64); 4];
        let mut n = 0;
        // 0x3f000..0x81000 with 64-frame (256 KiB) cells: 1 frame, 64 frames, 1 frame.
        for_each_piece(0x3f000, 0x81000, 0x40000, |cell, frames| {
            pieces[n] = (cell, frames);
            n += 1;
        });
        assert_eq!(pieces[..n], [(0, 1), (1, 64), (2, 1)]);
        for_each_piece(0x5000, 0x5000, 0x40000, |_, _| panic!("empty range"));
    }
}
