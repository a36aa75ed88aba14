//! The change feed: a bounded history of the upserts and deletes each collection applied, in
//! apply order, read by the `changes` tool through cursors and pushed to subscribers.
//!
//! A cursor is a position in the stream, not in this history: for each partition, the offset
//! up to which the reader has seen every change. It is opaque to agents (base64 of a small
//! JSON object) and means the same after a restart or on another replica. The history is held
//! in memory: it knows, per partition, the offset above which it holds every change (its
//! *floor*). A cursor below a floor asks for changes the history no longer holds (dropped by
//! `changes.max_entries` / `max_age_ms`, or applied before this process started): that is an
//! "expired cursor, re-sync" error, never a silent gap.
//!
//! The writer records a batch ([`Ingest::publish_changes`]) after its view swap and before it
//! advances the partition offsets. A reader that holds the history's lock and sees a
//! partition's applied offset therefore finds every change at or below it already recorded,
//! so a `next` cursor taken from the applied offsets skips nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

use crate::api::{ChangeOut, ChangesResult, StampOut};
use crate::auth::Access;
use crate::config::ChangesConfig;
use crate::index::{Candidate, Filter};
use crate::time::{now_ms, rfc3339_ms};
use crate::view::{Stamp, StoredDoc};

use super::query::{QueryError, build_filter};
use super::{Collection, Ingest, Search};

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A document version was inserted or replaced.
    Upsert,
    /// A document was deleted.
    Delete,
}

impl ChangeKind {
    /// `upsert` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Upsert => "upsert",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One applied change.
#[derive(Clone, Debug)]
pub struct Change {
    /// Upsert or delete.
    pub kind: ChangeKind,
    /// The version written (upsert) or the version removed (delete): its id, title,
    /// metadata and tenant decide who may see the change and which filters it passes.
    pub doc: Arc<StoredDoc>,
    /// Where the change came from and when it became searchable. For an upsert the
    /// version's own stamp; for a delete the delete record's.
    pub stamp: Stamp,
}

impl Change {
    /// The upsert that wrote `doc`.
    pub fn upsert(doc: Arc<StoredDoc>) -> Change {
        Change {
            kind: ChangeKind::Upsert,
            stamp: doc.stamp.clone(),
            doc,
        }
    }

    /// The delete, stamped `stamp`, that removed `doc`.
    pub fn delete(doc: Arc<StoredDoc>, stamp: Stamp) -> Change {
        Change {
            kind: ChangeKind::Delete,
            doc,
            stamp,
        }
    }

    /// What filters see of this change: the version's values at the change's times.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            event_time_ms: self.stamp.event_time_ms,
            indexed_at_ms: self.stamp.indexed_at_ms,
            ..self.doc.candidate()
        }
    }
}

/// A partition: (topic, partition).
type PartitionId = (Arc<str>, i32);

/// Per partition, the highest offset whose changes a reader has seen (−1: none), and the
/// generation (topic ID) of each topic those offsets belong to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    seen: BTreeMap<(String, i32), i64>,
    topic_ids: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct CursorWire {
    /// Format version.
    v: u8,
    /// Collection name: a cursor of one collection is refused by another.
    c: String,
    /// `[topic, partition, offset]`.
    p: Vec<(String, i32, i64)>,
    /// `{topic: topic ID}`: offsets of a recreated topic mean something else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    t: BTreeMap<String, String>,
}

/// Why a cursor cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    /// Not something `changes` handed out.
    #[error(
        "`since` is neither an RFC 3339 time nor a cursor returned by `changes` (the `next` field)"
    )]
    Malformed,
    /// A cursor of another collection.
    #[error("this cursor belongs to collection `{0}`; pass it with that collection")]
    OtherCollection(String),
}

impl Cursor {
    /// The offset seen on a partition (−1 when the cursor does not name it).
    fn seen(&self, topic: &str, partition: i32) -> i64 {
        self.seen
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(-1)
    }

    fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        let slot = self
            .seen
            .entry((topic.to_string(), partition))
            .or_insert(-1);
        *slot = (*slot).max(offset);
    }

    /// The offset seen on a partition, if the cursor names it.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.seen.get(&(topic.to_string(), partition)).copied()
    }

    /// Moves a partition's position forward to `offset` (never back).
    pub fn advance_to(&mut self, topic: &str, partition: i32, offset: i64) {
        self.advance(topic, partition, offset);
    }

    /// Takes `other`'s topic generations (a cluster merges its shards' cursors).
    pub fn adopt_topic_ids(&mut self, other: &Cursor) {
        for (topic, id) in &other.topic_ids {
            self.topic_ids.insert(topic.clone(), id.clone());
        }
    }

    /// Records the generation of `topic` the offsets belong to.
    pub fn set_topic_id(&mut self, topic: &str, id: &str) {
        self.topic_ids.insert(topic.to_string(), id.to_string());
    }

    /// A topic whose generation differs from the one the cursor was taken in.
    pub fn recreated_topic(&self, current: impl Fn(&str) -> Option<String>) -> Option<&str> {
        self.topic_ids
            .iter()
            .find(|(topic, id)| current(topic).is_some_and(|now| now != **id))
            .map(|(topic, _)| topic.as_str())
    }

    /// The opaque text handed to agents.
    pub fn encode(&self, collection: &str) -> String {
        let wire = CursorWire {
            v: 1,
            c: collection.to_string(),
            p: self
                .seen
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            t: self.topic_ids.clone(),
        };
        // Serializing plain strings and numbers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a cursor of `collection` from its text.
    pub fn decode(text: &str, collection: &str) -> Result<Cursor, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| CursorError::Malformed)?;
        let wire: CursorWire =
            serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
        if wire.v != 1 {
            return Err(CursorError::Malformed);
        }
        if wire.c != collection {
            return Err(CursorError::OtherCollection(wire.c));
        }
        Ok(Cursor {
            seen: wire.p.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
            topic_ids: wire.t,
        })
    }
}

/// Where a read of the history starts.
#[derive(Clone, Debug)]
pub enum ReadFrom {
    /// The oldest change kept.
    Oldest,
    /// Changes that became searchable at or after this time (ms since the epoch).
    Time(i64),
    /// Changes after this cursor.
    Cursor(Cursor),
}

/// One page of the history.
#[derive(Debug)]
pub struct Page {
    /// The changes that passed, in apply order.
    pub changes: Vec<Arc<Change>>,
    /// Where the next read continues.
    pub next: Cursor,
    /// More changes were already there when the page filled up.
    pub more: bool,
    /// The history does not reach back as far as asked: changes before `kept_since_ms` may
    /// be missing.
    pub truncated: bool,
    /// Changes that became searchable since this time are all kept (0: since the stream
    /// began).
    pub kept_since_ms: i64,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// The cursor asks for changes the history no longer holds.
    #[error(
        "expired cursor: changes after it on {topic}/{partition} (from offset {from}) are no longer kept \
         (the history keeps changes.max_entries / changes.max_age_ms, and starts afresh when the server \
         restarts); re-sync: read the current state with search or get_document, then call `changes` \
         without `since` (or with a recent time) to get a new cursor"
    )]
    Expired {
        /// The partition whose history no longer reaches the cursor.
        topic: String,
        /// Its number.
        partition: i32,
        /// The first offset the reader has not seen.
        from: i64,
    },
}

/// The bounded change history of one collection.
pub struct ChangeLog {
    bounds: ChangesConfig,
    inner: Mutex<History>,
}

struct History {
    entries: VecDeque<Arc<Change>>,
    /// Per partition, the offset above which every change is kept.
    floors: HashMap<PartitionId, i64>,
    /// Every change that became searchable at or after this time is kept.
    kept_since_ms: i64,
}

impl ChangeLog {
    /// An empty history within `bounds`, complete from `started_ms` on.
    pub fn new(bounds: ChangesConfig, started_ms: i64) -> ChangeLog {
        ChangeLog {
            bounds,
            inner: Mutex::new(History {
                entries: VecDeque::new(),
                floors: HashMap::new(),
                kept_since_ms: started_ms,
            }),
        }
    }

