//! Helpers shared by the Go test ports: Go's `export_test.go` vocabulary in Rust.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pagealloc::PageAlloc;
use pagealloc::testutil::ChunkIdx;
use pagealloc::testutil::PALLOC_CHUNK_PAGES;
use pagealloc::testutil::{
    BASE_CHUNK_IDX, BitRange, HeapMetadata, assert_page_alloc_eq, new_page_alloc,
};

/// Go: `PallocChunkPages`.
pub const P: usize = PALLOC_CHUNK_PAGES;

/// The chunk `off` chunks above Go's `BaseChunkIdx`.
pub const fn c(off: usize) -> ChunkIdx {
    ChunkIdx::new(BASE_CHUNK_IDX.index() + off)
}

/// A description of some chunks: Go's `map[ChunkIdx][]BitRange`.
pub type Chunks = Vec<(ChunkIdx, Vec<BitRange>)>;

/// `chunks![c(0) => [(0, 5)], c(1) => []]` is Go's
/// `map[ChunkIdx][]BitRange{BaseChunkIdx: {{0, 5}}, BaseChunkIdx + 1: {}}`.
macro_rules! chunks {
    ($($ci:expr => [$(($i:expr, $n:expr)),* $(,)?]),* $(,)?) => {
        vec![$(($ci, vec![$(BitRange { i: $i, n: $n }),*])),*]
    };
}

/// Go: `NewPageAlloc(chunks, scav)`.
pub fn build<'m>(
    md: &'m mut HeapMetadata,
    chunks: &Chunks,
    scav: Option<&Chunks>,
) -> PageAlloc<'m> {
    let chunks: Vec<(ChunkIdx, &[BitRange])> =
        chunks.iter().map(|(ci, r)| (*ci, r.as_slice())).collect();
    let scav: Option<Vec<(ChunkIdx, &[BitRange])>> =
        scav.map(|s| s.iter().map(|(ci, r)| (*ci, r.as_slice())).collect());
    new_page_alloc(md, &chunks, scav.as_deref())
}

/// Go's `checkPageAlloc`, plus summaries and the invariants.
#[track_caller]
pub fn check(want: &PageAlloc<'_>, got: &PageAlloc<'_>) {
    assert_page_alloc_eq(want, got);
    if let Err(e) = got.check_invariants() {
        panic!("invariant broken: {e:?}");
    }
}

/// Runs every case, each under `catch_unwind` so one failure does not hide the others,
/// and fails with the names of the failing cases.
pub fn run_cases<T>(test: &str, cases: &[(&str, T)], run: impl Fn(&str, &T)) {
    let mut failed = Vec::new();
    for (name, case) in cases {
        if catch_unwind(AssertUnwindSafe(|| run(name, case))).is_err() {
            eprintln!("{test}/{name}: FAILED");
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "{test}: failing cases {failed:?}");
}
