//! The dead-letter topic: a copy of every record that could not be decoded, with the reason
//! and its original coordinates in headers, so nothing a producer sent is silently lost.
//!
//! A record can be too big to copy whole (it may have come from a topic with a larger
//! `max.message.bytes` than the dead-letter topic, or be poison *because* it is too big):
//! then its value (and key) are cut to fit, the copy says so in headers
//! (`freshet.truncated`, `freshet.original.value.size`, `freshet.original.value.sha256`),
//! and it is counted. Copies that still cannot be delivered are counted as failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use super::{KafkaContext, SourceError, SourceRecord, client_config};
use crate::config::KafkaConfig;

/// librdkafka's default `message.max.bytes`, also the broker's default record-batch limit.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room kept for headers, the key and the batch framing.
const OVERHEAD_BYTES: usize = 64 * 1024;
/// Keys longer than this are cut too.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// A copy the broker still refuses as too large is retried once with this much value.
const RETRY_VALUE_BYTES: usize = 64 * 1024;

/// Delivery outcomes, counted from the producer's delivery reports.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    truncated: AtomicU64,
    failed: AtomicU64,
}

/// Counts failed deliveries (the broker's refusals arrive here, not at `send`); librdkafka's
/// log lines and client errors go where the other clients' go.
struct Reports {
    counts: std::sync::Arc<Counts>,
    logs: KafkaContext,
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.logs.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "a dead-letter copy ({} bytes) was not delivered to {}: {e}",
                    msg.payload().map_or(0, <[u8]>::len),
                    msg.topic()
                );
            }
        }
    }
}

/// Sends undecodable records to the configured dead-letter topic.
pub struct DeadLetters {
    producer: ThreadedProducer<Reports>,
    topic: String,
    /// Largest value copied whole.
    max_value_bytes: usize,
    counts: std::sync::Arc<Counts>,
}

/// What is copied of one record: its key and value, cut to fit.
#[derive(Debug, PartialEq, Eq)]
pub struct Copy<'a> {
    /// The key, or its first bytes.
    pub key: Option<&'a [u8]>,
    /// The value, or its first bytes.
    pub value: Option<&'a [u8]>,
    /// Set when something was cut: (original key size, original value size).
    pub truncated: Option<(usize, usize)>,
}

/// Cuts `record`'s key and value to `max_value_bytes` (and [`MAX_KEY_BYTES`]).
pub fn fit(record: &SourceRecord, max_value_bytes: usize) -> Copy<'_> {
    let key = record.key.as_deref();
    let value = record.value.as_deref();
    let key_len = key.map_or(0, <[u8]>::len);
    let value_len = value.map_or(0, <[u8]>::len);
    if key_len <= MAX_KEY_BYTES && value_len <= max_value_bytes {
        return Copy {
            key,
            value,
            truncated: None,
        };
    }
    Copy {
        key: key.map(|k| &k[..k.len().min(MAX_KEY_BYTES)]),
        value: value.map(|v| &v[..v.len().min(max_value_bytes)]),
        truncated: Some((key_len, value_len)),
    }
}

impl DeadLetters {
    /// A producer for `kafka.dead_letter_topic`, or `None` when none is configured.
    pub fn new(kafka: &KafkaConfig) -> Result<Option<DeadLetters>, SourceError> {
        let Some(topic) = kafka.dead_letter_topic.clone() else {
            return Ok(None);
        };
        let mut cc = client_config(kafka, "dlq");
        // Consumer-only keys make a producer log warnings; drop them.
        for key in [
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "auto.offset.reset",
            "enable.partition.eof",
            "fetch.wait.max.ms",
            "fetch.error.backoff.ms",
        ] {
            cc.remove(key);
        }
        cc.set("linger.ms", "5");
        let message_max = kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let counts = std::sync::Arc::new(Counts::default());
        let producer = cc
            .create_with_context(Reports {
                counts: std::sync::Arc::clone(&counts),
                logs: KafkaContext::new("dead-letters"),
            })
            .map_err(SourceError::Config)?;
        Ok(Some(DeadLetters {
            producer,
            topic,
            max_value_bytes: message_max.saturating_sub(OVERHEAD_BYTES).max(1024),
            counts,
        }))
    }

