//! How the console draws summaries and chunk bitmaps. Pure formatting, tested in the
//! kernel; `kernel/pagealloc/GUIDE.md` shows the same pictures.

use core::fmt::{self, Write};

use pagealloc::inspect::PallocSum;
use pagealloc::inspect::{LEVEL_SHIFT, PALLOC_CHUNK_PAGES};

/// Pages drawn per row of a chunk picture: 64 rows of 8 would be too tall, 1 row too wide.
pub const PAGES_PER_ROW: usize = 64;

/// Bytes of one page.
const PAGE_BYTES: u64 = 4096;

/// The address range `[base, limit)` as `0xBASE..0xLIMIT`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Range(pub u64, pub u64);

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text =
            crate::fmtbuf::FmtBuf::<48>::format(format_args!("{:#x}..{:#x}", self.0, self.1));
        f.pad(text.as_str())
    }
}

/// The addresses summary entry `index` of level `level` covers.
pub fn entry_range(level: usize, index: usize) -> Range {
    let shift = LEVEL_SHIFT[level];
    Range((index as u64) << shift, ((index as u64) + 1) << shift)
}

/// One line for a summary entry: `L3[1]  0x1000000..0x2000000  (start=.., max=.., end=..)`,
/// plus what it was if that differs. `indent` spaces first.
pub fn write_entry(
    out: &mut dyn Write,
    indent: usize,
    level: usize,
    index: usize,
    sum: PallocSum,
    was: Option<PallocSum>,
) -> fmt::Result {
    let label = crate::fmtbuf::FmtBuf::<24>::format(format_args!("L{level}[{index}]"));
    write!(
        out,
        "{:indent$}{:<10} {:<26} {}",
        "",
        label.as_str(),
        entry_range(level, index),
        sum
    )?;
    match was {
        Some(old) if old != sum => writeln!(out, "  was {old}"),
        _ => writeln!(out),
    }
}

/// The state of one page in a chunk picture.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageState {
    /// Allocated.
    Allocated,
    /// Free.
    Free,
    /// Never grown: a hole in the memory map (the allocator keeps it marked allocated).
    Hole,
    /// Part of the run a search found (`walk`).
    Found,
}

impl PageState {
    /// The character the picture uses.
    pub const fn symbol(self) -> char {
        match self {
            PageState::Allocated => '#',
            PageState::Free => '.',
            PageState::Hole => 'x',
            PageState::Found => '+',
        }
    }
}

/// The legend under a chunk picture.
pub const CHUNK_LEGEND: &str = "'#' allocated, '.' free, 'x' not managed (never grown: not usable RAM, or memory the bootloader placed the kernel, its page tables or boot data in)";

/// Draws a chunk as 8 rows of 64 pages, lowest address first, each row starting with
/// its address and split into groups of 8 pages.
pub fn write_chunk(
    out: &mut dyn Write,
    chunk_base: u64,
    state: impl Fn(usize) -> PageState,
) -> fmt::Result {
    let rows = PALLOC_CHUNK_PAGES / PAGES_PER_ROW;
    // Pad every address to the width of the last one, so the rows line up.
    let last_row = chunk_base + ((rows - 1) * PAGES_PER_ROW) as u64 * PAGE_BYTES;
    let width = 2 + (64 - last_row.leading_zeros()).div_ceil(4).max(1) as usize;
    for row in 0..rows {
        let first = row * PAGES_PER_ROW;
        write!(
            out,
            "  {:#0width$x} ",
            chunk_base + first as u64 * PAGE_BYTES
        )?;
        for page in first..first + PAGES_PER_ROW {
            if page % 8 == 0 {
                out.write_char(' ')?;
            }
            out.write_char(state(page).symbol())?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test_case]
    fn entries_show_their_range_and_change() {
        let mut s = String::new();
        let now = PallocSum::pack(0, 300, 300);
        write_entry(&mut s, 2, 4, 12, now, None).unwrap();
        write_entry(&mut s, 2, 3, 1, now, Some(now)).unwrap();
        write_entry(&mut s, 0, 0, 0, now, Some(PallocSum::pack(0, 303, 303))).unwrap();
        assert_eq!(
            s,
            "  L4[12]     0x1800000..0x1a00000       (start=0, max=300, end=300)\n\
             \x20 L3[1]      0x1000000..0x2000000       (start=0, max=300, end=300)\n\
             L0[0]      0x0..0x200000000           (start=0, max=300, end=300)  \
             was (start=0, max=303, end=303)\n"
        );
    }

    #[test_case]
    fn a_chunk_is_eight_rows_of_sixty_four_pages() {
        let mut s = String::new();
        // Pages 0..3 allocated, 3..509 free, the last 3 never grown.
        write_chunk(&mut s, 0x180_0000, |p| match p {
            0..3 => PageState::Allocated,
            509.. => PageState::Hole,
            _ => PageState::Free,
        })
        .unwrap();
        let rows: alloc::vec::Vec<&str> = s.lines().collect();
        assert_eq!(rows.len(), 8);
        assert_eq!(
            rows[0],
            "  0x1800000  ###..... ........ ........ ........ ........ ........ ........ ........"
        );
        assert_eq!(
            rows[7],
            "  0x19c0000  ........ ........ ........ ........ ........ ........ ........ .....xxx"
        );
        assert_eq!(s.matches('.').count(), 506);
        let mut s = String::new();
        write_chunk(&mut s, 0, |_| PageState::Free).unwrap();
        assert!(s.starts_with("  0x000000  ........"), "{s}");
        assert!(
            s.lines()
                .nth(7)
                .unwrap()
                .starts_with("  0x1c0000  ........")
        );
    }
}
