//! Precomputed vectors: the input is the JSON of the vector field, and the same bytes as a
//! string (vectors may come as a string holding an array).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "fields.rs"]
mod fields;

fuzz_target!(|data: &[u8]| fields::decode_field("v", data));
