//! The fresh tier of the BM25 index: every document written since the last tantivy commit,
//! searchable from memory at once.
//!
//! A tantivy commit (segment files, fsyncs, `meta.json`, reader reload) costs tens of
//! milliseconds, so commits happen at the checkpoint interval, off the writer's path. Until a
//! document's commit, its newest version lives here: analysed with the index's own analyzer
//! and scored with tantivy's BM25 formula over the statistics of both tiers together, so a
//! fresh chunk and a committed chunk with the same text score the same. Every id held here
//! (deletions included) hides that id's committed chunks, so an update or delete is visible
//! at once too.
//!
//! A linear scan is fine for what this holds: the documents of one checkpoint interval (a few
//! thousand at the rates the machine sustains), each a sorted term list searched by bisection.

use std::collections::{BTreeMap, HashMap};

use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::{Bm25StatisticsProvider, Bm25Weight};
use tantivy::schema::Field;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use super::filter::{Filter, FilterTerms};

/// The two scored fields, as indexes into per-field arrays.
const TITLE: usize = 0;
const BODY: usize = 1;

/// One field's analysed text: `(term, frequency)` sorted by term, and its length code.
#[derive(Debug, Default)]
struct FieldTerms {
    terms: Vec<(String, u32)>,
    /// tantivy's one-byte code of the number of tokens (what BM25 normalises length with).
    norm_id: u8,
}

impl FieldTerms {
    fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> FieldTerms {
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut tokens = 0u32;
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            *counts.entry(stream.token().text.clone()).or_default() += 1;
            tokens += 1;
        }
        let mut terms: Vec<(String, u32)> = counts.into_iter().collect();
        terms.sort_unstable();
        FieldTerms {
            terms,
            norm_id: FieldNormReader::fieldnorm_to_id(tokens),
        }
    }

    fn tokens(&self) -> u64 {
        u64::from(FieldNormReader::id_to_fieldnorm(self.norm_id))
    }

    fn freq(&self, term: &str) -> Option<u32> {
        self.terms
            .binary_search_by(|(t, _)| t.as_str().cmp(term))
            .ok()
            .map(|i| self.terms[i].1)
    }
}

/// A document version held in the fresh tier.
#[derive(Debug)]
pub(super) struct FreshVersion {
    seq: u64,
    filter_terms: FilterTerms,
    title: FieldTerms,
    /// One per chunk, in chunk order.
    chunks: Vec<FieldTerms>,
}

/// The newest uncommitted change of one document.
#[derive(Debug)]
struct FreshDoc {
    /// The change's number in the index's write order (see `TextIndex`).
    op: u64,
    /// `None`: deleted.
    version: Option<FreshVersion>,
}

/// A chunk hit from the fresh tier.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FreshHit {
    pub doc_id: String,
    pub chunk_no: u32,
    pub seq: u64,
    pub score: f32,
}

/// Documents changed since the last commit, with the statistics they add to the index's.
#[derive(Debug, Default)]
pub(super) struct FreshTier {
    docs: HashMap<String, FreshDoc>,
    /// Chunks (tantivy documents) per term, per field.
    doc_freq: [HashMap<String, u64>; 2],
    /// Tokens per field over all chunks held (as tantivy counts them: length codes).
    tokens: [u64; 2],
    chunks: u64,
}

impl FreshTier {
    /// Analyses a document version (on the caller's thread, outside any lock).
    pub(super) fn analyze(
        analyzer: &mut TextAnalyzer,
        seq: u64,
        title: &str,
        chunks: &[&str],
        filter_terms: &FilterTerms,
    ) -> FreshVersion {
        FreshVersion {
            seq,
            filter_terms: filter_terms.clone(),
            title: FieldTerms::analyze(analyzer, title),
            chunks: chunks
                .iter()
                .map(|body| FieldTerms::analyze(analyzer, body))
                .collect(),
        }
    }

    /// Holds change number `op` of `doc_id`: a new version, or `None` for a delete. It
    /// replaces any earlier change of that id.
    pub(super) fn put(&mut self, op: u64, doc_id: &str, version: Option<FreshVersion>) {
        if let Some(v) = &version {
            self.count(v, true);
        }
        let old = self
            .docs
            .insert(doc_id.to_owned(), FreshDoc { op, version });
        if let Some(FreshDoc {
            version: Some(old), ..
        }) = old
        {
            self.count(&old, false);
        }
    }

