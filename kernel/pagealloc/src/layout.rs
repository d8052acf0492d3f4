//! How much metadata an allocator needs, decided before any of it exists, so that a
//! kernel can carve it out of its memory map first.

use core::sync::atomic::AtomicU64;

use crate::consts::*;
use crate::errors::LayoutError;
use crate::handedout::WORDS_PER_CHUNK;
use crate::index::LEAF;
use crate::index::{ChunkIdx, align_up};
use crate::metadata::{ALLOC_ONLY_CHUNK_WORDS, CHUNK_WORDS};
use crate::ranges::AddrRange;

/// Sizes of the metadata an allocator needs, computed before any of it exists so a
/// kernel can carve it out of its memory map first.
///
/// # Known-zero pages
/// By default every chunk keeps, next to its 512 allocation bits, 512 *known-zero* bits:
/// a free page whose bit is set is known to hold zeros (it was grown as
/// [`Contents::Zeroed`](crate::Contents::Zeroed), or freed with
/// [`PageAlloc::free_zeroed`](crate::PageAlloc::free_zeroed), e.g. an emptied page
/// table). An allocation reports those pages
/// ([`Allocation::zeroed_pages`](crate::Allocation::zeroed_pages), and the dirty runs
/// of [`PageAlloc::alloc_constrained_with`](crate::PageAlloc::alloc_constrained_with)),
/// so the caller skips clearing them: a kernel that hands out zeroed page tables clears
/// only what is dirty.
///
/// The record costs 64 bytes per 2 MiB chunk, 32 KiB per GiB of grown memory: about a
/// third of the metadata (about 100 KiB per GiB with it, 68 without). A kernel that
/// clears pages eagerly anyway, or zeroes none, turns it off with
/// [`MetadataLayout::without_known_zero`].
///
/// It stays one bit per page rather than one per coarser granule because a granule bit
/// could only say "every free page of the granule is zero": a single-page
/// `free_zeroed` (the kernel frees page tables that way) into a granule that holds
/// other dirty free pages would have to drop the knowledge, and an allocation of part of
/// a zeroed granule would clear the bit for the rest of it. Go's scavenged bitmap, whose
/// ported tests assert per-page counts, is per page too.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MetadataLayout {
    /// Chunks below the highest address the allocator manages.
    span_chunks: usize,
    /// Entries materialised at each summary level.
    level_len: [usize; SUMMARY_LEVELS],
    /// Blocks of [`PALLOC_CHUNKS_L2_ENTRIES`] chunk bitmaps in the pool.
    pub(crate) l2_blocks: usize,
    /// Whether each chunk keeps known-zero bits (see [`MetadataLayout::without_known_zero`]).
    known_zero: bool,
}

impl MetadataLayout {
    /// A layout for memory below `span_limit` (rounded up to a chunk) with room for the
    /// bitmaps of `bitmap_blocks` blocks of 16 chunks (32 MiB each).
    pub fn new(span_limit: u64, bitmap_blocks: usize) -> Result<MetadataLayout, LayoutError> {
        let l2_blocks = bitmap_blocks;
        if span_limit > 1 << PHYS_ADDR_BITS {
            return Err(LayoutError::BeyondAddressSpace { limit: span_limit });
        }
        let span_chunks =
            align_up(span_limit, PALLOC_CHUNK_BYTES) as usize >> LOG_PALLOC_CHUNK_BYTES;
        let mut level_len = [0; SUMMARY_LEVELS];
        for (l, len) in level_len.iter_mut().enumerate() {
            let chunks_per_entry = 1usize << ((LEAF - l) as u32 * SUMMARY_LEVEL_BITS);
            let n = span_chunks.div_ceil(chunks_per_entry);
            // `find` reads whole 8-entry blocks below the root.
            *len = if l == 0 {
                n
            } else {
                n.next_multiple_of(SUMMARY_BLOCK_ENTRIES)
            };
        }
        let map_len = span_chunks.div_ceil(PALLOC_CHUNKS_L2_ENTRIES);
        Ok(MetadataLayout {
            span_chunks,
            level_len,
            l2_blocks: l2_blocks.min(map_len),
            known_zero: true,
        })
    }

    /// The same layout without the known-zero record: each chunk keeps its 8 words of
    /// allocation bits only, which saves 32 KiB of metadata per GiB of grown memory
    /// (about a third of it). The allocator then knows no page to be zero:
    /// [`Allocation::zeroed_pages`](crate::Allocation::zeroed_pages) is always 0,
    /// [`PageAlloc::free_zeroed`](crate::PageAlloc::free_zeroed) frees like
    /// [`PageAlloc::free`](crate::PageAlloc::free), a grow with
    /// [`Contents::Zeroed`](crate::Contents::Zeroed) records nothing, and every page
    /// of an allocation is reported dirty. The allocations themselves (addresses,
    /// errors) do not change. See "Known-zero pages" above for the trade.
    #[must_use]
    pub const fn without_known_zero(self) -> MetadataLayout {
        MetadataLayout {
            known_zero: false,
            ..self
        }
    }