    /// Appends applied changes. `applied_before` gives a partition's applied offset before
    /// this batch: it becomes the partition's floor the first time the partition has a
    /// change (everything at or below it happened before this history began).
    pub fn record(
        &self,
        changes: Vec<Arc<Change>>,
        applied_before: impl Fn(&str, i32) -> Option<i64>,
        now_ms: i64,
    ) {
        let mut h = self.inner.lock();
        for change in changes {
            let key = (Arc::clone(&change.stamp.topic), change.stamp.partition);
            h.floors.entry(key).or_insert_with(|| {
                applied_before(&change.stamp.topic, change.stamp.partition).unwrap_or(-1)
            });
            h.entries.push_back(change);
        }
        self.trim(&mut h, now_ms);
    }

    /// Drops what exceeds the bounds, raising the floors past what was dropped.
    fn trim(&self, h: &mut History, now_ms: i64) {
        let max_age = i64::try_from(self.bounds.max_age_ms).unwrap_or(i64::MAX);
        let oldest_kept = now_ms.saturating_sub(max_age);
        while let Some(front) = h.entries.front() {
            let too_many = h.entries.len() > self.bounds.max_entries;
            if !too_many && front.stamp.indexed_at_ms >= oldest_kept {
                break;
            }
            let key = (Arc::clone(&front.stamp.topic), front.stamp.partition);
            let (offset, at) = (front.stamp.offset, front.stamp.indexed_at_ms);
            let floor = h.floors.entry(key).or_insert(offset);
            *floor = (*floor).max(offset);
            h.kept_since_ms = h.kept_since_ms.max(at + 1);
            h.entries.pop_front();
        }
    }

    /// Number of changes kept.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when no change is kept.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().entries.is_empty()
    }

    /// Reads up to `limit` changes that `visible` lets through, starting at `from`, of the
    /// partitions `scope` accepts (a cluster shard reads only those it answers for; the
    /// cursor it returns names only them). `applied` gives the applied offset of each of the
    /// collection's partitions, read under the history's lock (see the module docs): a page
    /// that ends the history moves the cursor there, past offsets that changed nothing.
    pub fn read(
        &self,
        from: ReadFrom,
        limit: usize,
        (visible, scope): (impl Fn(&Change) -> bool, impl Fn(&str, i32) -> bool),
        applied: impl Fn() -> Vec<(String, i32, i64)>,
        now_ms: i64,
    ) -> Result<Page, ReadError> {
        let mut h = self.inner.lock();
        self.trim(&mut h, now_ms);
        let (mut cursor, since_ms, truncated) = match from {
            ReadFrom::Cursor(mut cursor) => {
                cursor.seen.retain(|(t, p), _| scope(t, *p));
                let floors = h.floors.iter().filter(|((t, p), _)| scope(t, *p));
                for ((topic, partition), floor) in floors {
                    let seen = cursor.seen(topic, *partition);
                    if seen < *floor {
                        return Err(ReadError::Expired {
                            topic: topic.to_string(),
                            partition: *partition,
                            from: seen + 1,
                        });
                    }
                }
                (cursor, i64::MIN, false)
            }
            ReadFrom::Time(since) => (
                self.floor_cursor(&h, &scope),
                since,
                since < h.kept_since_ms,
            ),
            ReadFrom::Oldest => {
                let truncated = h
                    .floors
                    .iter()
                    .any(|((t, p), floor)| scope(t, *p) && *floor >= 0);
                (self.floor_cursor(&h, &scope), i64::MIN, truncated)
            }
        };
        let mut changes = Vec::new();
        let mut more = false;
        for change in &h.entries {
            let s = &change.stamp;
            if !scope(&s.topic, s.partition) || s.offset <= cursor.seen(&s.topic, s.partition) {
                continue;
            }
            if changes.len() == limit {
                more = true;
                break;
            }
            cursor.advance(&s.topic, s.partition, s.offset);
            if s.indexed_at_ms >= since_ms && visible(change) {
                changes.push(Arc::clone(change));
            }
        }
        if !more {
            for (topic, partition, offset) in applied() {
                if scope(&topic, partition) {
                    cursor.advance(&topic, partition, offset);
                }
            }
        }
        Ok(Page {
            changes,
            next: cursor,
            more,
            truncated,
            kept_since_ms: h.kept_since_ms,
        })
    }

    /// A cursor at the floors: just before the oldest change kept of every partition in
    /// `scope`.
    fn floor_cursor(&self, h: &History, scope: impl Fn(&str, i32) -> bool) -> Cursor {
        Cursor {
            seen: h
                .floors
                .iter()
                .filter(|((t, p), _)| scope(t, *p))
                .map(|((t, p), o)| ((t.to_string(), *p), *o))
                .collect(),
            topic_ids: BTreeMap::new(),
        }
    }

    /// Forgets a partition whose topic was recreated: its offsets start over, so its old
    /// changes (and their offsets) no longer fit any cursor of the new generation.
    pub fn reset_partition(&self, topic: &str, partition: i32) {
        let mut h = self.inner.lock();
        h.entries
            .retain(|c| !(&*c.stamp.topic == topic && c.stamp.partition == partition));
        h.floors.insert((Arc::from(topic), partition), -1);
    }
}