    /// Queues a copy of `record` with the decode error; failures are logged and counted,
    /// never fatal.
    pub fn send(&self, collection: &str, record: &SourceRecord, error: &str, kind: &str) {
        let copy = fit(record, self.max_value_bytes);
        let queued = match self.queue(collection, record, &copy, error, kind) {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                // The producer's own limit is lower than we assumed: send much less.
                let smaller = fit(record, RETRY_VALUE_BYTES);
                let smaller = Copy {
                    truncated: smaller.truncated.or(Some((
                        copy.key.map_or(0, <[u8]>::len),
                        copy.value.map_or(0, <[u8]>::len),
                    ))),
                    ..smaller
                };
                self.queue(collection, record, &smaller, error, kind)
                    .map(|()| smaller.truncated.is_some())
            }
            other => other.map(|()| copy.truncated.is_some()),
        };
        match queued {
            Ok(true) => {
                self.counts.truncated.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    "record too big for the dead-letter topic {}: a truncated copy was sent", self.topic
                );
            }
            Ok(false) => {}
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    "could not queue record for dead-letter topic {}: {e}", self.topic
                );
            }
        }
    }

    fn queue(
        &self,
        collection: &str,
        record: &SourceRecord,
        copy: &Copy<'_>,
        error: &str,
        kind: &str,
    ) -> Result<(), KafkaError> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "freshet.error",
                value: Some(error),
            })
            .insert(Header {
                key: "freshet.error.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "freshet.collection",
                value: Some(collection),
            })
            .insert(Header {
                key: "freshet.source.topic",
                value: Some(&*record.topic),
            })
            .insert(Header {
                key: "freshet.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "freshet.source.offset",
                value: Some(&offset),
            });
        if let Some((key_len, value_len)) = copy.truncated {
            let digest = record
                .value
                .as_deref()
                .map(crate::audit::sha256_hex)
                .unwrap_or_default();
            headers = headers
                .insert(Header {
                    key: "freshet.truncated",
                    value: Some("true"),
                })
                .insert(Header {
                    key: "freshet.original.key.size",
                    value: Some(&key_len.to_string()),
                })
                .insert(Header {
                    key: "freshet.original.value.size",
                    value: Some(&value_len.to_string()),
                })
                .insert(Header {
                    key: "freshet.original.value.sha256",
                    value: Some(&digest),
                });
        }
        let mut out: BaseRecord<'_, [u8], [u8], ()> =
            BaseRecord::with_opaque_to(&self.topic, ()).headers(headers);
        if let Some(k) = copy.key {
            out = out.key(k);
        }
        if let Some(v) = copy.value {
            out = out.payload(v);
        }
        self.producer.send(out).map_err(|(e, _)| e)
    }

    /// Appends the dead-letter series to a Prometheus text exposition.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, value) in [
            (
                "freshet_dead_letters_sent_total",
                "Dead-letter copies delivered.",
                &self.counts.sent,
            ),
            (
                "freshet_dead_letter_truncated_total",
                "Dead-letter copies cut to fit the topic's size limit.",
                &self.counts.truncated,
            ),
            (
                "freshet_dead_letter_failures_total",
                "Dead-letter copies that could not be queued or delivered.",
                &self.counts.failed,
            ),
        ] {
            crate::metrics::header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }

    /// Waits (bounded) for queued dead letters to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!("dead-letter flush: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(key: usize, value: usize) -> SourceRecord {
        SourceRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset: 1,
            key: Some(vec![b'k'; key]),
            value: Some(vec![b'v'; value]),
            timestamp_ms: None,
            ingested_at_ms: 0,
        }
    }

    #[test]
    fn small_records_are_copied_whole() {
        let r = record(10, 1000);
        let copy = fit(&r, 2000);
        assert_eq!(copy.truncated, None);
        assert_eq!(copy.value.map(<[u8]>::len), Some(1000));
    }

    #[test]
    fn oversized_values_and_keys_are_cut_and_marked() {
        let r = record(20_000, 10_000_000);
        let copy = fit(&r, 900_000);
        assert_eq!(copy.truncated, Some((20_000, 10_000_000)));
        assert_eq!(copy.value.map(<[u8]>::len), Some(900_000));
        assert_eq!(copy.key.map(<[u8]>::len), Some(MAX_KEY_BYTES));
        let tombstone = SourceRecord {
            value: None,
            ..record(5, 0)
        };
        assert_eq!(fit(&tombstone, 10).truncated, None);
    }
}
