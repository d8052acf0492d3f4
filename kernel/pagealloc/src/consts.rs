//! Every size in the allocator, derived from a few log2 knobs.
//!
//! Go keeps these in `mpagealloc.go` and `mpagealloc_64bit.go`. The only knob a kernel
//! turns is [`PHYS_ADDR_BITS`]; everything else follows from it, and the equations the
//! rest of the crate relies on are checked at compile time at the bottom of this file.
//!
//! # Deviation from Go
//! Go counts runtime pages of 8 KiB in a 48-bit *virtual* heap; here a page is a 4 KiB
//! frame of physical memory, so a 512-page chunk is exactly one 2 MiB huge page.

/// Width of a physical address: 48 bits, or 52 with the `phys-addr-52` feature.
#[cfg(not(feature = "phys-addr-52"))]
pub const PHYS_ADDR_BITS: u32 = 48;
/// Width of a physical address: 48 bits, or 52 with the `phys-addr-52` feature.
#[cfg(feature = "phys-addr-52")]
pub const PHYS_ADDR_BITS: u32 = 52;

/// log2 of the page (frame) size. Go: `pageShift` (13 there: Go pages are 8 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a page. Go: `pageSize`.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// log2 of the pages in a chunk. Go: `logPallocChunkPages`.
pub const LOG_PALLOC_CHUNK_PAGES: u32 = 9;
/// Pages in a chunk, the unit one bitmap covers. Go: `pallocChunkPages`.
pub const PALLOC_CHUNK_PAGES: usize = 1 << LOG_PALLOC_CHUNK_PAGES;
/// log2 of the bytes in a chunk. Go: `logPallocChunkBytes`.
pub const LOG_PALLOC_CHUNK_BYTES: u32 = LOG_PALLOC_CHUNK_PAGES + PAGE_SHIFT;
/// Bytes in a chunk (2 MiB). Go: `pallocChunkBytes`.
pub const PALLOC_CHUNK_BYTES: u64 = 1 << LOG_PALLOC_CHUNK_BYTES;

/// Levels of the summary radix tree. Go: `summaryLevels` (64-bit).
pub const SUMMARY_LEVELS: usize = 5;
/// log2 of the fan-out between levels: 8 summaries of 8 bytes fill one cache line.
/// Go: `summaryLevelBits`.
pub const SUMMARY_LEVEL_BITS: u32 = 3;
/// Entries in one block of a non-root level (the 8 children of one parent).
pub const SUMMARY_BLOCK_ENTRIES: usize = 1 << SUMMARY_LEVEL_BITS;
/// log2 of the root level's entries. Go: `summaryL0Bits`.
pub const SUMMARY_L0_BITS: u32 =
    PHYS_ADDR_BITS - LOG_PALLOC_CHUNK_BYTES - (SUMMARY_LEVELS as u32 - 1) * SUMMARY_LEVEL_BITS;

/// log2 of the largest value a summary field must hold. Go: `logMaxPackedValue`.
pub const LOG_MAX_PACKED_VALUE: u32 =
    LOG_PALLOC_CHUNK_PAGES + (SUMMARY_LEVELS as u32 - 1) * SUMMARY_LEVEL_BITS;
/// The largest value a summary field must hold (2^21). Go: `maxPackedValue`.
pub const MAX_PACKED_VALUE: usize = 1 << LOG_MAX_PACKED_VALUE;

/// Bits of the address each level's index adds. Go: `levelBits`.
pub const LEVEL_BITS: [u32; SUMMARY_LEVELS] = [
    SUMMARY_L0_BITS,
    SUMMARY_LEVEL_BITS,
    SUMMARY_LEVEL_BITS,
    SUMMARY_LEVEL_BITS,
    SUMMARY_LEVEL_BITS,
];

/// Right shift that turns an address into an index at each level. Go: `levelShift`.
pub const LEVEL_SHIFT: [u32; SUMMARY_LEVELS] = {
    let mut s = [0; SUMMARY_LEVELS];
    let mut l = 0;
    while l < SUMMARY_LEVELS {
        s[l] = PHYS_ADDR_BITS - SUMMARY_L0_BITS - l as u32 * SUMMARY_LEVEL_BITS;
        l += 1;
    }
    s
};

/// log2 of the pages one entry at each level covers. Go: `levelLogPages`.
pub const LEVEL_LOG_PAGES: [u32; SUMMARY_LEVELS] = {
    let mut s = [0; SUMMARY_LEVELS];
    let mut l = 0;
    while l < SUMMARY_LEVELS {
        s[l] = LOG_PALLOC_CHUNK_PAGES + (SUMMARY_LEVELS - 1 - l) as u32 * SUMMARY_LEVEL_BITS;
        l += 1;
    }
    s
};

/// Chunks in the whole physical address space.
pub const MAX_CHUNKS: usize = 1 << (PHYS_ADDR_BITS - LOG_PALLOC_CHUNK_BYTES);

/// log2 of the chunks in one block of the sparse chunk map (Go: `pallocChunksL2Bits`).
/// Go uses 8192-chunk blocks of 1 MiB; a kernel wants less slack at the edges of its
/// memory map, so a block here covers 16 chunks (32 MiB of memory, 2 KiB of bitmaps).
pub const PALLOC_CHUNKS_L2_BITS: u32 = 4;
/// Chunks in one block of the sparse chunk map.
pub const PALLOC_CHUNKS_L2_ENTRIES: usize = 1 << PALLOC_CHUNKS_L2_BITS;

/// Pages in a page cache: one 64-bit word of a chunk bitmap. Go: `pageCachePages`.
pub const PAGE_CACHE_PAGES: usize = 64;

// The equations the rest of the crate relies on.
const _: () = assert!(PHYS_ADDR_BITS >= LOG_PALLOC_CHUNK_BYTES + 4 * SUMMARY_LEVEL_BITS);
const _: () = assert!(
    PHYS_ADDR_BITS <= 52,
    "x86_64 physical addresses have at most 52 bits"
);
const _: () = assert!(
    PALLOC_CHUNK_PAGES.is_multiple_of(64),
    "a chunk bitmap is whole 64-bit words"
);
const _: () = assert!(
    PALLOC_CHUNK_BYTES == 2 * 1024 * 1024,
    "a chunk is one 2 MiB huge page"
);
// Go's init throws unless a root entry's page count fits a summary field.
const _: () = assert!(LEVEL_LOG_PAGES[0] <= LOG_MAX_PACKED_VALUE);
const _: () = assert!(LEVEL_SHIFT[SUMMARY_LEVELS - 1] == LOG_PALLOC_CHUNK_BYTES);
const _: () = assert!(LEVEL_SHIFT[0] + LEVEL_BITS[0] == PHYS_ADDR_BITS);
const _: () = assert!(LEVEL_LOG_PAGES[0] + PAGE_SHIFT == LEVEL_SHIFT[0]);
const _: () = assert!(MAX_PACKED_VALUE == 1 << 21);
const _: () = assert!(PAGE_CACHE_PAGES == 64);
const _: () = assert!(
    SUMMARY_BLOCK_ENTRIES * 8 == 64,
    "a summary block is one cache line"
);
