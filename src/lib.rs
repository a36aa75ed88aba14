//! freshet: an MCP context server that keeps agents' context fresh from live Kafka streams.
//!
//! Data flows one way:
//!
//! ```text
//! source (Kafka, every partition assigned) ─► decode (json | debezium | tombstone)
//!   ─► engine::Ingest::prepare (chunk, embed) ─► Ingest::apply_prepared (the only writer) ─► view (documents + stamps) + index (BM25, HNSW)
//! mcp tools ─► engine::Search (filters, hybrid fusion) ─► results with freshness metadata
//! ```
//!
//! Modules, in that order:
//! - [`source`]: the Kafka consumer (own thread), watermarks, the dead-letter producer.
//! - [`decode`]: bytes → [`decode::ChangeEvent`]; pure, no I/O.
//! - [`chunk`]: splits long texts into overlapping chunks (model tokens or words).
//! - [`embed`]: text → vectors: a local sentence-transformers model (candle) or an
//!   OpenAI-compatible server.
//! - [`view`]: the materialized view, freshness stamps and per-partition progress.
//! - [`index`]: tantivy BM25, HNSW vectors, filters and rank fusion.
//! - [`engine`]: the catalog of collections; `Ingest` applies batches, `Search` answers queries.
//! - [`api`]: the result shapes agents see (`Hit`, `Stamp`, `Watermark`).
//! - [`mcp`]: the MCP server, over stdio and streamable HTTP.
//! - [`metrics`]: Prometheus histograms and counters.
//! - [`store`]: the checkpoint each persisted collection commits, and its stored documents.
//! - [`auth`]: bearer JWTs on HTTP and the stdio principal → who calls, what it may read.
//! - [`audit`]: the hash-chained audit log of tool calls and rejected requests.
//! - [`pipeline`]: the ingest stages (prepare, apply, checkpoint, watermarks), one type each.
//! - [`runtime`]: wires the stages and starts and stops the background tasks.
//! - [`freshness`]: per-partition progress, watermarks, readiness, `head` waits, and the
//!   catch-up rate and ETA at start.
//! - [`config`]: the TOML file, env overrides and validation.

pub mod api;
pub mod audit;
pub mod auth;
pub mod chunk;
pub mod cluster;
pub mod config;
pub mod decode;
pub mod embed;
pub mod engine;
pub mod freshness;
pub mod index;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod source;
pub mod store;
pub mod time;
pub mod view;
