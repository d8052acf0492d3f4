//! Index arithmetic: chunks, pages in a chunk, and entries of each summary level, all
//! computed from physical addresses. Go: the helpers of `mpagealloc.go` and
//! `mpagealloc_64bit.go`.

use core::fmt;

use crate::consts::*;

/// The highest physical address; a search address here means "nothing is free".
/// Go: `maxSearchAddr` (with `arenaBaseOffset` = 0).
pub const MAX_SEARCH_ADDR: u64 = (1 << PHYS_ADDR_BITS) - 1;

/// The largest request, in pages: the whole physical address space.
pub const MAX_NPAGES: usize = MAX_CHUNKS * PALLOC_CHUNK_PAGES;

/// The leaf level.
pub(crate) const LEAF: usize = SUMMARY_LEVELS - 1;

/// The index of a 2 MiB chunk of physical memory. Go: `chunkIdx`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ChunkIdx(pub(crate) usize);

impl ChunkIdx {
    #[cfg_attr(not(any(feature = "testutil", feature = "inspect")), allow(dead_code))]
    /// The chunk with index `i` (the chunk at address `i` * 2 MiB).
    pub const fn new(i: usize) -> ChunkIdx {
        ChunkIdx(i)
    }

    #[cfg_attr(not(any(feature = "testutil", feature = "inspect")), allow(dead_code))]
    /// The chunk's index: its base address divided by 2 MiB.
    pub const fn index(self) -> usize {
        self.0
    }

    /// The chunk that holds `addr`. Go: `chunkIndex`.
    pub const fn of(addr: u64) -> ChunkIdx {
        ChunkIdx((addr >> LOG_PALLOC_CHUNK_BYTES) as usize)
    }

    /// The first address of the chunk. Go: `chunkBase`.
    pub const fn base(self) -> u64 {
        (self.0 as u64) << LOG_PALLOC_CHUNK_BYTES
    }

    /// Index of the chunk map's block that holds this chunk. Go: `chunkIdx.l1`.
    pub(crate) const fn map_block(self) -> usize {
        self.0 >> PALLOC_CHUNKS_L2_BITS
    }

    /// Index of this chunk inside its block. Go: `chunkIdx.l2`.
    pub(crate) const fn slot_in_block(self) -> usize {
        self.0 & (PALLOC_CHUNKS_L2_ENTRIES - 1)
    }
}

impl fmt::Display for ChunkIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk {:#x}", self.0)
    }
}

/// The page index of `addr` inside its chunk. Go: `chunkPageIndex`.
pub const fn chunk_page_index(addr: u64) -> usize {
    ((addr % PALLOC_CHUNK_BYTES) >> PAGE_SHIFT) as usize
}

/// The index of the level-`l` entry that covers `addr`. Go: `offAddrToLevelIndex`.
pub(crate) const fn level_index(l: usize, addr: u64) -> usize {
    (addr >> LEVEL_SHIFT[l]) as usize
}

/// The first address covered by entry `i` of level `l`. Go: `levelIndexToOffAddr`.
pub(crate) const fn level_index_to_addr(l: usize, i: usize) -> u64 {
    (i as u64) << LEVEL_SHIFT[l]
}

pub(crate) const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}
