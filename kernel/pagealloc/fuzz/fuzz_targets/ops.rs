//! Decodes the input into a memory map and a sequence of allocator operations and runs
//! them on `PageAlloc` and on the flat reference model, which must agree on everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pagealloc_model::{decode_ops, run_ops_with};

fuzz_target!(|data: &[u8]| {
    let (config, ops) = decode_ops(data);
    if let Err(e) = run_ops_with(config, &ops) {
        panic!("{config:?}\n{e}");
    }
});
