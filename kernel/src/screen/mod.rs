//! A live picture of physical memory on the bootloader's framebuffer.
//!
//! Memory from address 0 to the top of usable RAM is cut into cells of one 2 MiB chunk
//! of the page allocator (512 frames; down to 64 frames when memory is small, more when
//! it is huge), and each cell is a small square coloured by what it holds (see
//! [`picture`] for the rules). Above the grid: the totals, the largest free run, what
//! just happened, and the legend; left of it, the address of each row.
//!
//! [`redraw`] takes a new [`picture::Snapshot`] (the allocator's lock is held only
//! while its bitmaps are counted) and draws it outside any allocator lock. The kernel
//! binary redraws at each step of its allocator demo. Drawing is for normal code, not
//! interrupt handlers: [`redraw`] gives up if another redraw is running.
//!
//! The host tool can photograph the screen: see [`host`] and [`offer_screendump`].

pub mod canvas;
pub mod font;
pub mod host;
pub mod picture;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use bootloader_api::info::FrameBuffer;
use spin::{Mutex, Once};

use crate::fmtbuf::FmtBuf;
use crate::memory_map::Size;
use crate::mm::frames::FRAME_SIZE;
use crate::{interrupts, serial_println};
use canvas::{Canvas, Colour, Format};
use picture::{Kind, MAX_CELLS, Snapshot};

pub use host::MARKER;

/// Background of the whole screen.
pub const BACKGROUND: Colour = Colour::new(0x101820, 0x00);
/// Text.
pub const TEXT: Colour = Colour::new(0xf0f0f0, 0xff);
/// Row labels.
pub const DIM_TEXT: Colour = Colour::new(0x9aa0a8, 0xa0);

/// Lines of text above the legend: title, frame counts, largest free run, caption.
const HEADER_LINES: usize = 4;
/// Cells are at most this many pixels apart...
const MAX_PITCH: usize = 32;
/// ...and at least this many (a 2-pixel square and a 1-pixel gap).
const MIN_PITCH: usize = 3;
/// Cells are made finer than a 2 MiB chunk while there would be at most this many.
const FINE_CELLS: u64 = 2048;
/// Timer ticks [`show`] pauses for when someone watches in a window.
const PAUSE_TICKS: u64 = 150;
/// Timer ticks [`offer_screendump`] waits for the host's key.
const SCREENDUMP_WAIT_TICKS: u64 = 20 * interrupts::TIMER_HZ as u64;
/// Timer ticks [`finish`] waits for a person's key in a window.
const WINDOW_WAIT_TICKS: u64 = 60 * interrupts::TIMER_HZ as u64;

/// Where everything goes on the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Screen width in pixels.
    pub width: usize,
    /// Screen height in pixels.
    pub height: usize,
    /// Font scale of the header and legend.
    pub scale: usize,
    /// Blank pixels around everything.
    pub margin: usize,
    /// Pixels from one header line to the next.
    pub line: usize,
    /// Top of the legend.
    pub legend_y: usize,
    /// Left edge of the row labels.
    pub label_x: usize,
    /// Hex digits of a row label.
    pub label_digits: usize,
    /// Top left corner of the first cell.
    pub grid_x: usize,
    /// See `grid_x`.
    pub grid_y: usize,
    /// Pixels from one cell to the next (across and down).
    pub pitch: usize,
    /// Side of a cell's coloured square (`pitch` less a 1-pixel gap).
    pub fill: usize,
    /// Cells in a row (a power of two, so rows start at round addresses).
    pub cols: usize,
    /// Rows of cells.
    pub rows: usize,
    /// A label every this many rows.
    pub label_every: usize,
    /// Frames in a cell (a power of two, at least 64).
    pub frames_per_cell: u64,
    /// Cells, from address 0 up.
    pub ncells: usize,
}

