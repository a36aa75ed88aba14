"""Embedding throughput of the Python reference: sentence-transformers (PyTorch, CPU) with
the same model files and the same texts as examples/embed_throughput.rs.

    .venv-ref/bin/python bench/st_throughput.py MODEL_DIR TEXTS.jsonl [BATCH] [LIMIT]

Prints one JSON line: texts, tokens, seconds, texts_per_s, tokens_per_s.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def load_texts(path: str, limit: int) -> list[str]:
    texts = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            v = json.loads(line)
            texts.append(v if isinstance(v, str) else f"{v.get('title', '')}\n\n{v.get('text', '')}")
    return texts


def main() -> None:
    model_dir, path = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 10**9
    texts = load_texts(path, limit)
    model = SentenceTransformer(model_dir, device="cpu")
    tokens = sum(
        min(len(ids), model.max_seq_length)
        for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"]
    )
    model.encode(texts[:8], batch_size=batch)  # warm-up
    started = time.perf_counter()
    # One call, as a user would make it: sentence-transformers sorts by length itself.
    model.encode(texts, batch_size=batch, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "texts": len(texts),
        "tokens": tokens,
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
        "batch": batch,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
