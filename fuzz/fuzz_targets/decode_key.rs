//! Kafka keys as ids: string keys, JSON keys, Debezium struct keys, for upserts and
//! tombstones.
#![no_main]

use freshet::decode::{Format, Mapping};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|key: &[u8]| {
    for format in [Format::Auto, Format::Json, Format::Debezium] {
        let mapping = Mapping {
            id_field: None,
            ..common::mapping(format)
        };
        common::decode(&mapping, Some(key), None);
        common::decode(&mapping, Some(key), Some(b"{\"body\":\"text\"}"));
    }
});