impl Layout {
    /// The layout for a `width` x `height` screen showing memory up to `top`; `None` if
    /// the screen is too small.
    pub fn new(width: usize, height: usize, top: u64) -> Option<Layout> {
        if top == 0 {
            return None;
        }
        let scale = if width >= 1000 && height >= 600 { 2 } else { 1 };
        let margin = 4 * scale;
        let line = font::line_height(scale) + scale;
        let legend_y = margin + HEADER_LINES * line;
        let mut layout = Layout {
            width,
            height,
            scale,
            margin,
            line,
            legend_y,
            label_x: margin,
            label_digits: hex_digits(top - 1),
            grid_x: 0,
            grid_y: 0,
            pitch: 0,
            fill: 0,
            cols: 0,
            rows: 0,
            label_every: 1,
            frames_per_cell: 0,
            ncells: 0,
        };
        let legend_bottom = layout.legend().last()?.2 + line;
        layout.grid_y = legend_bottom + 2 * scale;
        layout.grid_x = margin + (layout.label_digits + 3) * font::advance(1);
        let avail_w = width.checked_sub(layout.grid_x + margin)?;
        let avail_h = height.checked_sub(layout.grid_y + margin)?;

        let cells = |fpc: u64| top.div_ceil(fpc * FRAME_SIZE);
        let mut fpc = 512;
        while fpc > 64 && cells(fpc / 2) <= FINE_CELLS {
            fpc /= 2;
        }
        // Coarser cells until they fit (a 52-bit address space needs at most 2^40 frames).
        while fpc <= 1 << 40 {
            let n = cells(fpc);
            if n <= MAX_CELLS as u64 {
                for pitch in (MIN_PITCH..=MAX_PITCH).rev() {
                    let across = avail_w / pitch;
                    if across == 0 {
                        continue;
                    }
                    let cols = 1 << across.ilog2();
                    let rows = (n as usize).div_ceil(cols);
                    if rows * pitch <= avail_h {
                        layout.pitch = pitch;
                        layout.fill = pitch - 1;
                        layout.cols = cols;
                        layout.rows = rows;
                        layout.label_every = (font::line_height(1) + 1).div_ceil(pitch);
                        layout.frames_per_cell = fpc;
                        layout.ncells = n as usize;
                        return Some(layout);
                    }
                }
            }
            fpc *= 2;
        }
        None
    }

    /// Bytes of memory in a cell.
    pub fn cell_bytes(&self) -> u64 {
        self.frames_per_cell * FRAME_SIZE
    }

    /// The cell that shows `addr`, if any.
    pub fn cell_of(&self, addr: u64) -> Option<usize> {
        let i = addr / self.cell_bytes();
        (i < self.ncells as u64).then_some(i as usize)
    }

    /// The cell that holds `search_addr`, if it is on the grid and its cells are big
    /// enough for a mark ([`pagealloc::inspect::MAX_SEARCH_ADDR`] means no page is free).
    pub fn search_mark(&self, search_addr: u64) -> Option<usize> {
        let (_, _, side) = self.cell_rect(0);
        if side < 6 || search_addr == pagealloc::inspect::MAX_SEARCH_ADDR {
            return None;
        }
        self.cell_of(search_addr)
    }

    /// The search address's mark in cell `i`: a small square in the cell's top right
    /// corner, clear of its middle and its top-left and bottom-right pixels: `(x, y, side)`.
    pub fn mark_rect(&self, i: usize) -> (usize, usize, usize) {
        let (x, y, side) = self.cell_rect(i);
        let m = side / 3;
        (x + side - 1 - m, y + 1, m)
    }

    /// The coloured square of cell `i`: `(x, y, side)`.
    pub fn cell_rect(&self, i: usize) -> (usize, usize, usize) {
        let (row, col) = (i / self.cols, i % self.cols);
        (
            self.grid_x + col * self.pitch,
            self.grid_y + row * self.pitch,
            self.fill,
        )
    }

