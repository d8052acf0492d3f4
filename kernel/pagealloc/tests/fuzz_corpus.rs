//! The fuzz target's committed seed corpus (`fuzz/corpus/ops`), run as a normal test:
//! every seed must pass, and together they must reach the cache, batch and refusal paths
//! the fuzzer starts from.

use pagealloc_model::{RunStats, decode_ops, run_ops_with};

#[test]
fn seed_corpus_passes_and_covers_the_entry_points() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ops");
    let mut total = RunStats::default();
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).expect("the seed corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (config, ops) = decode_ops(&data);
        let s = run_ops_with(config, &ops)
            .unwrap_or_else(|e| panic!("{}: {config:?}\n{e}", path.display()));
        seeds += 1;
        total.allocs += s.allocs;
        total.frees += s.frees;
        total.free_errors += s.free_errors;
        total.cache_fills += s.cache_fills;
        total.cache_allocs += s.cache_allocs;
        total.flushes += s.flushes;
        total.flush_errors += s.flush_errors;
        total.batch_frees += s.batch_frees;
        total.batch_allocs += s.batch_allocs;
        total.batch_free_errors += s.batch_free_errors;
        total.held_refusals += s.held_refusals;
        total.foreign_refusals += s.foreign_refusals;
    }
    println!("{seeds} seeds: {total:#?}");
    assert!(seeds >= 10, "{seeds} seeds");
    let t = total;
    for (what, n) in [
        ("allocs", t.allocs),
        ("frees", t.frees),
        ("refused frees", t.free_errors),
        ("cache fills", t.cache_fills),
        ("cache allocs", t.cache_allocs),
        ("flushes", t.flushes),
        ("refused flushes", t.flush_errors),
        ("batch frees", t.batch_frees),
        ("batch allocs", t.batch_allocs),
        ("refused batch frees", t.batch_free_errors),
        ("frees of held pages", t.held_refusals),
        ("foreign flushes", t.foreign_refusals),
    ] {
        assert!(n >= 3, "only {n} {what}: {t:?}");
    }
}
