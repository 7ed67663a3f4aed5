//! The request framer on any bytes: no panic or hang; the same requests fed
//! in pieces as whole; inline requests as `sdssplitargs` splits them; RESP
//! requests as `redis-protocol` decodes them (see `check_requests`).
//!
//! The first byte chooses the piece size (low 7 bits + 1) and the limits
//! (high bit: small limits); the rest is the stream.

#![no_main]

#[path = "../../tests/properties/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let limits = if mode & 0x80 != 0 {
        oracle::SMALL_LIMITS
    } else {
        oracle::LIMITS
    };
    let step = usize::from(mode & 0x7f) + 1;
    let ends: Vec<usize> = (step..stream.len())
        .step_by(step)
        .chain([stream.len()])
        .collect();
    if let Err(e) = oracle::check_requests(stream, &ends, limits) {
        panic!("{e}");
    }
});
