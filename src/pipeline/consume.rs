//! The consume stage: reads the assigned partitions from Kafka ([`crate::source::Poller`])
//! from where the opened checkpoints end, and hands batches to the prepare stage.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::source::{self, Batch, PollOptions, Poller, ResetRequest, SourceError, StartOffsets};
use crate::view::{BrokerFacts, Progress};

/// How the consume stage talks to the rest of the pipeline.
pub struct ConsumerLinks {
    /// Where its start offsets come from, once the open stage has opened the checkpoints.
    pub start: Receiver<StartOffsets>,
    /// Where batches go (bounded: a full channel stops polling).
    pub batches: mpsc::Sender<Batch>,
    /// Partitions to re-read from the start (from the watermark task).
    pub resets: Receiver<ResetRequest>,
    /// Cancelled to stop polling (the pipeline's cancellation token).
    pub stop: CancellationToken,
}

/// The consume stage.
pub struct Consumer {
    /// Brokers and client settings.
    pub kafka: KafkaConfig,
    /// Every topic a collection reads.
    pub topics: Vec<String>,
    /// Where it reports which partitions it reads and what the broker says of them.
    pub progress: Arc<Progress>,
    /// Tuning of the poll loop, and a cluster node's ownership.
    pub options: PollOptions,
}

impl Consumer {
    /// Creates the Kafka client (a configuration librdkafka refuses fails here), then starts
    /// the thread: it waits for its start offsets and polls until the pipeline is cancelled
    /// or the prepare stage is gone.
    pub fn spawn(self, links: ConsumerLinks) -> Result<std::thread::JoinHandle<()>, SourceError> {
        let client = source::create_client(&self.kafka)?;
        std::thread::Builder::new()
            .name("freshet-consumer".into())
            .spawn(move || {
                let Some(start) = wait_for_start(&links.start, &links.stop) else {
                    return;
                };
                Poller::new(
                    self.kafka,
                    client,
                    self.topics,
                    BrokerFacts::new(self.progress),
                    start,
                    links.resets,
                    self.options,
                )
                .run(&links.batches, &links.stop);
            })
            .map_err(|e| {
                SourceError::Config(rdkafka::error::KafkaError::ClientCreation(e.to_string()))
            })
    }
}

/// The start offsets, or `None` when the pipeline is cancelled (or the open stage failed)
/// before they came.
fn wait_for_start(
    start: &Receiver<StartOffsets>,
    stop: &CancellationToken,
) -> Option<StartOffsets> {
    loop {
        match start.recv_timeout(Duration::from_millis(100)) {
            Ok(offsets) => return Some(offsets),
            Err(RecvTimeoutError::Timeout) if !stop.is_cancelled() => {}
            Err(_) => return None,
        }
    }
}
