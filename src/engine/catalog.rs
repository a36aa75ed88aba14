//! The catalog: every collection, in config order, and which collection reads which topic.
//! Built once at start and shared read-only by the writer and the queries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::IngestCounts;

use super::Collection;

/// The collections of a running freshet.
pub struct Catalog {
    collections: Vec<Arc<Collection>>,
    /// topic → index into `collections`.
    by_topic: HashMap<String, usize>,
}

impl Catalog {
    /// The catalog of `collections` (a topic belongs to the last collection naming it;
    /// config validation refuses a topic named twice).
    pub fn new(collections: Vec<Arc<Collection>>) -> Catalog {
        let by_topic = collections
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.config.topics.iter().map(move |t| (t.clone(), i)))
            .collect();
        Catalog {
            collections,
            by_topic,
        }
    }

    /// All collections, in config order.
    pub fn collections(&self) -> &[Arc<Collection>] {
        &self.collections
    }

    /// A collection by name.
    pub fn collection(&self, name: &str) -> Option<&Arc<Collection>> {
        self.collections.iter().find(|c| c.name() == name)
    }

    /// The collection that reads `topic`.
    pub fn for_topic(&self, topic: &str) -> Option<&Arc<Collection>> {
        self.by_topic.get(topic).map(|&i| &self.collections[i])
    }

    /// Every topic freshet consumes.
    pub fn topics(&self) -> Vec<String> {
        self.collections
            .iter()
            .flat_map(|c| c.config.topics.iter().cloned())
            .collect()
    }

    /// Ingest counters of every collection, by name.
    pub fn counts(&self) -> BTreeMap<String, IngestCounts> {
        self.collections
            .iter()
            .map(|c| (c.name().to_string(), c.counts()))
            .collect()
    }
}
