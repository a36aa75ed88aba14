//! Debezium envelopes (wrapped, bare, unwrapped rows): the input is the value; the first
//! line, when there are several, is the key (Debezium keys are JSON too).
#![no_main]

use freshet::decode::{Format, Mapping};
use libfuzzer_sys::fuzz_target;

#[path = "fields.rs"]
mod fields;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"{\"id\":1}"[..], data),
    };
    fields::decode(&fields::mapping(Format::Debezium), Some(key), Some(value));
    // Ids from the key alone (the usual Debezium set-up).
    let from_key = Mapping {
        id_field: None,
        ..fields::mapping(Format::Debezium)
    };
    fields::decode(&from_key, Some(key), Some(value));
});
