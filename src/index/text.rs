//! BM25 full-text search over document chunks (tantivy).
//!
//! Each chunk of a document is one tantivy document carrying the document's title, the chunk's
//! body and the document's filter tokens. Upserts replace all chunks of a document (delete by
//! `doc_id` term, then add), so a shrinking document leaves no stale chunk behind.
//!
//! Writes are searchable at once: each upsert or delete goes to the fresh tier (see
//! [`super::fresh_text`]), which a search unions with the committed index, and is queued for
//! tantivy. [`TextIndex::commit_through`] hands the queued writes to the one long-lived
//! `IndexWriter` and commits them (the checkpoint, off the writer's path); only then do they
//! leave the fresh tier. Query text is user input and is never parsed as query syntax: it is tokenised
//! with the same analyzer as the documents and turned into term queries, so punctuation such
//! as `foo:bar`, quotes or `AND(` can never make a search fail.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tantivy::collector::{Count, FilterCollector, TopDocs};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::{SnippetGenerator, collapse_overlapped_ranges};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::IndexError;
use super::filter::{Filter, FilterTerms};
pub use super::fresh_text::TermStats;
use super::fresh_text::{FixedStats, FreshTier};
use tantivy::query::Bm25StatisticsProvider;

/// A title match counts this many times a body match: titles are short and say what the
/// document is about. For an index whose title is not also part of the body text.
pub const TITLE_BOOST: f32 = 2.0;
/// The boost when the title is also part of the body text, where it already counts once:
/// on SciFact a large extra weight cost nDCG@10 0.09 (see `CollectionConfig::title_boost`).
pub const TITLE_BOOST_WITH_TITLE_IN_TEXT: f32 = 0.1;
/// Approximate snippet length in bytes (tantivy measures fragments in bytes).
pub const SNIPPET_CHARS: usize = 200;
/// tantivy's analyzer with English stemming, so "running" finds "runs".
const TOKENIZER: &str = "en_stem";
/// Indexing memory for the single writer thread; tantivy's minimum is 15 MB.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Decides from a chunk's version sequence number whether it may be a hit.
pub type SeqPredicate = std::sync::Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// One chunk-level result.
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    /// The document the chunk belongs to. Only [`TextIndex::search`] and
    /// [`TextIndex::search_where`] read it for committed chunks (from the document store);
    /// [`TextIndex::search_with_stats`] leaves it `None` there, because its callers know a
    /// chunk's document by `seq` and reading the store was a fifth of a query's CPU.
    pub doc_id: Option<String>,
    /// Position of the chunk within its document, from 0.
    pub chunk_no: u32,
    /// The document version this chunk was indexed from.
    pub seq: u64,
    /// BM25 score (title matches boosted); only comparable within one search.
    pub score: f32,
}

/// BM25 index of chunks. `Send + Sync`: one thread writes (`upsert`, `delete`), another may
/// commit (`commit_through`), any number search.
pub struct TextIndex {
    index: Index,
    fields: Fields,
    /// The one long-lived writer. Only commits take this lock.
    writer: Mutex<IndexWriter>,
    /// Reloaded manually right after each commit.
    reader: IndexReader,
    /// Documents changed since the last commit, searchable from memory.
    fresh: RwLock<FreshTier>,
    /// Changes not committed yet, in write order. They stay until a commit holding them
    /// succeeds: a failed commit (disk full) loses tantivy's pending segment, and the next
    /// attempt writes them again.
    queue: Mutex<VecDeque<Arc<QueuedOp>>>,
    /// Number of the last change written (changes are numbered from 1).
    last_op: AtomicU64,
    /// The stemming analyzer, for turning query text into the terms the index holds.
    analyzer: TextAnalyzer,
    title_boost: f32,
}

/// A change waiting for its commit.
struct QueuedOp {
    op: u64,
    doc_id: String,
    /// `None`: delete.
    docs: Option<Vec<TantivyDocument>>,
}

#[derive(Clone, Copy)]
struct Fields {
    doc_id: Field,
    chunk_no: Field,
    seq: Field,
    title: Field,
    body: Field,
    /// Encoded `field` U+001F `value` tokens (see `filter::token`), raw and multi-valued.
    filt: Field,
    /// The caller's stored form of the whole document, on chunk 0 only: a persisted index
    /// is also the document store the view is loaded from at start.
    stored: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    // Term frequencies are enough for BM25; positions would only serve phrase queries.
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        doc_id: builder.add_text_field("doc_id", STRING | STORED),
        chunk_no: builder.add_u64_field("chunk_no", FAST | STORED),
        seq: builder.add_u64_field("seq", FAST | STORED),
        title: builder.add_text_field("title", text.clone()),
        body: builder.add_text_field("body", text),
        filt: builder.add_text_field("filt", STRING),
        stored: builder.add_bytes_field("stored", STORED),
    };
    (builder.build(), fields)
}