/// Changes of one applied batch, as subscribers receive them.
#[derive(Clone)]
pub struct Published {
    /// The collection.
    pub collection: Arc<Collection>,
    /// The change.
    pub change: Arc<Change>,
}

/// How many batches a slow subscriber may fall behind before it misses some (it is then
/// told that something changed, without details).
pub const SUBSCRIBER_BACKLOG: usize = 1024;

impl Ingest {
    /// Records the changes of an applied batch in their collections' histories and tells
    /// subscribers. Called by the writer after the view swap and before the offsets move.
    pub(super) fn publish_changes(&self, batch: Vec<(Arc<Collection>, Change)>) {
        if batch.is_empty() {
            return;
        }
        let now = now_ms();
        let published: Vec<Published> = batch
            .into_iter()
            .map(|(collection, change)| Published {
                collection,
                change: Arc::new(change),
            })
            .collect();
        for c in self.catalog.collections() {
            let mine: Vec<Arc<Change>> = published
                .iter()
                .filter(|p| Arc::ptr_eq(&p.collection, &c))
                .map(|p| Arc::clone(&p.change))
                .collect();
            if !mine.is_empty() {
                c.changes.record(
                    mine,
                    |topic, partition| {
                        self.freshness
                            .progress()
                            .next_offset(topic, partition)
                            .map(|next| next - 1)
                    },
                    now,
                );
            }
        }
        // No receiver is fine: nobody subscribed.
        let _ = self.change_events.send(Arc::new(published));
    }
}

impl Search {
    /// A receiver of every applied batch's changes, for subscriptions.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<Published>>> {
        self.change_events.subscribe()
    }
}

/// A validated `changes` call.
#[derive(Clone, Debug)]
pub struct ChangesRequest {
    /// Collection to read.
    pub collection: String,
    /// A cursor from `next`, or an RFC 3339 time; `None`: from the oldest change kept.
    pub since: Option<String>,
    /// Most changes to return.
    pub limit: usize,
    /// Metadata filter, as for `search`.
    pub filter: Option<Map<String, Value>>,
    /// Return each upsert's text.
    pub include_text: bool,
}

/// Most changes one `changes` call returns.
pub const MAX_CHANGES_LIMIT: usize = 1000;

impl Search {
    /// The `changes` tool.
    pub fn changes(
        &self,
        req: ChangesRequest,
        access: &Access,
    ) -> Result<ChangesResult, QueryError> {
        self.changes_in(req, access, None)
    }

