//! The ingest pipeline's stages, each a type in its own file, wired together by
//! [`crate::runtime::Runtime::start`]:
//!
//! ```text
//! consume (source::spawn_consumer) ─Batch─► prepare (Preparer) ─PreparedBatch─► apply (Applier)
//!                                                                                  │ cut
//!                                                     checkpoint (Checkpointer) ◄──┘
//! watermarks (refresh_watermarks) ─► Freshness (lag, readiness) ─reset requests─► consume
//! ```
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
pub mod prepare;
pub mod watermarks;

pub use apply::Applier;
pub use checkpoint::Checkpointer;
pub use prepare::Preparer;
