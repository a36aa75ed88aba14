//! The ingest pipeline's stages, each a type in its own file, wired together by
//! [`crate::runtime::Runtime::start`]:
//!
//! ```text
//! open (Opener) ─StartOffsets─► consume (Consumer) ─Batch─► prepare (Preparer)
//!                                                              │ PreparedBatch
//!                          checkpoint (Checkpointer) ◄─cut── apply (Applier)
//! watermarks (refresh_watermarks) ─► Freshness (lag, readiness) ─reset requests─► consume
//! ```
//!
//! Offsets have one owner at a time: the open stage reads where the checkpoints end and
//! hands that to the consumer as values; the consumer keeps its own read positions and each
//! batch carries the positions it reached; the apply stage alone moves the applied offsets
//! (and publishes them to readers and the checkpoint stage).
//!
//! Channels are small and bounded, so backpressure reaches the consumer (and the broker)
//! instead of memory. Shutdown cancels the pipeline's one token ([`Ingest::cancellation`]),
//! which stops the consumer, the watermark task and any wait for an unavailable embedder
//! in the prepare stage; each stage ends when its input closes, after draining it; the
//! checkpoint stage then writes the last checkpoint.
//!
//! [`Ingest::cancellation`]: crate::engine::Ingest::cancellation

pub mod apply;
pub mod checkpoint;
pub mod consume;
pub mod open;
pub mod prepare;
pub mod watermarks;

pub use apply::Applier;
pub use checkpoint::Checkpointer;
pub use consume::{Consumer, ConsumerLinks};
pub use open::Opener;
pub use prepare::Preparer;