    /// Drops `doc_id` if its newest change is number `op` (it is committed now); a newer
    /// change stays.
    pub(super) fn retire(&mut self, doc_id: &str, op: u64) {
        if self.docs.get(doc_id).is_some_and(|d| d.op == op)
            && let Some(FreshDoc {
                version: Some(old), ..
            }) = self.docs.remove(doc_id)
        {
            self.count(&old, false);
        }
    }

    /// Forgets everything (the index was cleared).
    pub(super) fn clear(&mut self) {
        *self = FreshTier::default();
    }

    /// Adds (or removes) a version's chunks to the statistics.
    fn count(&mut self, v: &FreshVersion, add: bool) {
        let chunks = v.chunks.len() as u64;
        let mut change = |field: usize, terms: &FieldTerms, times: u64| {
            for (term, _) in &terms.terms {
                let n = self.doc_freq[field].entry(term.clone()).or_default();
                if add {
                    *n += times;
                } else {
                    *n = n.saturating_sub(times);
                    if *n == 0 {
                        self.doc_freq[field].remove(term);
                    }
                }
            }
            let tokens = terms.tokens() * times;
            if add {
                self.tokens[field] += tokens;
            } else {
                self.tokens[field] = self.tokens[field].saturating_sub(tokens);
            }
        };
        // The title is indexed with every chunk.
        change(TITLE, &v.title, chunks);
        for chunk in &v.chunks {
            change(BODY, chunk, 1);
        }
        if add {
            self.chunks += chunks;
        } else {
            self.chunks = self.chunks.saturating_sub(chunks);
        }
    }

    /// Ids whose committed chunks must not be shown: every id held here.
    pub(super) fn ids(&self) -> impl Iterator<Item = &str> {
        self.docs.keys().map(String::as_str)
    }

    /// True when nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Live chunks held.
    pub(super) fn num_chunks(&self) -> u64 {
        self.chunks
    }

    /// The statistics of both tiers for scoring `words` in the two fields.
    pub(super) fn stats(
        &self,
        searcher: Searcher,
        fields: [Field; 2],
        words: &[String],
    ) -> CombinedStats {
        let mut doc_freq = HashMap::new();
        for (i, field) in fields.iter().enumerate() {
            for word in words {
                if let Some(&n) = self.doc_freq[i].get(word) {
                    doc_freq.insert(Term::from_field_text(*field, word), n);
                }
            }
        }
        CombinedStats {
            searcher,
            fields,
            fresh_tokens: self.tokens,
            fresh_chunks: self.chunks,
            fresh_doc_freq: doc_freq,
        }
    }

    /// The best `limit` fresh chunks for `words` that pass `filter` (its clauses on the
    /// filter terms, and `accept` on the version's sequence number), scored as tantivy scores
    /// the query `TextIndex::search` builds (per word: boosted title BM25 + body BM25).
    pub(super) fn search(
        &self,
        words: &[String],
        filter: &Filter,
        accept: Option<&(dyn Fn(u64) -> bool + Send + Sync)>,
        limit: usize,
        (stats, fields): (&dyn Bm25StatisticsProvider, [Field; 2]),
        title_boost: f32,
    ) -> Result<Vec<FreshHit>, tantivy::TantivyError> {
        if self.chunks == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let total_docs = stats.total_num_docs()?;
        let weights: Vec<[Bm25Weight; 2]> = words
            .iter()
            .map(|word| weights(stats, fields, word, total_docs))
            .collect::<Result<_, _>>()?;
        let mut hits = Vec::new();
        for (doc_id, doc) in &self.docs {
            let Some(v) = &doc.version else { continue };
            if !filter.matches(&v.filter_terms) || accept.is_some_and(|accept| !accept(v.seq)) {
                continue;
            }
            let title: f32 = words
                .iter()
                .zip(&weights)
                .filter_map(|(word, [w, _])| {
                    v.title
                        .freq(word)
                        .map(|tf| title_boost * w.score(v.title.norm_id, tf))
                })
                .sum();
            let title_matches = words.iter().any(|w| v.title.freq(w).is_some());
            for (chunk_no, chunk) in v.chunks.iter().enumerate() {
                let mut matched = title_matches;
                let mut score = title;
                for (word, [_, w]) in words.iter().zip(&weights) {
                    if let Some(tf) = chunk.freq(word) {
                        matched = true;
                        score += w.score(chunk.norm_id, tf);
                    }
                }
                if matched {
                    hits.push(FreshHit {
                        doc_id: doc_id.clone(),
                        chunk_no: chunk_no as u32,
                        seq: v.seq,
                        score,
                    });
                }
            }
        }
        // Ties in id order, so equal scores come out alike whatever the map's order.
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| (&a.doc_id, a.chunk_no).cmp(&(&b.doc_id, b.chunk_no)))
        });
        hits.truncate(limit);
        Ok(hits)
    }
}

