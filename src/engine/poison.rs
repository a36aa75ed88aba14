//! Why the writer refuses a record: its kind (counted per collection and kind, the label of
//! `freshet_poison_records_total` and of `ingest.poison` in `list_collections`) and a message
//! for the log and the dead-letter topic.

use std::collections::BTreeMap;

use crate::api::IngestCounts;
use crate::decode::{DecodeError, DecodeErrorKind};

/// What kind of record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoisonKind {
    /// The record itself is wrong: it does not decode, or its vector does not fit the
    /// collection (`bad_vector` also when the dimension differs or a value is not finite).
    Record(DecodeErrorKind),
    /// The embedder refused the document's text for good (`embed_error`).
    Embed,
    /// The BM25 index could not take the document (`index_error`).
    Index,
}

impl PoisonKind {
    /// Short stable label for metrics, logs and the dead-letter headers.
    pub fn label(self) -> &'static str {
        match self {
            PoisonKind::Record(kind) => kind.label(),
            PoisonKind::Embed => "embed_error",
            PoisonKind::Index => "index_error",
        }
    }
}

/// A record the writer cannot apply, and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    /// What kind of refusal.
    pub kind: PoisonKind,
    /// What was wrong, naming the field.
    pub message: String,
}

impl ApplyError {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: PoisonKind, message: impl Into<String>) -> ApplyError {
        ApplyError {
            kind,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for ApplyError {
    fn from(e: DecodeError) -> ApplyError {
        ApplyError::new(PoisonKind::Record(e.kind()), e.to_string())
    }
}

/// A collection's ingest counters, as the writer keeps them.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) upserts: u64,
    pub(super) deletes: u64,
    pub(super) replays_skipped: u64,
    pub(super) poison: BTreeMap<PoisonKind, u64>,
}

impl Counters {
    /// Records applied since start: changes that reached the view and poison skipped.
    pub(super) fn applied(&self) -> u64 {
        self.upserts + self.deletes + self.poison.values().sum::<u64>()
    }

    /// The counters as agents see them, poison by label.
    pub(super) fn to_api(&self) -> IngestCounts {
        let mut poison = BTreeMap::new();
        for (kind, n) in &self.poison {
            *poison.entry(kind.label().to_string()).or_default() += n;
        }
        IngestCounts {
            upserts: self.upserts,
            deletes: self.deletes,
            replays_skipped: self.replays_skipped,
            poison,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_poison_by_its_label() {
        let mut c = Counters {
            upserts: 3,
            ..Counters::default()
        };
        *c.poison.entry(PoisonKind::Embed).or_default() += 2;
        *c.poison
            .entry(PoisonKind::Record(DecodeErrorKind::NotJson))
            .or_default() += 1;
        let api = c.to_api();
        assert_eq!(api.upserts, 3);
        assert_eq!(
            api.poison.into_iter().collect::<Vec<_>>(),
            [("embed_error".to_string(), 2), ("not_json".to_string(), 1)]
        );
        assert_eq!(c.applied(), 6);
        assert_eq!(PoisonKind::Index.label(), "index_error");
    }
}