    /// The `changes` tool over some partitions only (`None`: all): what a cluster shard
    /// answers for the partitions it was asked for. The `next` cursor then names only them.
    pub fn changes_in(
        &self,
        req: ChangesRequest,
        access: &Access,
        partitions: Option<&std::collections::HashSet<(String, i32)>>,
    ) -> Result<ChangesResult, QueryError> {
        let in_scope = |topic: &str, partition: i32| {
            partitions.is_none_or(|only| only.contains(&(topic.to_string(), partition)))
        };
        if req.limit == 0 || req.limit > MAX_CHANGES_LIMIT {
            return Err(QueryError::InvalidArgument(format!(
                "limit must be between 1 and {MAX_CHANGES_LIMIT}, got {}",
                req.limit
            )));
        }
        let c = self.resolve(&req.collection, access)?;
        let from = match req.since.as_deref().map(str::trim) {
            None | Some("") => ReadFrom::Oldest,
            Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(t) => ReadFrom::Time(t.timestamp_millis()),
                Err(_) => ReadFrom::Cursor(
                    Cursor::decode(text, c.name())
                        .map_err(|e| QueryError::InvalidArgument(e.to_string()))?,
                ),
            },
        };
        if let ReadFrom::Cursor(cursor) = &from
            && let Some(topic) = cursor.recreated_topic(|t| {
                self.freshness
                    .progress()
                    .topic_id(t)
                    .map(|id| id.to_string())
            })
        {
            return Err(QueryError::InvalidArgument(format!(
                "expired cursor: topic `{topic}` was recreated since it was taken, so its offsets \
                 mean other records now; re-sync: read the current state with search or \
                 get_document, then call `changes` without `since` to get a new cursor"
            )));
        }
        let filter = build_filter(&c, req.filter.as_ref(), access)?;
        let visible = |change: &Change| filter.accepts(&change.doc.terms, &change.candidate());
        let applied = || {
            self.freshness
                .progress()
                .snapshot(&c.config.topics)
                .into_iter()
                .filter_map(|((topic, partition), p)| {
                    p.next_offset
                        .map(|next| (topic.to_string(), partition, next - 1))
                })
                .collect()
        };
        let now = now_ms();
        let page = c
            .changes
            .read(from, req.limit, (visible, in_scope), applied, now)
            .map_err(|e| QueryError::InvalidArgument(e.to_string()))?;
        let mut next = page.next;
        for topic in &c.config.topics {
            if let Some(id) = self.freshness.progress().topic_id(topic) {
                next.set_topic_id(topic, &id);
            }
        }
        let kept_since = rfc3339_ms(page.kept_since_ms);
        let mut notes = Vec::new();
        if page.truncated {
            notes.push(format!(
                "truncated: the history keeps the changes since {kept_since} (changes.max_entries \
                 / max_age_ms, and what this server applied since it started); older ones may be \
                 missing: use search or get_document for the current state"
            ));
        }
        if page.more {
            notes.push("more changes follow: call again with since = next".to_string());
        }
        let changes = page
            .changes
            .iter()
            .map(|change| {
                let doc = &change.doc;
                let current = match change.kind {
                    ChangeKind::Upsert => c.view.get_version(&doc.id, doc.seq).is_some(),
                    ChangeKind::Delete => c.view.get(&doc.id).is_none(),
                };
                ChangeOut {
                    id: doc.id.clone(),
                    collection: c.name().to_string(),
                    kind: change.kind.name().to_string(),
                    title: doc.title.clone(),
                    metadata: doc.metadata.clone(),
                    text: (req.include_text && change.kind == ChangeKind::Upsert)
                        .then(|| doc.text.clone()),
                    current,
                    freshness: StampOut::new(&change.stamp, now),
                }
            })
            .collect();
        Ok(ChangesResult {
            collection: c.name().to_string(),
            changes,
            next: next.encode(c.name()),
            more: page.more,
            truncated: page.truncated,
            kept_since,
            notes,
            freshness: self.watermark(&[c.as_ref()]),
        })
    }
}

/// What a subscription watches in one collection.
#[derive(Clone, Debug)]
pub enum WatchTarget {
    /// One document, by id.
    Document(String),
    /// Every change that passes a filter (none: every change).
    Changes(Option<Map<String, Value>>),
}

/// A subscription's test on published changes, with the subscriber's access built in: it
/// only ever matches changes the subscriber may read.
#[derive(Clone, Debug)]
pub struct ChangeWatch {
    collection: String,
    document: Option<String>,
    /// The subscriber's filter plus the mandatory tenant clause.
    filter: Filter,
}

