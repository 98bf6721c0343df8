"""Dense encoding throughput on one GPU without Ray: the index build's encoder
(``SentenceTransformerEncoder``; all-MiniLM-L6-v2 by default) over the bundled dev paragraphs,
repeated to ``--passages``, at several batch sizes, in float32 (the product's setting) and
float16. Prints one JSON line per (dtype, batch size).

    python bench/gpu_encode.py [--model minilm|DIR] [--passages 200000] [--batch-sizes 64,256,1024]
                               [--device cuda|cpu]

Needs torch, sentence-transformers, bm25s, pydantic and pyyaml (not Ray, not FAISS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", help="'minilm' or a sentence-transformers directory")
    ap.add_argument("--passages", type=int, default=200_000)
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--device", default="cuda", help="cuda[:N], or cpu (slow: ~15 passages/s per core)")
    args = ap.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu_encode.py: no CUDA GPU (torch.cuda.is_available() is False); pass --device cpu "
              "with a small --passages to run it on CPU, or use steper-ray bench index", file=sys.stderr)
        sys.exit(2)

    from steper_ray.data import extract_corpus, read_dataset
    from steper_ray.retrieval.dense import SentenceTransformerEncoder
    from steper_ray.retrieval.tokenize import corpus_texts

    passages = extract_corpus(
        r for ds in ("hotpotqa", "musique", "2wikimultihopqa")
        for r in read_dataset(f"sample:{ds}/dev.jsonl").records
    )
    real = corpus_texts([p.title for p in passages], [p.text for p in passages])
    texts = (real * (args.passages // len(real) + 1))[: args.passages]
    distinct = len(set(texts))
    enc = SentenceTransformerEncoder(args.model, args.device)
    device = str(enc.model.device)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    for dtype in ("float32", "float16"):
        if dtype == "float16":
            if not device.startswith("cuda"):
                break
            enc.model.half()
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            enc.encode(texts[: 4 * bs], bs)  # warm-up: kernels, allocator
            t0 = time.perf_counter()
            emb = enc.encode(texts, bs)  # returns numpy: the GPU work is done when it returns
            dt = time.perf_counter() - t0
            print(json.dumps({
                "benchmark": "gpu_encode", "device": name, "model": args.model, "dtype": dtype,
                "batch_size": bs, "passages": len(texts), "distinct_passages": distinct,
                "dim": int(emb.shape[1]), "seconds": round(dt, 2),
                "passages_per_s": round(len(texts) / dt, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
