//! The apply stage: the one thread that writes the collections.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::engine::{Ingest, PreparedBatch};

/// The apply stage: the single writer. Applies each prepared batch (coalescing what is
/// queued behind it) with [`Ingest::apply_prepared`], and maintains the vector indexes
/// between batches.
pub struct Applier {
    /// The writer.
    pub ingest: Arc<Ingest>,
}

/// Most records coalesced into one apply pass.
const MAX_COALESCED: usize = 8192;

impl Applier {
    /// Starts the thread: it drains `rx` and ends once the prepare stage is gone.
    pub fn spawn(
        self,
        rx: Receiver<PreparedBatch>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let engine = self.ingest;
        std::thread::Builder::new()
            .name("freshet-apply".into())
            .spawn(move || {
                // A batch with partition resets must not be merged into an earlier one.
                let mut held: Option<PreparedBatch> = None;
                loop {
                    let next = match held.take() {
                        Some(batch) => Ok(batch),
                        None => rx.recv_timeout(Duration::from_millis(200)),
                    };
                    match next {
                        Ok(mut merged) => {
                            // Coalesce whatever else is waiting: one pass for all of it.
                            while merged.len() < MAX_COALESCED {
                                match rx.try_recv() {
                                    Ok(more) => {
                                        if let Err(more) = merged.absorb(more) {
                                            held = Some(more);
                                            break;
                                        }
                                    }
                                    Err(_) => break,
                                }
                            }
                            let records = merged.len();
                            let outcome = engine.apply_prepared(merged);
                            tracing::debug!(records, ?outcome, "applied batch");
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    engine.maintain_vector_indexes();
                }
            })
    }
}
