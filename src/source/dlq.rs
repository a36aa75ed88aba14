//! The dead-letter topic: a copy of every record that could not be decoded, with the reason
//! and its original coordinates in headers, so nothing a producer sent is silently lost.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{SourceError, SourceRecord, client_config};
use crate::config::KafkaConfig;

/// Sends undecodable records to the configured dead-letter topic.
pub struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
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
        let producer = cc.create().map_err(SourceError::Config)?;
        Ok(Some(DeadLetters { producer, topic }))
    }

    /// Queues a copy of `record` with the decode error; failures are logged, never fatal.
    pub fn send(&self, collection: &str, record: &SourceRecord, error: &str, kind: &str) {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
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
        let mut out: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(k) = &record.key {
            out = out.key(k.as_slice());
        }
        if let Some(v) = &record.value {
            out = out.payload(v.as_slice());
        }
        if let Err((e, _)) = self.producer.send(out) {
            tracing::warn!(
                topic = %record.topic, partition = record.partition, offset = record.offset,
                "could not queue record for dead-letter topic {}: {e}", self.topic
            );
        }
    }

    /// Waits (bounded) for queued dead letters to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!("dead-letter flush: {e}");
        }
    }
}