    /// The top of header line `n` (0: title).
    pub fn line_y(&self, n: usize) -> usize {
        self.margin + n * self.line
    }

    /// Side of a legend swatch.
    pub fn swatch(&self) -> usize {
        font::GLYPH_HEIGHT * self.scale
    }

    /// The legend's entries as `(kind, x, y)` of each swatch (its label follows it),
    /// flowing over as many lines as the width needs.
    pub fn legend(&self) -> impl Iterator<Item = (Kind, usize, usize)> + '_ {
        let (mut x, mut y) = (self.margin, self.legend_y);
        Kind::ALL.into_iter().map(move |kind| {
            let w = self.legend_entry_width(kind);
            if x > self.margin && x + w > self.width - self.margin {
                x = self.margin;
                y += self.line;
            }
            let at = (kind, x, y);
            x += w + 3 * font::advance(self.scale);
            at
        })
    }

    fn legend_entry_width(&self, kind: Kind) -> usize {
        self.swatch() + self.scale * 3 + kind.label().len() * font::advance(self.scale)
    }
}

fn hex_digits(x: u64) -> usize {
    (x.checked_ilog2().unwrap_or(0) / 4 + 1) as usize
}

/// Bytes of a header line's text.
const LINE_BYTES: usize = 200;

/// The framebuffer, where things go on it, and what it shows now.
struct Screen {
    canvas: Canvas<'static>,
    layout: Layout,
    /// Whether [`Screen::draw`] ran (and drew the legend and row labels).
    drawn_once: bool,
    /// The header lines on the screen.
    lines: [FmtBuf<LINE_BYTES>; HEADER_LINES],
    /// The kind of each cell on the screen, as `Kind as u8`.
    drawn: [u8; MAX_CELLS],
    /// The cell that shows the search-address mark.
    marked: Option<usize>,
}

static SCREEN: Mutex<Option<Screen>> = Mutex::new(None);
/// The last picture taken; big, so a static rather than on the stack.
static SNAPSHOT: Mutex<Snapshot> = Mutex::new(Snapshot::new());
/// Why there is no picture, if there is none.
static UNAVAILABLE: Once<&'static str> = Once::new();

/// Takes the framebuffer for the picture and clears it. Called by [`crate::init`] after
/// memory management is set up.
pub fn init(framebuffer: Option<FrameBuffer>) {
    let Some(fb) = framebuffer else {
        UNAVAILABLE.call_once(|| "the bootloader found no framebuffer");
        return;
    };
    let info = fb.info();
    let Ok(mut canvas) = Canvas::new(fb.into_buffer(), info) else {
        UNAVAILABLE.call_once(|| "the framebuffer's pixel format is not supported");
        return;
    };
    let top = crate::mm::setup::regions()
        .usable()
        .last()
        .map_or(0, |r| r.limit);
    let Some(layout) = Layout::new(canvas.width(), canvas.height(), top) else {
        UNAVAILABLE.call_once(|| "the framebuffer is too small for the picture");
        return;
    };
    canvas.clear(BACKGROUND);
    *SCREEN.lock() = Some(Screen {
        canvas,
        layout,
        drawn_once: false,
        lines: [const { FmtBuf::new() }; HEADER_LINES],
        drawn: [0; MAX_CELLS],
        marked: None,
    });
}

/// What the picture looks like, for printing.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// The layout.
    pub layout: Layout,
    /// The framebuffer's pixel format.
    pub format: Format,
    /// Its bytes per pixel.
    pub bytes_per_pixel: usize,
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.layout;
        let format = match self.format {
            Format::Rgb => "RGB",
            Format::Bgr => "BGR",
            Format::Grey => "greyscale",
            Format::Bits { .. } => "bit-field",
        };
        write!(
            f,
            "{}x{} {format}, {} bytes a pixel; {} cells of {} frames ({})",
            l.width,
            l.height,
            self.bytes_per_pixel,
            l.ncells,
            l.frames_per_cell,
            Size(l.cell_bytes())
        )
    }
}