impl TextIndex {
    /// An empty index held in memory.
    pub fn in_ram() -> Result<TextIndex, IndexError> {
        Self::in_ram_with_title_boost(TITLE_BOOST)
    }

    /// An in-memory index with a different title boost (1.0 = no boost).
    pub fn in_ram_with_title_boost(title_boost: f32) -> Result<TextIndex, IndexError> {
        let (schema, fields) = schema();
        Self::from_index(Index::create_in_ram(schema), fields, title_boost)
    }

    /// Open the index in `dir` (memory-mapped), creating it (and the directory) if absent.
    /// Fails if the directory holds an index with a different schema or damaged metadata.
    pub fn open_or_create(dir: &Path, title_boost: f32) -> Result<TextIndex, IndexError> {
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let directory = MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(directory, schema)?;
        Self::from_index(index, fields, title_boost)
    }

    fn from_index(index: Index, fields: Fields, title_boost: f32) -> Result<TextIndex, IndexError> {
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let analyzer = index.tokenizer_for_field(fields.body)?;
        Ok(TextIndex {
            index,
            fields,
            writer: Mutex::new(writer),
            reader,
            fresh: RwLock::new(FreshTier::default()),
            queue: Mutex::new(VecDeque::new()),
            last_op: AtomicU64::new(0),
            analyzer,
            title_boost,
        })
    }

    /// Replace every chunk of `doc_id` with these: searchable at once, durable once a
    /// commit through this change succeeds.
    ///
    /// The title is indexed with every chunk, so a chunk matching both title and body ranks
    /// above one matching either. A document without chunks is indexed as one empty chunk so
    /// its title stays searchable.
    pub fn upsert(
        &self,
        doc_id: &str,
        seq: u64,
        title: &str,
        chunks: &[&str],
        terms: &FilterTerms,
    ) -> Result<(), IndexError> {
        self.upsert_stored(doc_id, seq, title, chunks, terms, None)
    }

