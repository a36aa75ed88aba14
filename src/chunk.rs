//! Splits long texts into overlapping chunks so that each is indexed (and embedded) on its
//! own and a passage deep inside a long document can still rank.
//!
//! Chunks are measured in whitespace-separated words, a close stand-in for model tokens that
//! needs no tokenizer; chunks are byte ranges of the original text so nothing is copied.

use std::ops::Range;

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

    #[test]
    fn multibyte_text_splits_on_char_boundaries() {
        let t = "été café naïve über straße";
        let spans = chunk_spans(t, 2, 0);
        assert_eq!(texts(t, &spans), vec!["été café", "naïve über", "straße"]);
    }
}
