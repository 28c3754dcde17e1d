#!/usr/bin/env python3
"""The PyTorch side of `make bench`: sentence-transformers encoding the same texts as
`repro bench` (the first N documents of a BEIR corpus, title + " " + text), same max_len,
batch size and thread count, mean pooling, normalised embeddings.

With --bf16, the encode runs under `torch.autocast("cpu", dtype=torch.bfloat16)` (PyTorch's
own bf16 path: matrix products in bf16 through oneDNN, AMX or AVX512-BF16 where the CPU has
them).

Prints one JSON object: documents/s per timed run, their median, min and max.

    python scripts/bench_pytorch.py --model models/all-MiniLM-L6-v2 \
        --corpus ../shared/data/scifact/corpus.jsonl --documents 256 --max-len 256 --batch 32
"""
import argparse
import json
import os
import statistics
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = []
    with open(args.corpus, encoding="utf-8") as corpus:
        for line in corpus:
            if len(texts) == args.documents:
                break
            document = json.loads(line)
            texts.append(((document.get("title") or "") + " " + document["text"]).strip())

    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_len

    def encode():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=args.bf16):
            model.encode(texts, batch_size=args.batch, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)

    encode()  # warm-up
    rates = []
    for _ in range(args.runs):
        started = time.perf_counter()
        encode()
        rates.append(len(texts) / (time.perf_counter() - started))
    print(json.dumps({
        "documents": len(texts), "max_len": args.max_len, "batch": args.batch,
        "threads": args.threads, "torch": torch.__version__,
        "precision": "bf16 autocast" if args.bf16 else "f32",
        "documents_per_second": {"median": statistics.median(rates), "min": min(rates),
                                 "max": max(rates)},
        "runs": rates,
    }))


if __name__ == "__main__":
    main()