    /// Like [`upsert`](Self::upsert), keeping `stored` (the caller's form of the whole
    /// document) with chunk 0, to be read back by [`stored_docs`](Self::stored_docs).
    pub fn upsert_stored(
        &self,
        doc_id: &str,
        seq: u64,
        title: &str,
        chunks: &[&str],
        terms: &FilterTerms,
        stored: Option<&[u8]>,
    ) -> Result<(), IndexError> {
        let f = self.fields;
        let chunks: &[&str] = if chunks.is_empty() { &[""] } else { chunks };
        let mut docs = Vec::with_capacity(chunks.len());
        for (chunk_no, body) in chunks.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.doc_id, doc_id);
            doc.add_u64(f.chunk_no, chunk_no as u64);
            doc.add_u64(f.seq, seq);
            doc.add_text(f.title, title);
            doc.add_text(f.body, body);
            for token in terms.tokens() {
                doc.add_text(f.filt, token);
            }
            if let (0, Some(stored)) = (chunk_no, stored) {
                doc.add_bytes(f.stored, stored);
            }
            docs.push(doc);
        }
        let op = self.last_op.fetch_add(1, Ordering::Relaxed) + 1;
        // Analysed outside the lock: searches are not held up by it.
        let version = FreshTier::analyze(&mut self.analyzer.clone(), seq, title, chunks, terms);
        self.fresh.write().put(op, doc_id, Some(version));
        self.queue.lock().push_back(Arc::new(QueuedOp {
            op,
            doc_id: doc_id.to_owned(),
            docs: Some(docs),
        }));
        Ok(())
    }

    /// The stored forms of every committed, live document (see
    /// [`upsert_stored`](Self::upsert_stored)), in no particular order.
    pub fn stored_docs(&self) -> Result<Vec<Vec<u8>>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(64)
                .map_err(tantivy::TantivyError::from)?;
            for doc in store.iter::<TantivyDocument>(segment.alive_bitset()) {
                if let Some(bytes) = doc?
                    .get_first(self.fields.stored)
                    .and_then(|v| v.as_bytes())
                {
                    out.push(bytes.to_vec());
                }
            }
        }
        Ok(out)
    }

    /// Removes every document, committed with `payload` (a collection rebuilt from scratch).
    pub fn clear(&self, payload: &str) -> Result<(), IndexError> {
        let mut writer = self.writer.lock();
        self.queue.lock().clear();
        self.fresh.write().clear();
        writer.delete_all_documents()?;
        Self::commit_writer(&mut writer, Some(payload))?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Remove every chunk of `doc_id`: at once for searches, durably once a commit through
    /// this change succeeds.
    pub fn delete(&self, doc_id: &str) -> Result<(), IndexError> {
        let op = self.last_op.fetch_add(1, Ordering::Relaxed) + 1;
        self.fresh.write().put(op, doc_id, None);
        self.queue.lock().push_back(Arc::new(QueuedOp {
            op,
            doc_id: doc_id.to_owned(),
            docs: None,
        }));
        Ok(())
    }

    /// The number of the last change written: pass it to
    /// [`commit_through`](Self::commit_through) to commit everything written so far.
    pub fn last_op(&self) -> u64 {
        self.last_op.load(Ordering::Relaxed)
    }

    /// Commits every change written so far (see [`commit_through`](Self::commit_through)).
    pub fn commit(&self) -> Result<(), IndexError> {
        self.commit_through(self.last_op(), None)
    }

    /// Hands the changes numbered up to `through` to tantivy and commits them, with
    /// `payload` (e.g. the Kafka offsets they cover) stored atomically with the commit. Later
    /// changes stay queued. May run on another thread than the writes; searches see every
    /// change before, during and after it.
    ///
    /// On failure (e.g. the disk is full) tantivy's writer is reset to the last commit
    /// (tantivy 0.27 loses the failed segment, and a writer whose commit failed has no
    /// indexing thread left) and the changes stay queued and searchable: the next commit
    /// writes them again.
    pub fn commit_through(&self, through: u64, payload: Option<&str>) -> Result<(), IndexError> {
        let mut writer = self.writer.lock();
        let ops: Vec<Arc<QueuedOp>> = self
            .queue
            .lock()
            .iter()
            .take_while(|q| q.op <= through)
            .cloned()
            .collect();
        let f = self.fields;
        let mut written = Ok(());
        for q in &ops {
            writer.delete_term(Term::from_field_text(f.doc_id, &q.doc_id));
            for doc in q.docs.iter().flatten() {
                if let Err(e) = writer.add_document(doc.clone()) {
                    written = Err(e);
                }
            }
        }
        let committed = written.and_then(|_| Self::commit_writer(&mut writer, payload));
        if let Err(e) = committed {
            if let Err(rollback) = writer.rollback() {
                tracing::error!("BM25 writer cannot be reset after a failed commit: {rollback}");
            }
            return Err(e.into());
        }
        drop(writer);
        self.reader.reload()?;
        {
            let mut queue = self.queue.lock();
            while queue.front().is_some_and(|q| q.op <= through) {
                queue.pop_front();
            }
        }
        // After the reload: a search sees a change in at least one tier at every moment.
        let mut fresh = self.fresh.write();
        for q in &ops {
            fresh.retire(&q.doc_id, q.op);
        }
        Ok(())
    }

    fn commit_writer(writer: &mut IndexWriter, payload: Option<&str>) -> tantivy::Result<()> {
        let mut prepared = writer.prepare_commit()?;
        if let Some(payload) = payload {
            prepared.set_payload(payload);
        }
        prepared.commit().map(|_| ())
    }

    /// Changes written but not committed yet.
    pub fn uncommitted(&self) -> usize {
        self.queue.lock().len()
    }

    /// The payload of the last commit, if it had one.
    pub fn commit_payload(&self) -> Result<Option<String>, IndexError> {
        Ok(self.index.load_metas()?.payload)
    }

    /// BM25 over title (boosted) and body with the filter applied inside the query, so the
    /// top `limit` are all filter-passing chunks. A query without any searchable word returns
    /// no hits.
    pub fn search(
        &self,
        query: &str,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<TextHit>, IndexError> {
        self.search_where(query, filter, limit, None)
    }

    /// [`search`](Self::search), keeping only chunks whose version sequence number passes
    /// `accept` (the filter's per-document conditions), inside the search: the top `limit`
    /// are all accepted chunks.
    pub fn search_where(
        &self,
        query: &str,
        filter: &Filter,
        limit: usize,
        accept: Option<SeqPredicate>,
    ) -> Result<Vec<TextHit>, IndexError> {
        self.search_inner(query, filter, limit, accept, None, true)
    }

    /// The statistics BM25 would score `query` with here: summed over the shards of a
    /// cluster and passed to [`Self::search_with_stats`], they make shards' scores comparable.
    pub fn term_stats(&self, query: &str) -> Result<TermStats, IndexError> {
        let words = self.analyze(query);
        let fresh = self.fresh.read();
        let searcher = self.reader.searcher();
        let f = self.fields;
        Ok(fresh
            .stats(searcher, [f.title, f.body], &words)
            .term_stats(&words)?)
    }

    /// [`Self::search_where`], scoring with `global` statistics when given instead of this
    /// index's own, and without reading committed chunks' document ids (`doc_id` is `None`
    /// for them: the caller resolves `seq`).
    pub fn search_with_stats(
        &self,
        query: &str,
        filter: &Filter,
        limit: usize,
        accept: Option<SeqPredicate>,
        global: Option<&TermStats>,
    ) -> Result<Vec<TextHit>, IndexError> {
        self.search_inner(query, filter, limit, accept, global, false)
    }

    fn search_inner(
        &self,
        query: &str,
        filter: &Filter,
        limit: usize,
        accept: Option<SeqPredicate>,
        global: Option<&TermStats>,
        read_ids: bool,
    ) -> Result<Vec<TextHit>, IndexError> {
        let words = self.analyze(query);
        if words.is_empty() || limit == 0 || filter.rejects_everything() {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut text: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(words.len() * 2);
        for word in &words {
            let title = TermQuery::new(
                Term::from_field_text(f.title, word),
                IndexRecordOption::WithFreqs,
            );
            text.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(title), self.title_boost)),
            ));
            let body = TermQuery::new(
                Term::from_field_text(f.body, word),
                IndexRecordOption::WithFreqs,
            );
            text.push((Occur::Should, Box::new(body)));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(text)))];
        for (field, values) in &filter.clauses {
            let terms = values
                .iter()
                .map(|value| Term::from_field_text(f.filt, &super::filter::token(field, value)));
            // Score 0: filters decide membership, never ranking.
            let clause = ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0);
            clauses.push((Occur::Must, Box::new(clause)));
        }
        // One consistent view of both tiers: a commit reloads the reader before it drops
        // what it committed from the fresh tier, and the lock orders this read against that.
        let (searcher, hidden, fresh_hits, stats) = {
            let fresh = self.fresh.read();
            let searcher = self.reader.searcher();
            let hidden: Vec<Term> = fresh
                .ids()
                .map(|id| Term::from_field_text(f.doc_id, id))
                .collect();
            let local = fresh.stats(searcher.clone(), [f.title, f.body], &words);
            let stats: Box<dyn Bm25StatisticsProvider + '_> = match global {
                Some(stats) => Box::new(FixedStats {
                    stats,
                    fields: [f.title, f.body],
                }),
                None => Box::new(local),
            };
            let hits = fresh.search(
                &words,
                filter,
                accept.as_deref(),
                limit,
                (stats.as_ref(), [f.title, f.body]),
                self.title_boost,
            )?;
            (searcher, hidden, hits, stats)
        };
        if !hidden.is_empty() {
            // Their newest versions (or deletions) are in the fresh tier.
            clauses.push((Occur::MustNot, Box::new(TermSetQuery::new(hidden))));
        }
        let query = BooleanQuery::new(clauses);
        let top_docs = TopDocs::with_limit(limit).order_by_score();
        let top = match accept {
            None => searcher.search_with_statistics_provider(&query, &top_docs, stats.as_ref())?,
            Some(accept) => {
                let by_seq = move |seq: u64| accept(seq);
                searcher.search_with_statistics_provider(
                    &query,
                    &FilterCollector::new("seq".to_string(), by_seq, top_docs),
                    stats.as_ref(),
                )?
            }
        };
        // Sequence and chunk numbers come from their columns, opened once per segment hit.
        let mut columns: HashMap<u32, (Column<u64>, Column<u64>)> = HashMap::new();
        let mut hits = Vec::with_capacity(top.len() + fresh_hits.len());
        for (score, address) in top {
            let (seq, chunk_no) = match columns.entry(address.segment_ord) {
                Entry::Occupied(open) => open.into_mut(),
                Entry::Vacant(slot) => {
                    let fast = searcher.segment_reader(address.segment_ord).fast_fields();
                    slot.insert((fast.u64("seq")?, fast.u64("chunk_no")?))
                }
            };
            let doc_id = if read_ids {
                let doc: TantivyDocument = searcher.doc(address)?;
                doc.get_first(f.doc_id)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            } else {
                None
            };
            hits.push(TextHit {
                doc_id,
                chunk_no: chunk_no.first(address.doc_id).unwrap_or(0) as u32,
                seq: seq.first(address.doc_id).unwrap_or(0),
                score,
            });
        }
        if !fresh_hits.is_empty() {
            hits.extend(fresh_hits.into_iter().map(|h| TextHit {
                doc_id: Some(h.doc_id),
                chunk_no: h.chunk_no,
                seq: h.seq,
                score: h.score,
            }));
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(limit);
        }
        Ok(hits)
    }

    /// A ~200-byte extract of `text` around the words of `query`, with matches wrapped in
    /// `**`. Falls back to the start of `text` when no word matches.
    pub fn snippet(&self, query: &str, text: &str) -> String {
        let terms: BTreeMap<String, f32> = self
            .analyze(query)
            .into_iter()
            .map(|word| (word, 1.0))
            .collect();
        let generator = SnippetGenerator::new(
            terms,
            self.analyzer.clone(),
            self.fields.body,
            SNIPPET_CHARS,
        );
        let snippet = generator.snippet(text);
        if snippet.highlighted().is_empty() {
            return prefix(text, SNIPPET_CHARS).to_owned();
        }
        let fragment = snippet.fragment();
        let mut out = String::with_capacity(fragment.len() + 8);
        let mut from = 0;
        for range in collapse_overlapped_ranges(snippet.highlighted()) {
            out.push_str(&fragment[from..range.start]);
            out.push_str("**");
            out.push_str(&fragment[range.clone()]);
            out.push_str("**");
            from = range.end;
        }
        out.push_str(&fragment[from..]);
        out
    }

    /// Searchable chunks: committed ones not superseded since, and fresh ones.
    pub fn num_chunks(&self) -> u64 {
        let fresh = self.fresh.read();
        let searcher = self.reader.searcher();
        let mut committed = searcher.num_docs();
        if !fresh.is_empty() {
            let hidden = fresh
                .ids()
                .map(|id| Term::from_field_text(self.fields.doc_id, id));
            // Cannot fail on an indexed field; counting nothing hidden is the safe side.
            let superseded = searcher
                .search(&TermSetQuery::new(hidden), &Count)
                .unwrap_or(0);
            committed = committed.saturating_sub(superseded as u64);
        }
        committed + fresh.num_chunks()
    }

    /// The distinct index terms of `text` in order of first appearance, as the document
    /// analyzer produces them. Linear in the length of `text`: a query of many distinct
    /// words must not cost quadratic time.
    pub fn analyze(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut seen = HashSet::new();
        let mut words = Vec::new();
        while stream.advance() {
            let word = &stream.token().text;
            if !seen.contains(word.as_str()) {
                seen.insert(word.clone());
                words.push(word.clone());
            }
        }
        words
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_terms() -> FilterTerms {
        FilterTerms::default()
    }

    fn terms(metadata: serde_json::Value) -> FilterTerms {
        FilterTerms::from_metadata(metadata.as_object().unwrap(), &[])
    }

    fn filter(value: serde_json::Value) -> Filter {
        Filter::from_json(value.as_object().unwrap()).unwrap()
    }

    fn ids(hits: &[TextHit]) -> Vec<&str> {
        hits.iter()
            .map(|h| h.doc_id.as_deref().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TextIndex>();
    }

    #[test]
    fn stemming_matches_word_forms() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "Morning", &["She runs every day."], &no_terms())
            .unwrap();
        index
            .upsert("b", 1, "Evening", &["He sleeps."], &no_terms())
            .unwrap();
        index.commit().unwrap();
        let hits = index.search("running", &Filter::default(), 10).unwrap();
        assert_eq!(ids(&hits), ["a"]);
        assert_eq!((hits[0].chunk_no, hits[0].seq), (0, 1));
        assert!(hits[0].score > 0.0);
    }

    #[test]
    fn title_boost_changes_ranking() {
        let build = |boost| {
            let index = TextIndex::in_ram_with_title_boost(boost).unwrap();
            // "kafka" is in the title of one and, twice, in the body of the other.
            index
                .upsert(
                    "title",
                    1,
                    "Kafka basics",
                    &["an introduction to streams and logs"],
                    &no_terms(),
                )
                .unwrap();
            index
                .upsert(
                    "body",
                    1,
                    "Streams basics",
                    &["kafka topics and kafka logs"],
                    &no_terms(),
                )
                .unwrap();
            index.commit().unwrap();
            index.search("kafka", &Filter::default(), 10).unwrap()
        };
        let unboosted = build(1.0);
        let boosted = build(TITLE_BOOST);
        assert_eq!(ids(&unboosted), ["body", "title"], "{unboosted:?}");
        assert_eq!(ids(&boosted), ["title", "body"], "{boosted:?}");
    }

    #[test]
    fn upsert_replaces_all_chunks() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "Old", &["apples here", "more apples"], &no_terms())
            .unwrap();
        index.commit().unwrap();
        assert_eq!(index.num_chunks(), 2);
        index
            .upsert("a", 2, "New", &["bananas now"], &no_terms())
            .unwrap();
        index.commit().unwrap();
        assert_eq!(index.num_chunks(), 1);
        assert!(
            index
                .search("apples", &Filter::default(), 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            index
                .search("old", &Filter::default(), 10)
                .unwrap()
                .is_empty()
        );
        let hits = index.search("banana", &Filter::default(), 10).unwrap();
        assert_eq!(ids(&hits), ["a"]);
        assert_eq!(hits[0].seq, 2);
    }

    #[test]
    fn delete_removes_document() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "Cats", &["cats purr", "cats nap"], &no_terms())
            .unwrap();
        index
            .upsert("b", 1, "Dogs", &["dogs and cats"], &no_terms())
            .unwrap();
        index.commit().unwrap();
        index.delete("a").unwrap();
        index.delete("missing").unwrap();
        index.commit().unwrap();
        assert_eq!(
            ids(&index.search("cats", &Filter::default(), 10).unwrap()),
            ["b"]
        );
        assert_eq!(index.num_chunks(), 1);
    }

    #[test]
    fn changes_are_searchable_before_their_commit() {
        let index = TextIndex::in_ram().unwrap();
        let found = |query: &str| -> Vec<String> {
            let hits = index.search(query, &Filter::default(), 10).unwrap();
            hits.into_iter().filter_map(|h| h.doc_id).collect()
        };
        index
            .upsert("a", 1, "Hello", &["world"], &no_terms())
            .unwrap();
        assert_eq!(found("world"), ["a"]);
        assert_eq!(index.num_chunks(), 1);
        index.commit().unwrap();
        assert_eq!(index.uncommitted(), 0);
        assert_eq!(found("world"), ["a"]);
        // An update hides the committed version at once, a delete hides the document.
        index
            .upsert("a", 2, "Hello", &["planet"], &no_terms())
            .unwrap();
        assert!(found("world").is_empty());
        let hits = index.search("planet", &Filter::default(), 10).unwrap();
        assert_eq!((ids(&hits), hits[0].seq), (vec!["a"], 2));
        assert_eq!(index.num_chunks(), 1);
        index.delete("a").unwrap();
        assert!(found("hello").is_empty());
        assert_eq!(index.num_chunks(), 0);
        index.commit().unwrap();
        assert!(found("hello").is_empty());
        assert_eq!(index.num_chunks(), 0);
    }

    /// The same documents score the same whether they are committed or still in the fresh
    /// tier, and in any mix of the two: both tiers share one set of BM25 statistics.
    #[test]
    fn fresh_and_committed_chunks_score_alike() {
        let texts: Vec<(String, String, Vec<String>)> = (0..40)
            .map(|i| {
                let title = format!("report {} {}", i % 3, ["alpha", "beta"][i % 2]);
                let chunks = (0..1 + i % 3)
                    .map(|c| {
                        (0..(5 + (i * 7 + c) % 13))
                            .map(|w| ["alpha", "beta", "gamma", "delta", "omega"][(i + w * c) % 5])
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                (format!("d{i}"), title, chunks)
            })
            .collect();
        let scores = |commit_after: usize| {
            let index = TextIndex::in_ram().unwrap();
            for (n, (id, title, chunks)) in texts.iter().enumerate() {
                let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
                index.upsert(id, 1, title, &chunks, &no_terms()).unwrap();
                if n + 1 == commit_after {
                    index.commit().unwrap();
                }
            }
            let mut hits = index
                .search("alpha gamma omega", &Filter::default(), 200)
                .unwrap();
            hits.sort_by(|a, b| (&a.doc_id, a.chunk_no).cmp(&(&b.doc_id, b.chunk_no)));
            hits
        };
        let committed = scores(texts.len());
        assert!(committed.len() > 40, "{}", committed.len());
        for mix in [0, 1, 17] {
            let mixed = scores(mix);
            assert_eq!(mixed.len(), committed.len());
            for (a, b) in mixed.iter().zip(&committed) {
                assert_eq!((&a.doc_id, a.chunk_no), (&b.doc_id, b.chunk_no));
                assert!(
                    (a.score - b.score).abs() < 1e-4 * b.score.max(1.0),
                    "{a:?} against {b:?} (first {mix} committed)"
                );
            }
        }
    }

    /// Documents split over three indexes (shards), each scored with the three indexes'
    /// summed statistics, score as they do in one index holding them all; with each shard's
    /// own statistics they do not.
    #[test]
    fn shards_scored_with_summed_statistics_score_like_one_index() {
        let docs: Vec<(String, String, String)> = (0..60)
            .map(|i| {
                let words = ["kafka", "stream", "offset", "broker", "replica", "segment"];
                // Skewed: "kafka" is common in shard 0 and rare elsewhere.
                let body = (0..(4 + i % 9))
                    .map(|w| words[(i * 5 + w * (1 + i % 3)) % words.len()])
                    .chain((i % 3 == 0).then_some("kafka"))
                    .collect::<Vec<_>>()
                    .join(" ");
                (format!("d{i}"), format!("title {}", words[i % 4]), body)
            })
            .collect();
        let whole = TextIndex::in_ram().unwrap();
        let shards: Vec<TextIndex> = (0..3).map(|_| TextIndex::in_ram().unwrap()).collect();
        for (i, (id, title, body)) in docs.iter().enumerate() {
            // Unique sequence numbers: shard hits are known by them (no document ids).
            let seq = i as u64 + 1;
            whole.upsert(id, seq, title, &[body], &no_terms()).unwrap();
            shards[i % 3]
                .upsert(id, seq, title, &[body], &no_terms())
                .unwrap();
        }
        // One shard committed, the others partly fresh: the tiers' statistics add up too.
        shards[0].commit().unwrap();
        whole.commit().unwrap();
        let query = "kafka replica title";
        let mut summed = TermStats::default();
        for shard in &shards {
            summed.add(&shard.term_stats(query).unwrap());
        }
        assert_eq!(summed, whole.term_stats(query).unwrap());
        let sorted = |mut hits: Vec<TextHit>| {
            hits.sort_by_key(|h| h.seq);
            hits
        };
        let want = sorted(whole.search(query, &Filter::default(), 100).unwrap());
        let search = |global: Option<&TermStats>| {
            sorted(
                shards
                    .iter()
                    .flat_map(|s| {
                        s.search_with_stats(query, &Filter::default(), 100, None, global)
                            .unwrap()
                    })
                    .collect(),
            )
        };
        let got = search(Some(&summed));
        let seqs = |hits: &[TextHit]| hits.iter().map(|h| h.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&got), seqs(&want));
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.score - w.score).abs() < 1e-4 * w.score,
                "{g:?} against {w:?}"
            );
        }
        let local = search(None);
        assert!(
            local
                .iter()
                .zip(&want)
                .any(|(l, w)| (l.score - w.score).abs() > 1e-2 * w.score),
            "shard-local statistics should differ"
        );
    }

    #[test]
    fn filters_apply_to_fresh_chunks() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "T", &["pear"], &terms(json!({"k": "v"})))
            .unwrap();
        index
            .upsert("b", 1, "T", &["pear"], &terms(json!({"k": "w"})))
            .unwrap();
        let hits = index
            .search("pear", &filter(json!({"k": "w"})), 10)
            .unwrap();
        assert_eq!(ids(&hits), ["b"]);
        let denied = Filter::default().and("k", vec![]);
        assert!(index.search("pear", &denied, 10).unwrap().is_empty());
    }

    #[test]
    fn a_commit_through_a_change_keeps_later_ones_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text");
        {
            let index = TextIndex::open_or_create(&dir, TITLE_BOOST).unwrap();
            index
                .upsert("a", 1, "One", &["shared words"], &no_terms())
                .unwrap();
            let mark = index.last_op();
            index
                .upsert("b", 2, "Two", &["shared words"], &no_terms())
                .unwrap();
            index.delete("a").unwrap();
            index.commit_through(mark, Some("first")).unwrap();
            // "a" was committed, then deleted after the mark: hidden all the same.
            assert_eq!(
                ids(&index.search("shared", &Filter::default(), 10).unwrap()),
                ["b"]
            );
            assert_eq!(index.uncommitted(), 2);
        }
        // What a crash leaves: the commit through the mark only.
        let index = TextIndex::open_or_create(&dir, TITLE_BOOST).unwrap();
        assert_eq!(index.commit_payload().unwrap().as_deref(), Some("first"));
        assert_eq!(
            ids(&index.search("shared", &Filter::default(), 10).unwrap()),
            ["a"]
        );
    }

    #[test]
    fn filters_apply_inside_the_query() {
        let index = TextIndex::in_ram().unwrap();
        // 40 strong matches in category "noise" would fill any unfiltered top-k.
        for i in 0..40 {
            let doc_terms = terms(json!({"category": "noise", "tenant": "t1"}));
            index
                .upsert(
                    &format!("noise{i}"),
                    1,
                    "apple apple",
                    &["apple apple apple"],
                    &doc_terms,
                )
                .unwrap();
        }
        let weak = [
            ("y1", json!({"category": "y", "tenant": "t1"})),
            ("y2", json!({"category": "y", "tenant": "t2"})),
            ("y3", json!({"category": ["y", "extra"], "tenant": "t1"})),
            ("z1", json!({"category": "z", "tenant": "t1"})),
            ("z2", json!({"category": "z", "tenant": "t1"})),
        ];
        for (id, metadata) in &weak {
            index
                .upsert(
                    id,
                    1,
                    "Fruit",
                    &["one apple among many other words here"],
                    &terms(metadata.clone()),
                )
                .unwrap();
        }
        index.commit().unwrap();

        let unfiltered = index.search("apple", &Filter::default(), 3).unwrap();
        assert!(unfiltered.iter().all(|h| {
            h.doc_id
                .as_deref()
                .is_some_and(|id| id.starts_with("noise"))
        }));

        let mut got = ids(&index
            .search("apple", &filter(json!({"category": "y"})), 3)
            .unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        got.sort();
        assert_eq!(got, ["y1", "y2", "y3"]);

        let hits = index
            .search("apple", &filter(json!({"category": ["y", "z"]})), 3)
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert!(hits.iter().all(|h| {
            !h.doc_id
                .as_deref()
                .is_some_and(|id| id.starts_with("noise"))
        }));

        let two_clauses = filter(json!({"category": ["y", "z"]})).and("tenant", vec!["t2".into()]);
        assert_eq!(
            ids(&index.search("apple", &two_clauses, 3).unwrap()),
            ["y2"]
        );

        let denied = Filter::default().and("tenant", vec![]);
        assert!(index.search("apple", &denied, 3).unwrap().is_empty());
        assert!(
            index
                .search("apple", &filter(json!({"category": "nope"})), 3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn filter_does_not_change_scores() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "T", &["pear pie"], &terms(json!({"k": "v"})))
            .unwrap();
        index.commit().unwrap();
        let plain = index.search("pear", &Filter::default(), 1).unwrap();
        let filtered = index.search("pear", &filter(json!({"k": "v"})), 1).unwrap();
        assert_eq!(plain[0].score, filtered[0].score);
    }

    #[test]
    fn nasty_queries_never_error() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "Foo", &["foo bar baz"], &no_terms())
            .unwrap();
        index.commit().unwrap();
        for query in [
            "foo:bar",
            "\"unterminated",
            "AND(",
            "title:",
            "((((",
            "*",
            "-",
            "+",
            "\\",
            "[1 TO",
            "a AND OR NOT b",
            "field:\"x",
            "~2",
            "^3",
            "",
            "   ",
            "!!!",
            "😀",
            "doc_id:a",
        ] {
            assert!(
                index.search(query, &Filter::default(), 5).is_ok(),
                "query {query:?} errored"
            );
        }
        assert_eq!(
            ids(&index.search("foo:bar", &Filter::default(), 5).unwrap()),
            ["a"]
        );
        assert!(index.search("", &Filter::default(), 5).unwrap().is_empty());
        assert!(
            index
                .search("!!! ---", &Filter::default(), 5)
                .unwrap()
                .is_empty()
        );
        assert!(
            index
                .search("foo", &Filter::default(), 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn analysis_gives_distinct_stemmed_terms_in_order() {
        let index = TextIndex::in_ram().unwrap();
        assert_eq!(
            index.analyze("Running runs; the RUN, orders order"),
            ["run", "the", "order"]
        );
        // Many distinct words: every one kept exactly once.
        let query: String = (0..20_000).map(|i| format!("w{i} w{i} ")).collect();
        let terms = index.analyze(&query);
        assert_eq!(terms.len(), 20_000);
        assert_eq!(terms.first().map(String::as_str), Some("w0"));
        assert_eq!(terms.last().map(String::as_str), Some("w19999"));
    }

    #[test]
    fn snippet_highlights_matches() {
        let index = TextIndex::in_ram().unwrap();
        let text = "Kafka streams carry events. The consumer was running late, so the \
                    running total lagged behind the stream of orders.";
        let snippet = index.snippet("run orders", text);
        assert!(snippet.contains("**running**"), "{snippet}");
        assert!(snippet.contains("**orders**"), "{snippet}");
        assert!(!snippet.contains("<b>"), "{snippet}");

        // No match: the start of the text, cut on a char boundary.
        let long = "é".repeat(300);
        let fallback = index.snippet("absent", &long);
        assert!(fallback.len() <= SNIPPET_CHARS && fallback.len() >= SNIPPET_CHARS - 1);
        assert!(long.starts_with(&fallback));
        assert_eq!(index.snippet("absent", "short text"), "short text");
    }

    #[test]
    fn on_disk_index_keeps_commits_and_payload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text");
        {
            let index = TextIndex::open_or_create(&dir, TITLE_BOOST).unwrap();
            index
                .upsert_stored(
                    "a",
                    7,
                    "Disk",
                    &["persisted words", "more"],
                    &no_terms(),
                    Some(b"A"),
                )
                .unwrap();
            index
                .upsert_stored("b", 8, "Gone", &["soon deleted"], &no_terms(), Some(b"B"))
                .unwrap();
            index
                .upsert("c", 9, "Plain", &["no stored form"], &no_terms())
                .unwrap();
            index
                .commit_through(index.last_op(), Some(r#"{"orders/0":41}"#))
                .unwrap();
            index.delete("b").unwrap();
            index
                .commit_through(index.last_op(), Some(r#"{"orders/0":42}"#))
                .unwrap();
            // Not committed: gone after a crash.
            index
                .upsert_stored(
                    "d",
                    10,
                    "Lost",
                    &["never committed"],
                    &no_terms(),
                    Some(b"D"),
                )
                .unwrap();
        }
        let index = TextIndex::open_or_create(&dir, TITLE_BOOST).unwrap();
        assert_eq!(
            index.commit_payload().unwrap().as_deref(),
            Some(r#"{"orders/0":42}"#)
        );
        let hits = index.search("persist", &Filter::default(), 5).unwrap();
        assert_eq!((hits[0].doc_id.as_deref(), hits[0].seq), (Some("a"), 7));
        assert_eq!(index.stored_docs().unwrap(), vec![b"A".to_vec()]);
        index.clear("{}").unwrap();
        assert_eq!(index.num_chunks(), 0);
        assert_eq!(index.commit_payload().unwrap().as_deref(), Some("{}"));
    }
}
