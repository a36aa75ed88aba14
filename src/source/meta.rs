//! Reads partition watermarks from the broker for lag reporting and `consistency: "head"`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{SourceError, client_config};
use crate::config::KafkaConfig;

/// Low and high watermark of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Log start offset.
    pub low: i64,
    /// Log end offset (the next offset to be written).
    pub high: i64,
}

/// A metadata-only client; its calls block, so they run on tokio's blocking pool.
#[derive(Clone)]
pub struct MetaClient {
    consumer: Arc<BaseConsumer>,
}

impl MetaClient {
    /// Creates the client (it connects lazily).
    pub fn new(kafka: &KafkaConfig) -> Result<MetaClient, SourceError> {
        let consumer: BaseConsumer = client_config(kafka, "meta")
            .create()
            .map_err(SourceError::Config)?;
        Ok(MetaClient {
            consumer: Arc::new(consumer),
        })
    }

    /// Current watermarks of the given partitions, all read in parallel; partitions whose
    /// read fails or times out are left out.
    pub async fn watermarks(
        &self,
        partitions: Vec<(String, i32)>,
        timeout: Duration,
    ) -> Vec<Watermarks> {
        let reads = partitions.into_iter().map(|(topic, partition)| {
            let consumer = Arc::clone(&self.consumer);
            tokio::task::spawn_blocking(move || {
                consumer
                    .fetch_watermarks(&topic, partition, timeout)
                    .map(|(low, high)| Watermarks {
                        topic,
                        partition,
                        low,
                        high,
                    })
            })
        });
        let mut out = Vec::new();
        for read in futures::future::join_all(reads).await {
            match read {
                Ok(Ok(w)) => out.push(w),
                Ok(Err(e)) => tracing::debug!("reading watermarks failed: {e}"),
                Err(e) => tracing::warn!("watermark task failed: {e}"),
            }
        }
        out
    }
}
