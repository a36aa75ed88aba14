"""Writes tests/fixtures/minilm_reference.json: vectors from the real Python
sentence-transformers for a fixed set of sample texts, which the Rust test
`embed::local::tests::matches_sentence_transformers` compares against.

Run once after changing the texts (needs sentence-transformers, e.g. in .venv-ref):

    .venv-ref/bin/python scripts/reference_vectors.py [MODEL_DIR]

CI only reads the committed fixture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "minilm_reference.json"

LONG_EN = (
    "Kafka consumers that fall behind the head of a partition accumulate lag, and a context "
    "server fed by that partition answers from an older view of the world. "
) * 8
LONG_SCI = (
    "Alterations of the architecture of cerebral white matter in the developing human brain can "
    "affect cortical development and result in functional disabilities. A line scan "
    "diffusion-weighted magnetic resonance imaging (MRI) sequence with diffusion tensor analysis "
    "was applied to measure the apparent diffusion coefficient, to calculate relative "
    "anisotropy, and to delineate three-dimensional fiber architecture in cerebral white matter "
    "in preterm (n = 17) and full-term infants (n = 7). To assess effects of prematurity on "
    "cerebral white matter development, early gestation preterm infants (n = 10) were studied "
    "a second time at term. In the central white matter the mean apparent diffusion coefficient "
    "at 28 wk was high, 1.8 microm2/ms, and decreased toward term to 1.2 microm2/ms."
)

TEXTS = [
    "",
    " ",
    "?",
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset consumer group offsets in Kafka?",
    "consumer lag keeps growing on the search cluster",
    "Debezium streams row-level changes from Postgres into Kafka topics.",
    "0-dimensional biomaterials lack inductive properties.",
    "1 in 5 million in UK have abnormal PrP positivity.",
    "Café crème brûlée à la carte — naïve façade, jalapeño piñata.",
    "Straße, Übergröße, Ærøskøbing, Łódź, İstanbul",
    "東京は日本の首都です。",
    "机器学习模型在中文文本上的表现",
    "Съешь же ещё этих мягких французских булок",
    "مرحبا بالعالم",
    "🚀 launch the rocket 🚀🔥 now!!! 😀",
    "fn main() { println!(\"{}\", 1 + 2); } // rust",
    "SELECT id, title FROM articles WHERE updated_at > now() - interval '1 day';",
    "https://example.com/path?query=1&x=y#frag",
    "e = mc^2; ∑_{i=1}^{n} x_i ≥ 0; α β γ δ",
    "UPPER CASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "tabs\tand\nnewlines\r\n  and   many    spaces",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "The patient was given 500 mg of amoxicillin twice daily for 10 days.",
    LONG_SCI,
    LONG_EN,
    " ".join(f"token{i}" for i in range(300)),
    "word " * 600,
]


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "all-MiniLM-L6-v2"
    model = SentenceTransformer(str(model_dir), device="cpu")
    tokenizer = model.tokenizer
    token_counts = [len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in TEXTS]
    # Batches mix short and long texts, so padding and masking are exercised too.
    vectors = model.encode(TEXTS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    out = {
        "about": "sentence-transformers vectors for the Rust equivalence test; "
        "regenerate with scripts/reference_vectors.py",
        "model": "all-MiniLM-L6-v2",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "texts": [
            {"text": t, "tokens": n, "vector": [round(float(x), 7) for x in v]}
            for t, n, v in zip(TEXTS, token_counts, vectors)
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=None) + "\n")
    long = sum(n > 128 for n in token_counts)
    print(f"wrote {OUT} ({len(TEXTS)} texts, {long} over 128 tokens, max {max(token_counts)} tokens)")


if __name__ == "__main__":
    main()
