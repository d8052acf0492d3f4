//! The picture of memory (`kernel::screen`) under QEMU: draw a state the test knows, check
//! the cells' kinds and the framebuffer's pixels, and name pixels for the host to check
//! in a screendump (`screen: expect X Y RRGGBB WHAT` lines, then `screen: drawn`; see
//! boot/src/screen.rs). `./run-qemu.sh test` runs it with `BOOT_SCREEN_CHECK=1`, through
//! BIOS and UEFI.
//!
//! The expected kinds come from what the test did and from the memory map, the page
//! tables and the heap's mappings, looked up here, not from the picture's own code.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(kernel::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::vec::Vec;
use bootloader_api::info::MemoryRegionKind;
use kernel::mm::{self, heap};
use kernel::screen::canvas::{Colour, Format};
use kernel::screen::picture::Kind;
use kernel::screen::{self, BACKGROUND, Layout, TEXT};
use kernel::serial_println;
use x86_64::structures::paging::{PageTable, PageTableFlags};
use x86_64::{PhysAddr, VirtAddr};

kernel::test_entry_point!();

const FRAME: u64 = 4096;
const HUGE: u64 = 2 << 20;

/// A cell the test knows the kind of, and why.
struct Known {
    cell: usize,
    kind: Kind,
    why: &'static str,
}

/// A pixel and the colour it must show.
struct Pixel {
    x: usize,
    y: usize,
    rgb: u32,
    what: &'static str,
    cell: Option<usize>,
}

/// The colour as it reads back from a framebuffer of `format`.
fn shown(c: Colour, format: Format) -> u32 {
    match format {
        Format::Grey => u32::from(c.grey) * 0x010101,
        _ => c.rgb(),
    }
}

/// Cells holding any of `[base, base + bytes)`.
fn cells_of(l: &Layout, base: u64, bytes: u64) -> core::ops::Range<usize> {
    let first = l.cell_of(base).expect("inside the picture");
    let last = l.cell_of(base + bytes - 1).expect("inside the picture");
    first..last + 1
}

fn overlaps(l: &Layout, cell: usize, base: u64, limit: u64) -> bool {
    let start = cell as u64 * l.cell_bytes();
    base < start + l.cell_bytes() && start < limit
}

/// The cells that hold heap frames, found by translating every heap page.
fn heap_cells(l: &Layout, out: &mut Vec<usize>) {
    let size = heap::stats().size as u64;
    for page in (0..size).step_by(FRAME as usize) {
        let phys = mm::translate(VirtAddr::new(heap::HEAP_START + page)).expect("heap mapped");
        out.push(l.cell_of(phys.as_u64()).expect("heap frames lie in memory"));
    }
    out.sort_unstable();
    out.dedup();
}

/// The kernel's top-level table and the tables its entries point at, two levels down.
fn kernel_tables(out: &mut Vec<u64>) {
    let read = |addr: u64| {
        let table = mm::phys_to_virt(PhysAddr::new(addr)).as_ptr::<PageTable>();
        // SAFETY: `addr` is the kernel's top-level table or a table a present, non-huge
        // entry points at; all physical memory is mapped, and the tables are only read.
        unsafe { &*table }
    };
    let pml4 = mm::kernel_pml4().start_address().as_u64();
    out.push(pml4);
    for e4 in read(pml4).iter().filter(|e| !e.is_unused()) {
        out.push(e4.addr().as_u64());
        for e3 in read(e4.addr().as_u64()).iter() {
            let flags = e3.flags();
            if flags.contains(PageTableFlags::PRESENT) && !flags.contains(PageTableFlags::HUGE_PAGE)
            {
                out.push(e3.addr().as_u64());
            }
        }
    }
}

