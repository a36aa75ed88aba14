//! Plain JSON values through the full field mapping.
#![no_main]

use freshet::decode::Format;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Json, Format::Auto] {
        common::decode(&common::mapping(format), Some(b"k"), Some(data));
    }
});
