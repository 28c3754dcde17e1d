#!/usr/bin/env python3
"""What bf16 does to retrieval in PyTorch: the reference for issue 19's quality bound.

Encodes a BEIR dataset's test queries and corpus with Hugging Face transformers, once in f32
and once under CPU bf16 autocast (PyTorch's own bf16 inference, the one `make bench` times),
pools every hidden state the four ways repro does (mean, mean_nospecial, cls, max over the
first segment), searches by cosine, and scores nDCG@10 with pytrec_eval (trec_eval's
conventions, as repro's evaluator). Prints, per dataset, how far PyTorch's bf16 moves each
cell's nDCG@10 from its f32, and, given `repro compare EXPERIMENT --json` (an experiment that
sweeps `encode.precision`, e.g. experiments/bf16_quality.toml), the same for repro and how
far the two f32 encoders are apart: the noise any change of arithmetic brings.

    make bf16-gap        # or by hand:
    repro compare bf16_quality --json > target/bf16_quality.json
    .venv-bench/bin/python scripts/torch_precision_gap.py \
        --dataset scifact=$REPRO_MIRROR/scifact --dataset cranfield=data/cranfield \
        --repro target/bf16_quality.json --out target/torch_precision_gap.json
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np
import pytrec_eval
import torch
from transformers import AutoTokenizer, BertModel

POOLINGS = ["mean", "mean_nospecial", "cls", "max"]
INPUTS = ["single", "self_pair"]
PRECISIONS = ["f32", "bf16"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_beir(directory, split):
    """Queries with judgments in `split`, the corpus as `title + " " + text` (as repro)."""
    directory = pathlib.Path(directory)
    qrels = {}
    with open(directory / "qrels" / f"{split}.tsv", encoding="utf-8") as rows:
        for number, row in enumerate(rows):
            fields = row.rstrip("\n").split("\t")
            if number == 0 and not fields[-1].lstrip("-").isdigit():
                continue
            qrels.setdefault(str(fields[0]), {})[str(fields[1])] = int(fields[2])
    queries = [(str(q["_id"]), q["text"]) for q in read_jsonl(directory / "queries.jsonl")
               if str(q["_id"]) in qrels]
    corpus = [(str(d["_id"]), f"{d.get('title') or ''} {d.get('text') or ''}".strip())
              for d in read_jsonl(directory / "corpus.jsonl")]
    return queries, corpus, qrels


def pooled_layers(model, tokenizer, texts, input_format, max_len, batch, bf16):
    """{(layer, pooling): float32 array [len(texts), hidden]}, before normalisation."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    cells = {}
    for start in range(0, len(order), batch):
        chunk = [texts[i] for i in order[start:start + batch]]
        args = (chunk, chunk) if input_format == "self_pair" else (chunk,)
        encoded = tokenizer(*args, truncation="longest_first", max_length=max_len,
                            padding=True, return_tensors="pt",
                            return_special_tokens_mask=True)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=encoded["input_ids"],
                        token_type_ids=encoded["token_type_ids"],
                        attention_mask=encoded["attention_mask"], output_hidden_states=True)
        first_segment = ((encoded["token_type_ids"] == 0)
                         & (encoded["attention_mask"] == 1)).float().unsqueeze(-1)
        content = first_segment * (encoded["special_tokens_mask"] == 0).float().unsqueeze(-1)
        for layer, hidden in enumerate(out.hidden_states):
            hidden = hidden.float()
            pools = {
                "mean": (hidden * first_segment).sum(1) / first_segment.sum(1),
                "mean_nospecial": (hidden * content).sum(1) / content.sum(1).clamp(min=1),
                "cls": hidden[:, 0],
                "max": torch.where(first_segment > 0, hidden,
                                   torch.full_like(hidden, -1e9)).max(1).values,
            }
            for pooling, values in pools.items():
                # A copy: `cls` is a view that would keep the whole batch's states alive.
                cells.setdefault((layer, pooling), []).append(values.numpy().copy())
    inverse = np.argsort(order)
    return {cell: np.concatenate(parts)[inverse] for cell, parts in cells.items()}


