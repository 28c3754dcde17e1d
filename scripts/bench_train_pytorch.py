#!/usr/bin/env python3
"""The PyTorch side of `make bench-train`: a plain PyTorch training loop doing what
`repro dev train-ce` / `repro dev train-de` do, with the Hugging Face recipe
(sentence-transformers' defaults), on the same TSV, settings and thread count.

- `--kind ce`: a cross encoder, `AutoModelForSequenceClassification` (num_labels=1) from
  `--model`, on `query<TAB>document<TAB>label` lines; each pair tokenized as
  (query, document), loss `BCEWithLogitsLoss` on the single logit.
- `--kind de`: a 2-layer dual-encoder student (embeddings and layers 0, 1 copied from
  `--model`, no pooler) on `query<TAB>positive` lines; each side tokenized separately, mean
  pooling over the attention mask, MultipleNegativesRankingLoss (cross entropy over 20 × the
  cosine similarity of every query to every positive of the batch, target the diagonal).

Both: the first `--limit` lines, shuffled every epoch by a seeded generator, batches of
`--batch` padded to their longest member (truncated at `--max-len`), dropout on, AdamW
(eps 1e-8, weight decay 0.01 except biases and LayerNorm), linear schedule with
ceil(10%) warm-up, gradient norm clipped at 1.

The clock starts once the model is loaded, before tokenization, and stops after the last
optimiser step (as repro's `seconds`). Prints one JSON object on stdout: kind,
examples_seen, steps, seconds, examples_per_second, first_loss, last_loss, peak_rss_bytes,
torch, threads, batch, max_len.

    .venv-bench/bin/python scripts/bench_train_pytorch.py --kind ce \
        --model models/all-MiniLM-L6-v2 --data target/bench-train/ce_pairs.tsv \
        --limit 480 --batch 16 --max-len 128 --learning-rate 5e-5 --epochs 1
"""
import argparse
import json
import math
import os
import resource
import time


def read_tsv(path, limit, fields):
    """The first `limit` non-blank lines (as repro reads them), split on tabs."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if limit is not None and len(rows) == limit:
                break
            row = line.split("\t")
            if len(row) < fields:
                raise SystemExit(f"error: {path}:{number}: expected {fields} fields")
            rows.append(row)
    if not rows:
        raise SystemExit(f"error: no examples in {path}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["ce", "de"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import torch
    import torch.nn.functional as F
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                              BertModel, get_linear_schedule_with_warmup)

    torch.set_num_threads(args.threads or os.cpu_count())
    torch.manual_seed(args.seed)  # the classifier head's initialisation, dropout masks
    rows = read_tsv(args.data, args.limit, 3 if args.kind == "ce" else 2)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    if args.kind == "ce":
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    else:
        teacher = BertModel.from_pretrained(args.model, add_pooling_layer=False)
        config = BertConfig.from_pretrained(args.model)
        config.num_hidden_layers = 2
        model = BertModel(config, add_pooling_layer=False)
        model.embeddings.load_state_dict(teacher.embeddings.state_dict())
        for layer in range(2):
            model.encoder.layer[layer].load_state_dict(teacher.encoder.layer[layer].state_dict())
        del teacher
    model.train()

    def tokenize(*texts):
        return tokenizer(*texts, truncation=True, max_length=args.max_len, padding="longest",
                         return_tensors="pt")

    def mean_pool(inputs):
        hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def loss_of(batch):
        if args.kind == "ce":
            inputs = tokenize([row[0] for row in batch], [row[1] for row in batch])
            labels = torch.tensor([float(row[2]) for row in batch])
            logits = model(**inputs).logits.squeeze(-1)
            return F.binary_cross_entropy_with_logits(logits, labels)
        queries = mean_pool(tokenize([row[0] for row in batch]))
        positives = mean_pool(tokenize([row[1] for row in batch]))
        scores = F.normalize(queries, dim=-1) @ F.normalize(positives, dim=-1).T * 20.0
        return F.cross_entropy(scores, torch.arange(len(batch)))

    no_decay = ("bias", "LayerNorm")
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not any(k in n for k in no_decay)],
          "weight_decay": 0.01},
         {"params": [p for n, p in named if any(k in n for k in no_decay)],
          "weight_decay": 0.0}],
        lr=args.learning_rate, eps=1e-8, betas=(0.9, 0.999))
    total_steps = math.ceil(len(rows) / args.batch) * args.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(0.1 * total_steps), num_training_steps=total_steps)
    generator = torch.Generator().manual_seed(args.seed)

    started = time.perf_counter()
    losses = []
    examples_seen = 0
    for _ in range(args.epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order), args.batch):
            batch = [rows[i] for i in order[start:start + args.batch]]
            loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            examples_seen += len(batch)
    seconds = time.perf_counter() - started

    print(json.dumps({
        "kind": args.kind, "examples_seen": examples_seen, "steps": len(losses),
        "seconds": seconds, "examples_per_second": examples_seen / max(seconds, 1e-9),
        "first_loss": losses[0], "last_loss": losses[-1],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "batch": args.batch, "max_len": args.max_len,
    }))


if __name__ == "__main__":
    main()
