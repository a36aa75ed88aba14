//! Arbitrary Protobuf payloads (message indexes, then the message) for a schema with nested
//! and recursive messages, maps, oneofs and well-known types.
#![no_main]

use freshet::decode::{Format, KeyFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let framed = common::framed(common::PROTO_ID, data);
    common::decode(Format::Protobuf, KeyFormat::Protobuf, Some(&framed), Some(&framed));
});