    /// Whether the allocator records which free pages are known to be zero (the
    /// default; see [`MetadataLayout::without_known_zero`]).
    pub const fn tracks_known_zero(&self) -> bool {
        self.known_zero
    }

    /// The layout for exactly these regions: the span ends at the highest region's end,
    /// and the pool holds a block for every block of chunks a region touches (each
    /// counted once, however many regions overlap it).
    ///
    /// The regions' blocks are sorted and merged: O(n log n) for up to 128 regions (on
    /// the stack, as the crate does not allocate); beyond that they are visited in sorted
    /// order by selection, O(n²) in the number of regions. Neither depends on the
    /// regions' sizes.
    pub fn for_regions(regions: &[AddrRange]) -> Result<MetadataLayout, LayoutError> {
        let span_limit = regions.iter().map(|r| r.limit).max().unwrap_or(0);
        MetadataLayout::new(span_limit, blocks_touched(regions))
    }

    /// One past the highest address the allocator can manage.
    pub const fn span_limit(&self) -> u64 {
        (self.span_chunks as u64) << LOG_PALLOC_CHUNK_BYTES
    }

    /// Entries at each summary level.
    pub const fn level_len(&self) -> [usize; SUMMARY_LEVELS] {
        self.level_len
    }

    /// Words of metadata: the length of the slice [`PageAlloc::new`](crate::PageAlloc::new) takes.
    pub fn words(&self) -> usize {
        self.summary_entries()
            + self.chunk_map_entries()
            + self.chunk_entries() * self.chunk_words()
            + self.handed_out_words()
    }

    /// Bytes of metadata: [`MetadataLayout::words`] times 8.
    pub fn bytes(&self) -> usize {
        self.words() * size_of::<AtomicU64>()
    }

    /// Summary entries: every level, root first.
    pub(crate) fn summary_entries(&self) -> usize {
        self.level_len.iter().sum()
    }

    /// Chunk-map entries: one per block of chunks in the span.
    pub(crate) const fn chunk_map_entries(&self) -> usize {
        self.span_chunks.div_ceil(PALLOC_CHUNKS_L2_ENTRIES)
    }

    /// Words of one entry of the pool of chunk bitmaps.
    pub(crate) const fn chunk_words(&self) -> usize {
        if self.known_zero {
            CHUNK_WORDS
        } else {
            ALLOC_ONLY_CHUNK_WORDS
        }
    }

    /// Entries of the pool of chunk bitmaps.
    pub(crate) const fn chunk_entries(&self) -> usize {
        self.l2_blocks * PALLOC_CHUNKS_L2_ENTRIES
    }

    /// Words of handed-out bits: eight per entry of the pool, so they are as sparse as
    /// the chunk bitmaps.
    pub(crate) const fn handed_out_words(&self) -> usize {
        self.chunk_entries() * WORDS_PER_CHUNK
    }
}

/// The blocks of the chunk map that a non-empty range touches, inclusive.
pub(crate) fn l2_blocks_of(r: &AddrRange) -> (usize, usize) {
    (
        ChunkIdx::of(r.base).map_block(),
        ChunkIdx::of(r.limit - 1).map_block(),
    )
}

/// The number of distinct blocks of the chunk map that the non-empty regions touch.
fn blocks_touched(regions: &[AddrRange]) -> usize {
    const ON_STACK: usize = 128;
    let intervals = regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.size() != 0)
        .map(|(i, r)| (l2_blocks_of(r), i));
    if regions.len() <= ON_STACK {
        let mut buf = [((0, 0), 0); ON_STACK];
        let mut n = 0;
        for iv in intervals {
            buf[n] = iv;
            n += 1;
        }
        buf[..n].sort_unstable();
        return merged_len(buf[..n].iter().map(|&(iv, _)| iv));
    }
    // Selection: the next interval in (interval, index) order after the last one.
    let mut last: Option<((usize, usize), usize)> = None;
    merged_len(core::iter::from_fn(|| {
        let next = intervals
            .clone()
            .filter(|k| last.is_none_or(|l| *k > l))
            .min()?;
        last = Some(next);
        Some(next.0)
    }))
}

/// The number of integers covered by inclusive intervals sorted by start.
fn merged_len(sorted: impl Iterator<Item = (usize, usize)>) -> usize {
    let mut total = 0;
    // The first block not counted yet (`None`: none counted).
    let mut next: Option<usize> = None;
    for (b0, b1) in sorted {
        let from = next.map_or(b0, |n| b0.max(n));
        if b1 >= from {
            total += b1 - from + 1;
            next = Some(b1 + 1);
        }
    }
    total
}
