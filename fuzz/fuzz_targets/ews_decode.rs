//! Any bytes through `ews decode`: a typed error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = taskbridge::ews::decode::decode(data, 1 << 20);
});
