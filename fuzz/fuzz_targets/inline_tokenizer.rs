//! The inline tokenizer against Redis's `sdssplitargs` rules (see
//! `check_inline`): the input is one line (its `\n`s dropped), sent with
//! `\r\n`, and with `\n` alone.

#![no_main]

#[path = "../../tests/properties/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    for crlf in [true, false] {
        if let Err(e) = oracle::check_inline(&oracle::inline_request(line, crlf)) {
            panic!("{e}");
        }
    }
});
