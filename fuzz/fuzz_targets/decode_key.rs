//! Kafka keys as ids: string keys, JSON keys, Debezium struct keys, for upserts and
//! tombstones.
#![no_main]

use freshet::decode::{Format, Mapping};
use libfuzzer_sys::fuzz_target;

#[path = "fields.rs"]
mod fields;

fuzz_target!(|key: &[u8]| {
    for format in [Format::Auto, Format::Json, Format::Debezium] {
        let mapping = Mapping {
            id_field: None,
            ..fields::mapping(format)
        };
        fields::decode(&mapping, Some(key), None);
        fields::decode(&mapping, Some(key), Some(b"{\"body\":\"text\"}"));
    }
});
