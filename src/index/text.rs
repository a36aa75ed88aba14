//! BM25 full-text search over document chunks (tantivy).
//!
//! Each chunk of a document is one tantivy document carrying the document's title, the chunk's
//! body and the document's filter tokens. Upserts replace all chunks of a document (delete by
//! `doc_id` term, then add), so a shrinking document leaves no stale chunk behind.
//!
//! One long-lived `IndexWriter` serves the single apply task; searchers come from an
//! `IndexReader` reloaded right after each commit, so what is visible is exactly what has been
//! committed. Query text is user input and is never parsed as query syntax: it is tokenised
//! with the same analyzer as the documents and turned into term queries, so punctuation such
//! as `foo:bar`, quotes or `AND(` can never make a search fail.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use parking_lot::Mutex;
use tantivy::collector::{FilterCollector, TopDocs};
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
    /// The document the chunk belongs to.
    pub doc_id: String,
    /// Position of the chunk within its document, from 0.
    pub chunk_no: u32,
    /// The document version this chunk was indexed from.
    pub seq: u64,
    /// BM25 score (title matches boosted); only comparable within one search.
    pub score: f32,
}

/// BM25 index of chunks. `Send + Sync`: writes go through one writer behind a mutex, searches
/// only use the reader.
pub struct TextIndex {
    index: Index,
    fields: Fields,
    /// The one long-lived writer. Only the apply task takes this lock.
    writer: Mutex<IndexWriter>,
    /// Reloaded manually right after each commit, so visibility is deterministic.
    reader: IndexReader,
    /// The stemming analyzer, for turning query text into the terms the index holds.
    analyzer: TextAnalyzer,
    title_boost: f32,
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
            analyzer,
            title_boost,
        })
    }

    /// Replace every chunk of `doc_id` with these. Not visible until [`commit`](Self::commit).
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
        let writer = self.writer.lock();
        writer.delete_term(Term::from_field_text(f.doc_id, doc_id));
        let chunks: &[&str] = if chunks.is_empty() { &[""] } else { chunks };
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
            writer.add_document(doc)?;
        }
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
        self.writer.lock().delete_all_documents()?;
        self.commit_with_payload(payload)
    }

    /// Remove every chunk of `doc_id`. Not visible until [`commit`](Self::commit).
    pub fn delete(&self, doc_id: &str) -> Result<(), IndexError> {
        self.writer
            .lock()
            .delete_term(Term::from_field_text(self.fields.doc_id, doc_id));
        Ok(())
    }

    /// Commit and reload the reader, so searches see everything upserted so far.
    ///
    /// On failure (e.g. the disk is full) every operation since the last successful commit
    /// is discarded and the writer starts afresh: tantivy 0.27 loses the failed segment, and
    /// a writer whose commit failed has no indexing thread left, so without this later
    /// commits would "succeed" without the documents (and adds would block once its queue is
    /// full). The caller must write those documents again.
    pub fn commit(&self) -> Result<(), IndexError> {
        self.commit_inner(None)
    }

    /// Like [`commit`](Self::commit), storing `payload` (e.g. the Kafka offsets these
    /// segments cover) atomically with the commit.
    pub fn commit_with_payload(&self, payload: &str) -> Result<(), IndexError> {
        self.commit_inner(Some(payload))
    }

    fn commit_inner(&self, payload: Option<&str>) -> Result<(), IndexError> {
        let mut writer = self.writer.lock();
        let committed = writer.prepare_commit().and_then(|mut prepared| {
            if let Some(payload) = payload {
                prepared.set_payload(payload);
            }
            prepared.commit()
        });
        if let Err(e) = committed {
            if let Err(rollback) = writer.rollback() {
                tracing::error!("BM25 writer cannot be reset after a failed commit: {rollback}");
            }
            return Err(e.into());
        }
        drop(writer);
        self.reader.reload()?;
        Ok(())
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
        let query = BooleanQuery::new(clauses);

        let searcher = self.reader.searcher();
        let top_docs = TopDocs::with_limit(limit).order_by_score();
        let top = match accept {
            None => searcher.search(&query, &top_docs)?,
            Some(accept) => {
                let by_seq = move |seq: u64| accept(seq);
                searcher.search(
                    &query,
                    &FilterCollector::new("seq".to_string(), by_seq, top_docs),
                )?
            }
        };
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address)?;
                let u64_of = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
                Ok(TextHit {
                    doc_id: doc
                        .get_first(f.doc_id)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    chunk_no: u64_of(f.chunk_no) as u32,
                    seq: u64_of(f.seq),
                    score,
                })
            })
            .collect()
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

    /// Committed, non-deleted chunks.
    pub fn num_chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
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
        hits.iter().map(|h| h.doc_id.as_str()).collect()
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
    fn changes_invisible_until_commit() {
        let index = TextIndex::in_ram().unwrap();
        index
            .upsert("a", 1, "Hello", &["world"], &no_terms())
            .unwrap();
        assert!(
            index
                .search("world", &Filter::default(), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(index.num_chunks(), 0);
        index.commit().unwrap();
        assert_eq!(
            index.search("world", &Filter::default(), 10).unwrap().len(),
            1
        );
        index.delete("a").unwrap();
        assert_eq!(
            index.search("world", &Filter::default(), 10).unwrap().len(),
            1
        );
        index.commit().unwrap();
        assert!(
            index
                .search("world", &Filter::default(), 10)
                .unwrap()
                .is_empty()
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
        assert!(unfiltered.iter().all(|h| h.doc_id.starts_with("noise")));

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
        assert!(hits.iter().all(|h| !h.doc_id.starts_with("noise")));

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
            index.commit_with_payload(r#"{"orders/0":41}"#).unwrap();
            index.delete("b").unwrap();
            index.commit_with_payload(r#"{"orders/0":42}"#).unwrap();
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
        assert_eq!((hits[0].doc_id.as_str(), hits[0].seq), ("a", 7));
        assert_eq!(index.stored_docs().unwrap(), vec![b"A".to_vec()]);
        index.clear("{}").unwrap();
        assert_eq!(index.num_chunks(), 0);
        assert_eq!(index.commit_payload().unwrap().as_deref(), Some("{}"));
    }
}
