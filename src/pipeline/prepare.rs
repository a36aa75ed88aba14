//! The prepare stage: consumed batch → prepared batch (decode, chunk, embed), off the
//! writer's thread so embedding never blocks applying.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use tokio::sync::mpsc;

use crate::engine::{Ingest, PreparedBatch};
use crate::source::Batch;

/// Stack of the prepare thread (reserved, not resident until used).
const PREPARE_STACK_BYTES: usize = 16 << 20;

/// The prepare stage: decodes, chunks and embeds each consumed batch ([`Ingest::prepare`])
/// on its own thread, and hands it to the apply stage.
pub struct Preparer {
    /// Whose collections the batches are prepared for.
    pub ingest: Arc<Ingest>,
}

impl Preparer {
    /// Starts the thread: it ends when `rx` closes (the consumer stopped), the apply stage
    /// is gone, or the pipeline is cancelled while a batch waits for its embedder.
    pub fn spawn(
        self,
        mut rx: mpsc::Receiver<Batch>,
        tx: SyncSender<PreparedBatch>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let ingest = self.ingest;
        std::thread::Builder::new()
            .name("freshet-prepare".into())
            // Record decoders recurse once per nesting level (bounded: decode::avro::MAX_DEPTH,
            // Protobuf's limit of 100), and unoptimised builds use large frames.
            .stack_size(PREPARE_STACK_BYTES)
            .spawn(move || {
                while let Some(batch) = rx.blocking_recv() {
                    // Cancelled while the embedder was unavailable: this batch and those
                    // behind it are not applied (a restart reads them again).
                    let Some(prepared) = ingest.prepare(batch) else {
                        return;
                    };
                    if tx.send(prepared).is_err() {
                        return;
                    }
                }
            })
    }
}
