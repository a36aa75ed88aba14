//! Splits long texts into overlapping chunks so that each is indexed (and embedded) on its
//! own and a passage deep inside a long document can still rank.
//!
//! With a local embedding model, chunks are measured in the model's own tokens
//! ([`token_chunk_spans`]), so every chunk fits the model's window and none is silently
//! truncated. Otherwise they are measured in whitespace-separated words ([`chunk_spans`]), a
//! close stand-in that needs no tokenizer. Either way, chunks are byte ranges of the original
//! text, so nothing is copied, and they start and end on word boundaries.

use std::ops::Range;
use std::sync::Arc;

use tokenizers::Tokenizer;

/// How a collection measures and splits its texts.
#[derive(Clone)]
pub enum Chunker {
    /// Whitespace-separated words.
    Words {
        /// Words per chunk.
        size: usize,
        /// Words shared by neighbouring chunks.
        overlap: usize,
    },
    /// Model tokens (special tokens not counted).
    Tokens {
        /// The model's tokenizer, without truncation.
        tokenizer: Arc<Tokenizer>,
        /// Tokens per chunk.
        size: usize,
        /// Tokens shared by neighbouring chunks.
        overlap: usize,
    },
}

impl Chunker {
    /// Byte ranges of `text`, one per chunk; an empty text is one empty chunk.
    pub fn spans(&self, text: &str) -> Vec<Range<usize>> {
        match self {
            Chunker::Words { size, overlap } => chunk_spans(text, *size, *overlap),
            Chunker::Tokens {
                tokenizer,
                size,
                overlap,
            } => token_chunk_spans(text, tokenizer, *size, *overlap),
        }
    }

    /// Chunk size and overlap, in the chunker's unit.
    pub fn size(&self) -> (usize, usize) {
        match self {
            Chunker::Words { size, overlap } | Chunker::Tokens { size, overlap, .. } => {
                (*size, *overlap)
            }
        }
    }
}

/// Byte ranges of `text`, each at most `size` tokens of `tokenizer`, neighbours sharing
/// about `overlap` tokens. Chunk borders fall between words (the tokenizer's pre-tokens) so
/// that each chunk, tokenized again on its own, gives the same tokens; only a single word
/// longer than `size` tokens is cut inside. A text of `size` tokens or fewer is one chunk.
/// If the tokenizer fails (it does not on valid UTF-8), falls back to word chunks.
pub fn token_chunk_spans(
    text: &str,
    tokenizer: &Tokenizer,
    size: usize,
    overlap: usize,
) -> Vec<Range<usize>> {
    let size = size.max(1);
    let encoding = match tokenizer.encode(text, false) {
        Ok(e) => e,
        Err(_) => return chunk_spans(text, size, overlap),
    };
    let offsets = encoding.get_offsets();
    let n = offsets.len();
    if n <= size {
        return std::iter::once(0..text.len()).collect();
    }
    let words = encoding.get_word_ids();
    // A border may sit before token i when token i starts a new word.
    let starts_word = |i: usize| i == 0 || i >= n || words[i] != words[i - 1] || words[i].is_none();
    // The last border in (after, at], else `at` itself (a word longer than a chunk).
    let snap = |after: usize, at: usize| {
        (after + 1..=at)
            .rev()
            .find(|&i| starts_word(i))
            .unwrap_or(at)
    };
    let overlap = overlap.min(size - 1);
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        let end = if start + size >= n {
            n
        } else {
            snap(start, start + size)
        };
        chunks.push(offsets[start].0..offsets[end - 1].1);
        if end == n {
            break;
        }
        // Step back by `overlap` tokens, to a word border, but always move forward.
        let back = end.saturating_sub(overlap).max(start + 1);
        let next = snap(start, back);
        start = if next > start { next } else { end };
    }
    chunks
}

/// Byte ranges of `text`, each at most `size` words, neighbours sharing `overlap` words.
/// A text of `size` words or fewer is one chunk; an empty text is one empty chunk.
pub fn chunk_spans(text: &str, size: usize, overlap: usize) -> Vec<Range<usize>> {
    let words: Vec<Range<usize>> = word_spans(text);
    let size = size.max(1);
    if words.len() <= size {
        return std::iter::once(0..text.len()).collect();
    }
    let step = size.saturating_sub(overlap).max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + size).min(words.len());
        chunks.push(words[start].start..words[end - 1].end);
        if end == words.len() {
            break;
        }
        start += step;
    }
    chunks
}

