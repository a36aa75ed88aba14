//! Arbitrary key and value bytes under `format = "auto"`: the wire-format header (magic byte,
//! schema ID) decides which decoder runs, if any.
#![no_main]

use freshet::decode::{Format, KeyFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into key and value, so both are explored.
    let Some((split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(*split).min(rest.len());
    let (key, value) = rest.split_at(at);
    common::decode(Format::Auto, KeyFormat::Auto, Some(key), Some(value));
    common::decode(Format::Avro, KeyFormat::Protobuf, Some(value), Some(key));
});