impl ChangeWatch {
    /// True if `p` is a change this subscriber is to be told about.
    pub fn matches(&self, p: &Published) -> bool {
        let change = &p.change;
        if p.collection.name() != self.collection {
            return false;
        }
        if self
            .document
            .as_ref()
            .is_some_and(|id| *id != change.doc.id)
        {
            return false;
        }
        self.filter.accepts(&change.doc.terms, &change.candidate())
    }
}

impl Search {
    /// A watch on `collection` for a subscriber with `access`. An unknown or unreadable
    /// collection and a bad filter are errors that say so.
    pub fn watch(
        &self,
        collection: &str,
        target: WatchTarget,
        access: &Access,
    ) -> Result<ChangeWatch, QueryError> {
        let c = self.resolve(collection, access)?;
        let (document, filter) = match target {
            WatchTarget::Document(id) => (Some(id), build_filter(&c, None, access)?),
            WatchTarget::Changes(filter) => (None, build_filter(&c, filter.as_ref(), access)?),
        };
        Ok(ChangeWatch {
            collection: c.name().to_string(),
            document,
            filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::FilterTerms;

    fn change(partition: i32, offset: i64, id: &str, at: i64) -> Arc<Change> {
        let stamp = Stamp {
            topic: Arc::from("t"),
            partition,
            offset,
            event_time_ms: at,
            ingested_at_ms: at,
            indexed_at_ms: at,
        };
        Arc::new(Change {
            kind: ChangeKind::Upsert,
            doc: Arc::new(StoredDoc {
                id: id.into(),
                title: None,
                text: String::new(),
                metadata: Map::new(),
                tenant: None,
                terms: FilterTerms::default(),
                chunks: Vec::new(),
                seq: offset as u64,
                stamp: stamp.clone(),
            }),
            stamp,
        })
    }

    fn log(max_entries: usize) -> ChangeLog {
        ChangeLog::new(
            ChangesConfig {
                max_entries,
                max_age_ms: 1_000_000,
            },
            0,
        )
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.changes.iter().map(|c| c.doc.id.as_str()).collect()
    }

    fn read(log: &ChangeLog, from: ReadFrom, limit: usize) -> Result<Page, ReadError> {
        log.read(
            from,
            limit,
            (|_: &Change| true, |_: &str, _| true),
            Vec::new,
            10,
        )
    }

    #[test]
    fn cursors_page_through_in_apply_order_and_round_trip() {
        let log = log(100);
        log.record(
            vec![
                change(0, 0, "a", 1),
                change(1, 0, "b", 1),
                change(0, 1, "c", 2),
            ],
            |_, _| None,
            10,
        );
        let first = read(&log, ReadFrom::Oldest, 2).unwrap();
        assert_eq!(ids(&first), ["a", "b"]);
        assert!(first.more && !first.truncated);
        let text = first.next.encode("docs");
        let cursor = Cursor::decode(&text, "docs").unwrap();
        assert_eq!(cursor, first.next);
        assert_eq!(
            Cursor::decode(&text, "other"),
            Err(CursorError::OtherCollection("docs".into()))
        );
        assert_eq!(
            Cursor::decode("nonsense!", "docs"),
            Err(CursorError::Malformed)
        );
        let second = read(&log, ReadFrom::Cursor(cursor), 2).unwrap();
        assert_eq!(ids(&second), ["c"]);
        assert!(!second.more);
        log.record(vec![change(1, 1, "d", 3)], |_, _| None, 10);
        let third = read(&log, ReadFrom::Cursor(second.next), 10).unwrap();
        assert_eq!(ids(&third), ["d"]);
        let by_time = read(&log, ReadFrom::Time(2), 10).unwrap();
        assert_eq!(ids(&by_time), ["c", "d"]);
    }

    #[test]
    fn dropped_history_expires_older_cursors_and_never_skips() {
        let log = log(2);
        log.record(vec![change(0, 5, "a", 1)], |_, _| Some(4), 10);
        let start = read(&log, ReadFrom::Oldest, 10).unwrap();
        assert!(start.truncated, "offsets up to 4 came before this history");
        let old = start.next.clone();
        // A cursor from before this history began is expired.
        let mut before = Cursor::default();
        before.advance("t", 0, 3);
        let err = read(&log, ReadFrom::Cursor(before), 10).unwrap_err();
        assert_eq!(
            err,
            ReadError::Expired {
                topic: "t".into(),
                partition: 0,
                from: 4
            }
        );
        assert!(err.to_string().contains("re-sync"));
        log.record(
            vec![change(0, 6, "b", 2), change(0, 7, "c", 3)],
            |_, _| None,
            10,
        );
        // "a" was dropped: a cursor that had not seen it is expired; one that had is not.
        assert!(matches!(
            read(&log, ReadFrom::Cursor(Cursor::default()), 10),
            Err(ReadError::Expired { from: 0, .. })
        ));
        let mut seen_a = Cursor::default();
        seen_a.advance("t", 0, 5);
        assert_eq!(
            ids(&read(&log, ReadFrom::Cursor(seen_a), 10).unwrap()),
            ["b", "c"]
        );
        // The first page's cursor had seen "a": still good.
        assert_eq!(
            ids(&read(&log, ReadFrom::Cursor(old), 10).unwrap()),
            ["b", "c"]
        );
        let by_time = read(&log, ReadFrom::Time(0), 10).unwrap();
        assert!(by_time.truncated, "a change since then was dropped");
        assert!(!read(&log, ReadFrom::Time(3), 10).unwrap().truncated);
    }

    #[test]
    fn a_recreated_topic_is_told_apart_and_its_partition_starts_over() {
        let log = log(100);
        log.record(vec![change(0, 7, "a", 1)], |_, _| Some(6), 10);
        let mut cursor = read(&log, ReadFrom::Oldest, 10).unwrap().next;
        cursor.set_topic_id("t", "gen-1");
        let text = cursor.encode("docs");
        let back = Cursor::decode(&text, "docs").unwrap();
        assert_eq!(back.recreated_topic(|_| Some("gen-1".into())), None);
        assert_eq!(back.recreated_topic(|_| Some("gen-2".into())), Some("t"));
        assert_eq!(back.recreated_topic(|_| None), None);
        log.reset_partition("t", 0);
        assert!(log.is_empty());
        log.record(vec![change(0, 0, "b", 2)], |_, _| None, 10);
        let fresh = read(&log, ReadFrom::Oldest, 10).unwrap();
        assert_eq!(ids(&fresh), ["b"]);
        assert!(
            !fresh.truncated,
            "the new generation is complete from its start"
        );
    }

    #[test]
    fn age_bound_drops_old_changes_on_read_too() {
        let log = ChangeLog::new(
            ChangesConfig {
                max_entries: 100,
                max_age_ms: 50,
            },
            0,
        );
        log.record(vec![change(0, 0, "a", 100)], |_, _| None, 100);
        assert_eq!(log.len(), 1);
        let page = log
            .read(
                ReadFrom::Oldest,
                10,
                (|_: &Change| true, |_: &str, _| true),
                Vec::new,
                200,
            )
            .unwrap();
        assert!(page.changes.is_empty() && log.is_empty());
        assert_eq!(page.kept_since_ms, 101);
    }

    #[test]
    fn hidden_changes_still_move_the_cursor_and_applied_offsets_end_a_page() {
        let log = log(100);
        log.record(
            vec![change(0, 0, "secret", 1), change(0, 1, "open", 1)],
            |_, _| None,
            10,
        );
        let page = log
            .read(
                ReadFrom::Oldest,
                10,
                (|c: &Change| c.doc.id == "open", |_: &str, _| true),
                || vec![("t".into(), 0, 9), ("t".into(), 1, 3)],
                10,
            )
            .unwrap();
        assert_eq!(ids(&page), ["open"]);
        assert_eq!(page.next.seen("t", 0), 9);
        assert_eq!(page.next.seen("t", 1), 3);
    }
}
