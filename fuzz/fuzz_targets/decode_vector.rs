//! Precomputed vectors: the input is the JSON of the vector field, and the same bytes as a
//! string (vectors may come as a string holding an array).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::decode_field("v", data));
