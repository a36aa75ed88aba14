//! Event times: the input is the JSON of the event-time field (epoch seconds, ms, µs, ns,
//! floats, RFC 3339 and other date strings), also as a string.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "fields.rs"]
mod fields;

fuzz_target!(|data: &[u8]| fields::decode_field("ts", data));
