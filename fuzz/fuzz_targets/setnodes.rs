//! The `CLUSTERX SETNODES` parser. Input starting with a NUL byte: a
//! topology built from the bytes after it, whose roles and masters must be
//! the model's (`Topology::check`). Any other input: taken as the nodes text,
//! where nothing may panic and `master_of` must name masters of replicas
//! only; `key_slot` must agree with `redis-protocol` on it.

#![no_main]

#[path = "../../tests/properties/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = match data.split_first() {
        Some((0, rest)) => {
            oracle::topology_from_bytes(rest).check("0123456789abcdef0123456789abcdef01234567")
        }
        _ => oracle::check_setnodes_text(&String::from_utf8_lossy(data))
            .and_then(|()| oracle::check_key_slot(data)),
    };
    if let Err(e) = checked {
        panic!("{e}");
    }
});