/// The picture's layout and framebuffer, or why there is no picture.
pub fn info() -> Result<Info, &'static str> {
    let screen = SCREEN.lock();
    match screen.as_ref() {
        Some(s) => Ok(Info {
            layout: s.layout,
            format: s.canvas.format(),
            bytes_per_pixel: s.canvas.bytes_per_pixel(),
        }),
        None => Err(UNAVAILABLE.get().copied().unwrap_or("not set up yet")),
    }
}

/// Takes a new snapshot of memory and draws it, with `caption` saying what just
/// happened (ASCII; other characters show as boxes). Returns `false` if there is no
/// framebuffer or another redraw is running.
pub fn redraw(caption: &str) -> bool {
    let Some(mut guard) = SCREEN.try_lock() else {
        return false;
    };
    let Some(screen) = guard.as_mut() else {
        return false;
    };
    let mut snapshot = SNAPSHOT.lock();
    snapshot.take(screen.layout.frames_per_cell, screen.layout.ncells);
    screen.draw(&snapshot, caption);
    true
}

/// [`redraw`], then, if someone watches in a window, a pause to let them look.
pub fn show(caption: &str) {
    if redraw(caption) && host::requests().display {
        interrupts::wait_ticks(PAUSE_TICKS);
    }
}

/// The kind of cell `i` in the last picture drawn.
pub fn cell_kind(i: usize) -> Option<Kind> {
    SNAPSHOT.lock().kind(i)
}

/// The totals of the last picture drawn.
pub fn totals() -> picture::Totals {
    SNAPSHOT.lock().totals()
}

/// The colour of the framebuffer's pixel `(x, y)`, read back, as `0xRRGGBB` (grey
/// levels repeated in all three channels).
pub fn pixel(x: usize, y: usize) -> Option<u32> {
    let screen = SCREEN.lock();
    let (r, g, b) = screen.as_ref()?.canvas.pixel(x, y)?;
    Some(u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b))
}

/// Whether [`offer_screendump`] has printed [`MARKER`].
static OFFERED: AtomicBool = AtomicBool::new(false);

/// If the host asked for a screendump (see [`host`]), prints [`MARKER`] and waits until
/// the host says it has taken it. Returns whether a screendump was taken.
pub fn offer_screendump() -> bool {
    if !host::requests().screendump || info().is_err() {
        return false;
    }
    OFFERED.store(true, Ordering::Relaxed);
    host::drain_keys();
    serial_println!("{MARKER}");
    let taken = host::wait_for_key(SCREENDUMP_WAIT_TICKS);
    if !taken {
        serial_println!(
            "screen: no word from the host within {} s; going on",
            SCREENDUMP_WAIT_TICKS / interrupts::TIMER_HZ as u64
        );
    }
    taken
}

/// Call when the picture is final: offers a screendump if none was offered yet, and when
/// someone watches in a window, waits for them to press a key there.
pub fn finish() {
    if !OFFERED.load(Ordering::Relaxed) {
        offer_screendump();
    }
    if host::requests().display && info().is_ok() {
        serial_println!(
            "screen: press a key in the QEMU window to go on (or wait {} s)",
            WINDOW_WAIT_TICKS / interrupts::TIMER_HZ as u64
        );
        host::drain_keys();
        host::wait_for_key(WINDOW_WAIT_TICKS);
    }
}

/// The free frames each CPU holds, for the header: "CPU caches 45" or "CPU caches
/// 45+61+...".
struct CpuHeld<'a>(&'a [usize]);