def ndcg_at_10(query_vectors, doc_vectors, query_ids, doc_ids, evaluator, top_k=100):
    def normalised(m):
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    scores = normalised(query_vectors) @ normalised(doc_vectors).T
    run = {}
    for row, query_id in enumerate(query_ids):
        top = np.argpartition(-scores[row], top_k)[:top_k]
        run[query_id] = {doc_ids[i]: float(scores[row, i]) for i in top}
    per_query = evaluator.evaluate(run)
    return float(np.mean([m["ndcg_cut_10"] for m in per_query.values()]))


def measure(model, tokenizer, name, directory, args):
    queries, corpus, qrels = load_beir(directory, args.split)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    query_ids, query_texts = zip(*queries)
    doc_ids, doc_texts = zip(*corpus)
    cells = {}
    for input_format in INPUTS:
        for precision in PRECISIONS:
            started = time.time()
            encode = lambda texts: pooled_layers(model, tokenizer, list(texts), input_format,
                                                 args.max_len, args.batch, precision == "bf16")
            query_cells, doc_cells = encode(query_texts), encode(doc_texts)
            for (layer, pooling), doc_vectors in doc_cells.items():
                score = ndcg_at_10(query_cells[(layer, pooling)], doc_vectors, query_ids,
                                   doc_ids, evaluator)
                cells.setdefault((input_format, layer, pooling), {})[precision] = score
            print(f"{name} {input_format} {precision}: {len(doc_ids)} documents, "
                  f"{time.time() - started:.0f} s", file=sys.stderr)
    return cells


def repro_cells(path):
    """{(dataset, input, layer, pooling): {precision: nDCG@10}} from `repro compare --json`."""
    cells = {}
    for row in json.load(open(path, encoding="utf-8")):
        if row.get("state") != "succeeded" or row.get("ndcg_cut_10") is None:
            continue
        key = (row["dataset"], row["input"], int(row["layer"]), row["pooling"])
        cells.setdefault(key, {})[row.get("encode.precision") or "f32"] = row["ndcg_cut_10"]
    return cells


def summarise(label, gaps, tolerance):
    gaps = [g for g in gaps if g is not None]
    if not gaps:
        return None
    beyond = sum(abs(g) > tolerance for g in gaps)
    print(f"  {label:<28} cells {len(gaps):>3}  mean |Δ| {np.mean(np.abs(gaps)):.4f}  "
          f"max |Δ| {np.max(np.abs(gaps)):.4f}  beyond {tolerance}: {beyond}")
    return {"cells": len(gaps), "mean_abs": float(np.mean(np.abs(gaps))),
            "max_abs": float(np.max(np.abs(gaps))), "beyond": beyond}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/all-MiniLM-L6-v2")
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repro", help="`repro compare EXPERIMENT --json` output")
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--out", help="write every cell's values here (JSON)")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = BertModel.from_pretrained(args.model).eval()
    ours = repro_cells(args.repro) if args.repro else {}
    rows, summary = [], {}
    for name, directory in (d.split("=", 1) for d in args.dataset):
        cells = measure(model, tokenizer, name, directory, args)
        print(f"{name}: {len(cells)} cells (layer × pooling × input), nDCG@10")
        gaps = {"pytorch bf16 − pytorch f32": [], "repro bf16 − repro f32": [],
                "repro f32 − pytorch f32": [], "repro bf16 − pytorch bf16": []}
        for (input_format, layer, pooling), torch_values in sorted(cells.items()):
            repro_values = ours.get((name, input_format, layer, pooling), {})
            row = {"dataset": name, "input": input_format, "layer": layer, "pooling": pooling,
                   "pytorch_f32": torch_values["f32"], "pytorch_bf16": torch_values["bf16"],
                   "repro_f32": repro_values.get("f32"), "repro_bf16": repro_values.get("bf16")}
            rows.append(row)

            def gap(a, b):
                return None if row[a] is None or row[b] is None else row[a] - row[b]
            gaps["pytorch bf16 − pytorch f32"].append(gap("pytorch_bf16", "pytorch_f32"))
            gaps["repro bf16 − repro f32"].append(gap("repro_bf16", "repro_f32"))
            gaps["repro f32 − pytorch f32"].append(gap("repro_f32", "pytorch_f32"))
            gaps["repro bf16 − pytorch bf16"].append(gap("repro_bf16", "pytorch_bf16"))
        summary[name] = {label: summarise(label, values, args.tolerance)
                         for label, values in gaps.items()}
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"summary": summary, "cells": rows},
                                                     indent=1) + "\n")


if __name__ == "__main__":
    main()
