//! Scale-out: several nodes share a collection's partitions through Kafka consumer groups,
//! and any node answers a query for the whole cluster (see docs/CLUSTER.md).
//!
//! - [`membership`]: which partitions this node owns (its consumer group decides);
//! - [`shard`]: what a node answers for its own partitions (state, statistics, candidates);
//! - [`coordinator`]: a search over every partition, fanned out and fused globally;
//! - [`http`]: the internal API between nodes, authenticated with a shared key.

mod config;
pub mod coordinator;
pub mod http;
mod membership;
pub mod shard;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{ClusterConfig, DEFAULT_KEY_ENV, GroupProtocol, MIN_KEY_BYTES};
pub use membership::{Membership, Ownership, PartitionKey};

/// This node's part in a cluster: its settings, what it owns, and a client for its peers.
pub struct Cluster {
    config: ClusterConfig,
    ownership: Arc<Ownership>,
    key: String,
    agent: ureq::Agent,
    /// The peers' states as last read, and when (see [`coordinator::recent_states`]).
    recent_states: parking_lot::Mutex<Option<(std::time::Instant, coordinator::States)>>,
}

/// Why a call to a peer failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or did not answer in time.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The peer.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The peer refused the request as invalid (the caller's mistake, e.g. a bad filter).
    #[error("{0}")]
    Invalid(String),
}

impl Cluster {
    /// The cluster part of a node configured with `config`; `None` when the shared key is
    /// missing (config validation reports that first).
    pub fn new(config: ClusterConfig, ownership: Arc<Ownership>) -> Option<Cluster> {
        let key = config.key()?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.request_timeout_ms)))
            .http_status_as_error(false)
            .build()
            .into();
        Some(Cluster {
            config,
            ownership,
            key,
            agent,
            recent_states: parking_lot::Mutex::new(None),
        })
    }

    /// The `[cluster]` settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// What this node owns.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// True if `key` is the shared key (compared in constant time).
    pub fn key_matches(&self, key: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.key.as_bytes().ct_eq(key))
    }

    /// Every node's base URL: the configured list, or the addresses `peers_dns` resolves to
    /// now (a node added to the name is seen on the next query).
    pub fn peers(&self) -> Vec<String> {
        let Some(dns) = &self.config.peers_dns else {
            return self
                .config
                .peers
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect();
        };
        let scheme = if self.config.advertise_url.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        match std::net::ToSocketAddrs::to_socket_addrs(dns.as_str()) {
            Ok(addrs) => {
                let mut urls: Vec<String> = addrs.map(|a| format!("{scheme}://{a}")).collect();
                urls.sort();
                urls.dedup();
                urls
            }
            Err(e) => {
                tracing::warn!("cluster: cannot resolve cluster.peers_dns `{dns}`: {e}");
                Vec::new()
            }
        }
    }

    /// True if `url` is this node's advertised URL.
    pub fn is_self(&self, url: &str) -> bool {
        url.trim_end_matches('/') == self.config.advertise_url.trim_end_matches('/')
    }

    /// Calls `path` on the peer at `url` (GET without a body, else POST with it as JSON),
    /// on a blocking thread, bounded by `cluster.request_timeout_ms` plus `extra` (a wait
    /// the peer does on purpose).
    pub async fn call<T: DeserializeOwned + Send + 'static>(
        self: &Arc<Self>,
        url: &str,
        path: &'static str,
        body: Option<impl Serialize + Send + 'static>,
        extra: Duration,
    ) -> Result<T, PeerError> {
        let timeout = Duration::from_millis(self.config.request_timeout_ms) + extra;
        let cluster = Arc::clone(self);
        let url = url.to_string();
        let target = format!("{url}{path}");
        let joined = tokio::task::spawn_blocking(move || -> Result<T, PeerError> {
            let unreachable = |reason: String| PeerError::Unreachable {
                url: url.clone(),
                reason,
            };
            let sent = match body {
                None => cluster
                    .agent
                    .get(&target)
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .header(wire::KEY_HEADER, &cluster.key)
                    .call(),
                Some(body) => cluster
                    .agent
                    .post(&target)
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .header(wire::KEY_HEADER, &cluster.key)
                    .send_json(body),
            };
            let mut response = sent.map_err(|e| unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            if status == 200 {
                return response
                    .body_mut()
                    .read_json::<T>()
                    .map_err(|e| unreachable(format!("unreadable answer: {e}")));
            }
            let error = response.body_mut().read_json::<wire::WireError>().ok();
            match error {
                Some(e) if e.invalid => Err(PeerError::Invalid(e.error)),
                Some(e) => Err(unreachable(format!("HTTP {status}: {}", e.error))),
                None => Err(unreachable(format!("HTTP {status}"))),
            }
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(PeerError::Unreachable {
                url: String::new(),
                reason: format!("internal error: {e}"),
            })
        })
    }
}