impl core::fmt::Display for CpuHeld<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CPU caches ")?;
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl Screen {
    /// Draws `snapshot`, repainting only what changed since the last time: on the first
    /// call everything, later the header lines whose text changed and the cells whose
    /// kind changed (a full repaint is slow in a debug build under emulation).
    fn draw(&mut self, snapshot: &Snapshot, caption: &str) {
        let l = self.layout;
        let t = snapshot.totals();
        let span = l.ncells as u64 * l.cell_bytes();
        let lines: [FmtBuf<LINE_BYTES>; HEADER_LINES] = [
            FmtBuf::format(format_args!(
                "physical memory 0x0 - {span:#x} ({}): {} cells of {} frames ({}) each",
                Size(span),
                l.ncells,
                l.frames_per_cell,
                Size(l.cell_bytes())
            )),
            FmtBuf::format(format_args!(
                "frames: {} free, {} used, {} total; heap {}, page tables {}, metadata {}; {}",
                t.free_frames,
                t.used_frames,
                t.total_frames,
                t.heap_frames,
                t.table_frames,
                t.metadata_frames,
                CpuHeld(&t.cpu_held[..crate::smp::cpus_online()])
            )),
            FmtBuf::format(format_args!(
                "largest free run: {} frames ({}) at {:#x}; next search at {:#x} (white mark)",
                t.largest_free_run,
                Size(t.largest_free_run as u64 * FRAME_SIZE),
                t.largest_free_at,
                t.search_addr
            )),
            FmtBuf::format(format_args!("> {caption}")),
        ];
        let canvas = &mut self.canvas;
        // The font is fixed-width: repaint only the characters that changed (a space
        // paints over an old character).
        let advance = font::advance(l.scale);
        let columns = (l.width - 2 * l.margin) / advance;
        for (n, (text, old)) in lines.iter().zip(&mut self.lines).enumerate() {
            let (new_bytes, old_bytes) = (text.as_str().as_bytes(), old.as_str().as_bytes());
            let y = l.line_y(n);
            for i in 0..columns.min(new_bytes.len().max(old_bytes.len())) {
                let c = new_bytes.get(i).copied().unwrap_or(b' ');
                if self.drawn_once && old_bytes.get(i).copied().unwrap_or(b' ') == c {
                    continue;
                }
                let mut utf8 = [0u8; 4];
                let glyph = char::from(c).encode_utf8(&mut utf8);
                canvas.text(l.margin + i * advance, y, glyph, l.scale, TEXT, BACKGROUND);
            }
            *old = FmtBuf::format(format_args!("{}", text.as_str()));
        }

        if !self.drawn_once {
            let swatch = l.swatch();
            for (kind, x, y) in l.legend() {
                canvas.fill_rect(x, y, swatch, swatch, kind.colour());
                let label_x = x + swatch + 3 * l.scale;
                canvas.text(label_x, y, kind.label(), l.scale, TEXT, BACKGROUND);
            }
            let label_dy = l.fill.saturating_sub(font::GLYPH_HEIGHT) / 2;
            for row in (0..l.rows).step_by(l.label_every) {
                let addr = (row * l.cols) as u64 * l.cell_bytes();
                let text: FmtBuf<24> =
                    FmtBuf::format(format_args!("{addr:#0w$x}", w = l.label_digits + 2));
                let y = l.grid_y + row * l.pitch + label_dy;
                canvas.text(l.label_x, y, text.as_str(), 1, DIM_TEXT, BACKGROUND);
            }
        }

        // The search address's mark: a moved mark repaints the cell it leaves.
        let mark = l.search_mark(snapshot.totals().search_addr);
        if self.marked != mark
            && let Some(old) = self.marked
        {
            self.drawn[old] = u8::MAX;
        }
        for (i, drawn) in self.drawn[..l.ncells].iter_mut().enumerate() {
            let kind = snapshot.kind(i).unwrap_or(Kind::NotUsable);
            if self.drawn_once && *drawn == kind as u8 {
                continue;
            }
            let (x, y, side) = l.cell_rect(i);
            canvas.fill_rect(x, y, side, side, kind.colour());
            *drawn = kind as u8;
        }
        if let Some(i) = mark {
            let (x, y, side) = l.mark_rect(i);
            canvas.fill_rect(x, y, side, side, TEXT);
        }
        self.marked = mark;
        self.drawn_once = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(l: &Layout) {
        assert!(l.ncells <= MAX_CELLS && l.ncells <= l.cols * l.rows);
        assert!(l.cols.is_power_of_two() && l.frames_per_cell.is_power_of_two());
        let (x, y, side) = l.cell_rect(l.ncells - 1);
        assert!(x + side <= l.width - l.margin && y + side <= l.height - l.margin);
        // The grid starts below the legend and right of the labels.
        for (_, sx, sy) in l.legend() {
            assert!(sy + l.swatch() <= l.grid_y && sx + l.swatch() <= l.width);
        }
        assert!(l.label_x + (l.label_digits + 2) * font::advance(1) < l.grid_x);
        assert_eq!(l.cell_of(0), Some(0));
        assert_eq!(l.cell_of(l.ncells as u64 * l.cell_bytes()), None);
        // The search-address mark stays inside its cell and clear of the pixels the
        // screen test checks: the middle and two corners.
        if let Some(i) = l.search_mark(l.cell_bytes() * (l.ncells as u64 - 1)) {
            let (x, y, side) = l.cell_rect(i);
            let (mx, my, m) = l.mark_rect(i);
            assert!(m >= 2 && mx > x && my > y && mx + m < x + side && my + m < y + side);
            let inside = |px: usize, py: usize| mx <= px && px < mx + m && my <= py && py < my + m;
            assert!(!inside(x + side / 2, y + side / 2) && !inside(x, y));
            assert!(!inside(x + side - 1, y + side - 1));
        }
        assert_eq!(l.search_mark(pagealloc::inspect::MAX_SEARCH_ADDR), None);
    }

    #[test_case]
    fn layouts_for_small_and_large_memory() {
        // 128 MiB, 512 MiB: 64-frame cells; 1 GiB: 128 frames; 5 GiB: 2 MiB chunks.
        for (top, fpc, ncells) in [
            (128u64 << 20, 64, 512),
            (512 << 20, 64, 2048),
            (1 << 30, 128, 2048),
            (6 << 30, 512, 3072),
            (1 << 40, 1 << 15, 8192),
        ] {
            let l = Layout::new(1280, 720, top).expect("a layout");
            assert_eq!((l.frames_per_cell, l.ncells), (fpc, ncells), "top {top:#x}");
            check(&l);
        }
        // A top that is not a multiple of the cell size gets a last, partial cell.
        let l = Layout::new(1280, 720, (128 << 20) + 4096).unwrap();
        assert_eq!(l.ncells, 513);
        check(&l);
    }

    #[test_case]
    fn layouts_for_other_screens() {
        for (w, h) in [
            (640, 480),
            (800, 600),
            (1024, 768),
            (1920, 1080),
            (320, 200),
        ] {
            let l = Layout::new(w, h, 5 << 30).expect("a layout");
            check(&l);
        }
        assert_eq!(Layout::new(40, 30, 1 << 30), None, "too small");
        assert_eq!(Layout::new(1280, 720, 0), None, "no memory");
    }

    #[test_case]
    fn cells_and_addresses() {
        let l = Layout::new(1280, 720, 512 << 20).unwrap();
        assert_eq!(l.cell_bytes(), 256 << 10);
        assert_eq!(l.cell_of(0x3ffff), Some(0));
        assert_eq!(l.cell_of(0x40000), Some(1));
        let (x0, y0, side) = l.cell_rect(0);
        assert_eq!((x0, y0), (l.grid_x, l.grid_y));
        assert_eq!(side, l.pitch - 1);
        assert_eq!(l.cell_rect(1).0, x0 + l.pitch);
        assert_eq!(l.cell_rect(l.cols), (x0, y0 + l.pitch, side));
    }
}