fn word_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, ch) in text.char_indices() {
        match (ch.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(s..text.len());
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, spans: &[Range<usize>]) -> Vec<&'a str> {
        spans.iter().map(|r| &text[r.clone()]).collect()
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunk_spans("a b c", 5, 1), vec![0..5]);
        assert_eq!(chunk_spans("", 5, 1), vec![0..0]);
    }

    #[test]
    fn long_text_overlaps() {
        let t = "one two three four five six seven";
        let spans = chunk_spans(t, 3, 1);
        assert_eq!(
            texts(t, &spans),
            vec!["one two three", "three four five", "five six seven"]
        );
    }

    /// A tiny BERT-style WordPiece tokenizer, in the tokenizer.json format models ship.
    fn wordpiece() -> Tokenizer {
        let words = [
            "[UNK]", "the", "cat", "sat", "on", "mat", "un", "##aff", "##able", "cafe", "naive",
            ".", ",", "x", "##x",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                           "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab},
        });
        Tokenizer::from_bytes(json.to_string()).unwrap()
    }

    fn token_count(tokenizer: &Tokenizer, text: &str) -> usize {
        tokenizer.encode(text, false).unwrap().len()
    }

    #[test]
    fn token_chunks_short_text_is_whole() {
        let t = wordpiece();
        assert_eq!(token_chunk_spans("the cat sat", &t, 3, 1), vec![0..11]);
        assert_eq!(token_chunk_spans("", &t, 3, 1), vec![0..0]);
        assert_eq!(token_chunk_spans("   ", &t, 3, 1), vec![0..3]);
    }

    #[test]
    fn token_chunks_respect_size_overlap_and_word_borders() {
        let t = wordpiece();
        // "unaffable" is one word of three tokens: un ##aff ##able.
        let text = "the cat sat on the mat. the unaffable cat sat on the mat, the cat sat.";
        let spans = token_chunk_spans(text, &t, 6, 2);
        let chunks = texts(text, &spans);
        assert!(chunks.len() > 2, "{chunks:?}");
        let all = t.encode(text, false).unwrap();
        let offsets = all.get_offsets();
        for (span, chunk) in spans.iter().zip(&chunks) {
            // Each chunk fits, and re-tokenised alone gives exactly its tokens.
            let n = token_count(&t, chunk);
            assert!(n <= 6, "{chunk:?} has {n} tokens");
            let inside: Vec<u32> = all
                .get_ids()
                .iter()
                .zip(offsets)
                .filter(|(_, o)| o.0 >= span.start && o.1 <= span.end)
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                t.encode(*chunk, false).unwrap().get_ids(),
                inside.as_slice()
            );
            // Borders are word borders: "unaffable" is never cut.
            assert!(
                !chunk.starts_with("affable") && !chunk.ends_with("unaff"),
                "{chunk:?}"
            );
        }
        // Neighbours overlap, and together they cover every token.
        for pair in spans.windows(2) {
            assert!(pair[1].start < pair[0].end, "no overlap: {pair:?}");
            assert!(pair[1].start > pair[0].start, "no progress: {pair:?}");
        }
        assert_eq!(spans[0].start, 0);
        assert_eq!(spans.last().unwrap().end, text.len());
    }

    #[test]
    fn token_chunks_without_overlap_partition_the_tokens() {
        let t = wordpiece();
        let text = "the cat sat on the mat the cat sat on the mat";
        let spans = token_chunk_spans(text, &t, 4, 0);
        let total: usize = texts(text, &spans).iter().map(|c| token_count(&t, c)).sum();
        assert_eq!(total, 12);
        assert_eq!(
            texts(text, &spans),
            ["the cat sat on", "the mat the cat", "sat on the mat"]
        );
    }

    #[test]
    fn token_chunks_cut_a_word_longer_than_a_chunk() {
        let t = wordpiece();
        // One word of ten tokens (x ##x ##x ...), longer than the chunk size of four.
        let text = format!("the {} cat", "x".repeat(10));
        let spans = token_chunk_spans(&text, &t, 4, 1);
        for chunk in texts(&text, &spans) {
            assert!(token_count(&t, chunk) <= 4, "{chunk:?}");
        }
        assert_eq!(spans.last().unwrap().end, text.len());
    }

    #[test]
    fn token_chunks_map_back_to_the_original_bytes() {
        let t = wordpiece();
        // The normaliser lowercases and strips accents; spans must still be valid slices
        // of the original text.
        let text = "Café NAÏVE café naïve Café naïve";
        let spans = token_chunk_spans(text, &t, 2, 0);
        assert_eq!(
            texts(text, &spans),
            ["Café NAÏVE", "café naïve", "Café naïve"]
        );
    }

    #[test]
    fn multibyte_text_splits_on_char_boundaries() {
        let t = "été café naïve über straße";
        let spans = chunk_spans(t, 2, 0);
        assert_eq!(texts(t, &spans), vec!["été café", "naïve über", "straße"]);
    }
}