#[test_case]
fn known_cells_are_drawn_in_their_colours() {
    let info = screen::info().expect("QEMU's VGA card gives the kernel a framebuffer");
    let l = info.layout;
    assert!(
        l.cell_bytes() <= HUGE / 2,
        "the test needs cells finer than 2 MiB"
    );
    // Everything the test allocates on the heap, allocated before the picture, so the
    // heap does not grow after it.
    let mut known: Vec<Known> = Vec::with_capacity(64);
    let mut pixels: Vec<Pixel> = Vec::with_capacity(256);
    let mut heap = Vec::with_capacity(512);
    let mut tables = Vec::with_capacity(4096);

    // A 2 MiB frame held: its cells are full. One allocated and freed: free. One with its
    // first 32 frames freed: its first cell partly used, the others full.
    let held = mm::alloc_huge_frame().expect("a 2 MiB frame");
    let held_at = held.start_address().as_u64();
    let freed = mm::alloc_huge_frame().expect("a 2 MiB frame");
    let freed_at = freed.start_address().as_u64();
    let (half, _) = mm::alloc_huge_frame().expect("a 2 MiB frame").into_raw();
    let half_at = half.start_address().as_u64();
    // Freed only now, so that `half` cannot take its place.
    drop(freed);
    mm::free_frames(PhysAddr::new(half_at), 32).expect("free 32 frames");

    assert!(screen::redraw(
        "screen test: 2 MiB held, 2 MiB freed, 2 MiB less 32 frames held"
    ));

    for cell in cells_of(&l, held_at, HUGE) {
        known.push(Known {
            cell,
            kind: Kind::Full,
            why: "full: the test holds this 2 MiB frame",
        });
    }
    for cell in cells_of(&l, freed_at, HUGE) {
        known.push(Known {
            cell,
            kind: Kind::Free,
            why: "free: the test freed this 2 MiB frame",
        });
    }
    for cell in cells_of(&l, half_at, HUGE) {
        let (kind, why) = if cell == l.cell_of(half_at).unwrap() {
            (Kind::Partial, "partly used: 32 of its frames freed")
        } else {
            (Kind::Full, "full: the rest of the half-freed 2 MiB frame")
        };
        known.push(Known { cell, kind, why });
    }
    let meta = mm::init_report().unwrap().metadata;
    let meta_cell = l.cell_of(meta.base).unwrap();
    known.push(Known {
        cell: meta_cell,
        kind: Kind::Metadata,
        why: "allocator metadata",
    });
    let holds_meta = |cell: usize| overlaps(&l, cell, meta.base, meta.limit);

    heap_cells(&l, &mut heap);
    let heap_cell = *heap
        .iter()
        .find(|&&c| !holds_meta(c))
        .expect("a heap frame away from the metadata");
    known.push(Known {
        cell: heap_cell,
        kind: Kind::Heap,
        why: "kernel heap: a frame that a heap page translates to",
    });

    // Page tables win over everything but metadata and heap.
    kernel_tables(&mut tables);
    let table_cell = tables
        .iter()
        .filter_map(|&t| l.cell_of(t))
        .find(|&c| !holds_meta(c) && heap.binary_search(&c).is_err())
        .expect("a kernel page table away from heap and metadata");
    known.push(Known {
        cell: table_cell,
        kind: Kind::PageTables,
        why: "page tables: a table of the kernel's",
    });

    // Not usable: no usable memory, and nothing the bootloader placed (page tables live
    // there).
    let regions = mm::setup::regions();
    let hole = (0..l.ncells)
        .find(|&c| {
            !regions
                .usable()
                .iter()
                .any(|r| overlaps(&l, c, r.base, r.limit))
                && !regions.reserved().iter().any(|(r, k)| {
                    *k == MemoryRegionKind::Bootloader && overlaps(&l, c, r.base, r.limit)
                })
        })
        .expect("a cell with no usable memory");
    known.push(Known {
        cell: hole,
        kind: Kind::NotUsable,
        why: "not usable: no usable memory in the map",
    });

    // The snapshot agrees with the allocator's own counts.
    let totals = screen::totals();
    let stats = mm::stats();
    assert_eq!(
        (
            totals.total_frames,
            totals.free_frames,
            totals.largest_free_run
        ),
        (stats.total_pages, stats.free_pages, stats.largest_free_run)
    );
    assert_eq!(totals.heap_frames as u64, heap::stats().size as u64 / FRAME);
    assert!(totals.table_frames >= tables.len());
    // The frames each CPU holds add up to what the allocator counts in CPU caches.
    assert_eq!(totals.cpu_held.iter().sum::<usize>(), stats.cached_pages);

    for k in &known {
        assert_eq!(
            screen::cell_kind(k.cell),
            Some(k.kind),
            "cell {} ({})",
            k.cell,
            k.why
        );
    }

    // Pixels: the middle of every known cell, and two corners and the gap after one cell
    // of each kind.
    let format = info.format;
    let mut corners_done = [false; Kind::ALL.len()];
    for k in &known {
        let (x, y, side) = l.cell_rect(k.cell);
        let rgb = shown(k.kind.colour(), format);
        let mut at = |x, y, rgb, what| {
            pixels.push(Pixel {
                x,
                y,
                rgb,
                what,
                cell: Some(k.cell),
            })
        };
        at(x + side / 2, y + side / 2, rgb, k.why);
        if !core::mem::replace(&mut corners_done[k.kind as usize], true) {
            at(x, y, rgb, k.why);
            at(x + side - 1, y + side - 1, rgb, k.why);
            at(
                x + side,
                y,
                shown(BACKGROUND, format),
                "the gap right of a cell",
            );
        }
    }
    // The search address's mark, in the cell that holds it.
    if let Some(i) = l.search_mark(totals.search_addr) {
        let (x, y, m) = l.mark_rect(i);
        pixels.push(Pixel {
            x: x + m / 2,
            y: y + m / 2,
            rgb: shown(screen::TEXT, format),
            what: "the search address's mark",
            cell: Some(i),
        });
    }
    // The legend's swatches, and the first letter of the title, "P":
    // row 0 of its glyph is `11110`.
    let swatch = l.swatch();
    for (kind, x, y) in l.legend() {
        let rgb = shown(kind.colour(), format);
        pixels.push(Pixel {
            x: x + swatch / 2,
            y: y + swatch / 2,
            rgb,
            what: kind.label(),
            cell: None,
        });
    }
    let (tx, ty) = (l.margin, l.line_y(0));
    pixels.push(Pixel {
        x: tx,
        y: ty,
        rgb: shown(TEXT, format),
        what: "title: P, top left",
        cell: None,
    });
    pixels.push(Pixel {
        x: tx + 4 * l.scale,
        y: ty,
        rgb: shown(BACKGROUND, format),
        what: "title: P, top right is blank",
        cell: None,
    });

    // The harness printed the test's name without a line end.
    serial_println!();
    for p in &pixels {
        assert_eq!(
            screen::pixel(p.x, p.y),
            Some(p.rgb),
            "framebuffer pixel ({}, {}): {}",
            p.x,
            p.y,
            p.what
        );
        match p.cell {
            Some(c) => serial_println!(
                "screen: expect {} {} {:06x} {} (cell {c} at {:#x})",
                p.x,
                p.y,
                p.rgb,
                p.what,
                c as u64 * l.cell_bytes()
            ),
            None => serial_println!("screen: expect {} {} {:06x} {}", p.x, p.y, p.rgb, p.what),
        }
    }
    serial_println!(
        "{} cells and {} pixels as expected in the framebuffer ({})",
        known.len(),
        pixels.len(),
        info
    );
    // The host takes its screendump now, if it asked for one.
    screen::offer_screendump();

    drop(held);
    mm::free_frames(PhysAddr::new(half_at + 32 * FRAME), 512 - 32).expect("free the rest");
}

#[test_case]
fn a_redraw_follows_an_allocation() {
    let l = screen::info().unwrap().layout;
    let frames = mm::alloc_huge_frame().unwrap();
    let cell = l.cell_of(frames.start_address().as_u64()).unwrap();
    assert!(screen::redraw("screen test: one more 2 MiB frame"));
    assert_eq!(screen::cell_kind(cell), Some(Kind::Full));
    let (x, y, _) = l.cell_rect(cell);
    let format = screen::info().unwrap().format;
    assert_eq!(
        screen::pixel(x, y),
        Some(shown(Kind::Full.colour(), format))
    );
    drop(frames);
    assert!(screen::redraw("screen test: and freed again"));
    assert_eq!(screen::cell_kind(cell), Some(Kind::Free));
    assert_eq!(
        screen::pixel(x, y),
        Some(shown(Kind::Free.colour(), format))
    );
}
