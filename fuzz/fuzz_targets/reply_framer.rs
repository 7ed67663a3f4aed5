//! The reply framer on any bytes: no panic or hang; the same replies fed in
//! pieces as whole; the boundaries `redis-protocol` finds wherever it reads
//! a reply (see `check_replies`).
//!
//! The first byte chooses the piece size (+ 1); the rest is the stream.

#![no_main]

#[path = "../../tests/properties/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(mode) + 1;
    let ends: Vec<usize> = (step..stream.len())
        .step_by(step)
        .chain([stream.len()])
        .collect();
    if let Err(e) = oracle::check_replies(stream, &ends) {
        panic!("{e}");
    }
});
