//! Arbitrary Avro payloads for a schema with every Avro type, logical type and a recursive
//! record, as value and as key.
#![no_main]

use freshet::decode::{Format, KeyFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let framed = common::framed(common::AVRO_ID, data);
    common::decode(Format::Avro, KeyFormat::Avro, Some(&framed), Some(&framed));
});
