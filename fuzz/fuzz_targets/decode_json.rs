//! Plain JSON values through the full field mapping.
#![no_main]

use freshet::decode::Format;
use libfuzzer_sys::fuzz_target;

#[path = "fields.rs"]
mod fields;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Json, Format::Auto] {
        fields::decode(&fields::mapping(format), Some(b"k"), Some(data));
    }
});
