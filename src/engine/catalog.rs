//! The catalog: every collection, in config order, and which collection reads which topic.
//! Built once at start and shared by the writer and the queries.
//!
//! A collection being rebuilt after a settings change (see `generation`) has two
//! generations: queries see the one serving ([`Catalog::collections`]), the writer the one
//! being built ([`Catalog::writers`], [`Catalog::for_topic`]); the swap exchanges them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::api::IngestCounts;

use super::Collection;

/// The collections of a running freshet.
pub struct Catalog {
    slots: Vec<RwLock<Slot>>,
    /// topic → index into `slots`.
    by_topic: HashMap<String, usize>,
}

/// One collection's generations.
struct Slot {
    /// What queries read.
    serving: Arc<Collection>,
    /// The next generation, while it is built (the writer's).
    next: Option<Arc<Collection>>,
}

impl Slot {
    fn writer(&self) -> &Arc<Collection> {
        self.next.as_ref().unwrap_or(&self.serving)
    }
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
            slots: collections
                .into_iter()
                .map(|serving| {
                    RwLock::new(Slot {
                        serving,
                        next: None,
                    })
                })
                .collect(),
            by_topic,
        }
    }

    /// All collections as queries see them, in config order.
    pub fn collections(&self) -> Vec<Arc<Collection>> {
        self.slots
            .iter()
            .map(|s| Arc::clone(&s.read().serving))
            .collect()
    }

    /// All collections as the writer sees them (the generation being built, if any).
    pub fn writers(&self) -> Vec<Arc<Collection>> {
        self.slots
            .iter()
            .map(|s| Arc::clone(s.read().writer()))
            .collect()
    }

    /// A collection by name, as queries see it.
    pub fn collection(&self, name: &str) -> Option<Arc<Collection>> {
        self.slot(name).map(|s| Arc::clone(&s.read().serving))
    }

    /// The collection (the writer's generation) that reads `topic`.
    pub fn for_topic(&self, topic: &str) -> Option<Arc<Collection>> {
        self.by_topic
            .get(topic)
            .map(|&i| Arc::clone(self.slots[i].read().writer()))
    }

    /// The serving generation of a collection being rebuilt, and the one being built.
    pub fn rebuild_of(&self, name: &str) -> Option<(Arc<Collection>, Arc<Collection>)> {
        let slot = self.slot(name)?.read();
        let next = slot.next.as_ref()?;
        Some((Arc::clone(&slot.serving), Arc::clone(next)))
    }

    /// Makes `next` the generation the writer fills for collection `name`.
    pub(super) fn begin_rebuild(&self, name: &str, next: Arc<Collection>) {
        if let Some(slot) = self.slot(name) {
            slot.write().next = Some(next);
        }
    }

    /// Makes the generation being built the serving one.
    pub(super) fn finish_rebuild(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            let mut slot = slot.write();
            if let Some(next) = slot.next.take() {
                slot.serving = next;
            }
        }
    }

    fn slot(&self, name: &str) -> Option<&RwLock<Slot>> {
        self.slots.iter().find(|s| s.read().serving.name() == name)
    }

    /// Every topic freshet consumes.
    pub fn topics(&self) -> Vec<String> {
        self.collections()
            .iter()
            .flat_map(|c| c.config.topics.iter().cloned())
            .collect()
    }

    /// Ingest counters of every collection (the writer's generation), by name.
    pub fn counts(&self) -> BTreeMap<String, IngestCounts> {
        self.writers()
            .iter()
            .map(|c| (c.name().to_string(), c.counts()))
            .collect()
    }
}