/// BM25 statistics of the committed index plus the fresh tier, so both tiers score alike.
pub(super) struct CombinedStats {
    searcher: Searcher,
    /// Title and body.
    fields: [Field; 2],
    fresh_tokens: [u64; 2],
    fresh_chunks: u64,
    /// Fresh chunks per query term (terms of the query's words only).
    fresh_doc_freq: HashMap<Term, u64>,
}

/// tantivy's BM25 weights of `word` in the title and the body under `stats`.
fn weights(
    stats: &dyn Bm25StatisticsProvider,
    fields: [Field; 2],
    word: &str,
    total_docs: u64,
) -> tantivy::Result<[Bm25Weight; 2]> {
    let weight = |field: Field| -> tantivy::Result<Bm25Weight> {
        let term = Term::from_field_text(field, word);
        let average = stats.total_num_tokens(field)? as f32 / total_docs as f32;
        Ok(Bm25Weight::for_one_term_without_explain(
            stats.doc_freq(&term)?,
            total_docs,
            average,
        ))
    };
    Ok([weight(fields[TITLE])?, weight(fields[BODY])?])
}

impl CombinedStats {
    /// These statistics for `words`, in a form that can be summed over shards.
    pub(super) fn term_stats(&self, words: &[String]) -> tantivy::Result<TermStats> {
        let mut doc_freq = BTreeMap::new();
        for word in words {
            let mut freq = [0; 2];
            for (slot, field) in freq.iter_mut().zip(self.fields) {
                *slot = self.doc_freq(&Term::from_field_text(field, word))?;
            }
            doc_freq.insert(word.clone(), freq);
        }
        Ok(TermStats {
            chunks: self.total_num_docs()?,
            tokens: [
                self.total_num_tokens(self.fields[TITLE])?,
                self.total_num_tokens(self.fields[BODY])?,
            ],
            doc_freq,
        })
    }
}

/// BM25 statistics of some query words over an index (or the sum over several indexes:
/// the shards of a cluster), so that every shard scores with the same numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TermStats {
    /// Chunks (tantivy documents).
    pub chunks: u64,
    /// Tokens in the title and the body fields over all chunks.
    pub tokens: [u64; 2],
    /// Chunks holding each word, in the title and in the body.
    pub doc_freq: BTreeMap<String, [u64; 2]>,
}

impl TermStats {
    /// Adds another index's statistics to these.
    pub fn add(&mut self, other: &TermStats) {
        self.chunks += other.chunks;
        for (sum, n) in self.tokens.iter_mut().zip(other.tokens) {
            *sum += n;
        }
        for (word, freq) in &other.doc_freq {
            let sum = self.doc_freq.entry(word.clone()).or_default();
            for (s, n) in sum.iter_mut().zip(freq) {
                *s += n;
            }
        }
    }
}

/// [`TermStats`] as tantivy asks for them, for the title and body fields.
pub(super) struct FixedStats<'a> {
    pub(super) stats: &'a TermStats,
    pub(super) fields: [Field; 2],
}

impl Bm25StatisticsProvider for FixedStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        Ok(match self.fields.iter().position(|f| *f == field) {
            Some(i) => self.stats.tokens[i],
            None => 0,
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.stats.chunks)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let Some(i) = self.fields.iter().position(|f| *f == term.field()) else {
            return Ok(0);
        };
        Ok(term
            .value()
            .as_str()
            .and_then(|word| self.stats.doc_freq.get(word))
            .map_or(0, |freq| freq[i]))
    }
}

impl Bm25StatisticsProvider for CombinedStats {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let fresh = match self.fields.iter().position(|f| *f == field) {
            Some(i) => self.fresh_tokens[i],
            None => 0,
        };
        Ok(Bm25StatisticsProvider::total_num_tokens(&self.searcher, field)? + fresh)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(Bm25StatisticsProvider::total_num_docs(&self.searcher)? + self.fresh_chunks)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let fresh = self.fresh_doc_freq.get(term).copied().unwrap_or(0);
        Ok(self.searcher.doc_freq(term)? + fresh)
    }
}
