#!/usr/bin/env python3
"""The training data of `make bench-train`, from SciFact's TRAIN split only (the BEIR
mirror's qrels/train.tsv; qrels/test.tsv is never read).

Writes two TSV files into OUTDIR:
- `ce_pairs.tsv`: `query<TAB>document<TAB>label`; for every judged (query, document) of the
  train qrels, in their file order, the positive line (label 1) and then one negative line
  (label 0) whose document is drawn with `random.Random(seed)` among the corpus documents
  not judged for that query.
- `de_pairs.tsv`: `query<TAB>positive`, one line per judged train pair, same order.

Document text is title + " " + text (stripped); tabs and newlines inside any text become
spaces. Counts go to stderr.

    python3 scripts/bench_train_data.py --mirror ../shared/data --out target/bench-train
"""
import argparse
import json
import pathlib
import random
import re
import sys

_SPACE = re.compile(r"[\t\r\n]")


def clean(text):
    return _SPACE.sub(" ", text).strip()


def read_jsonl(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def read_qrels(path):
    """(query id, corpus id, score) rows after the `query-id corpus-id score` header."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if number == 1 and fields[0] == "query-id":
                continue
            if len(fields) != 3:
                sys.exit(f"error: {path}:{number}: expected 3 fields, got {len(fields)}")
            rows.append((fields[0], fields[1], float(fields[2])))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", required=True, help="the data mirror (holds scifact/)")
    parser.add_argument("--out", required=True, help="directory for the two TSV files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scifact = pathlib.Path(args.mirror) / "scifact"
    corpus = {}
    for document in read_jsonl(scifact / "corpus.jsonl"):
        corpus[str(document["_id"])] = clean(
            (document.get("title") or "") + " " + (document.get("text") or ""))
    corpus_ids = list(corpus)  # file order, so the draw is reproducible
    queries = {str(query["_id"]): clean(query["text"])
               for query in read_jsonl(scifact / "queries.jsonl")}
    qrels = read_qrels(scifact / "qrels" / "train.tsv")

    judged = {}
    for query_id, corpus_id, _ in qrels:
        judged.setdefault(query_id, set()).add(corpus_id)
    missing = sorted({q for q, _, _ in qrels if q not in queries}) + \
        sorted({d for _, d, _ in qrels if d not in corpus})
    if missing:
        sys.exit(f"error: train qrels name ids missing from the mirror: {missing[:10]}")

    rng = random.Random(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    positives = 0
    skipped = 0
    with open(out / "ce_pairs.tsv", "w", encoding="utf-8") as ce, \
            open(out / "de_pairs.tsv", "w", encoding="utf-8") as de:
        for query_id, corpus_id, score in qrels:
            if score <= 0:  # a judged non-relevant pair (SciFact has none): not a positive
                skipped += 1
                continue
            query = queries[query_id]
            while True:  # rejection sampling: uniform over the unjudged documents
                negative = rng.choice(corpus_ids)
                if negative not in judged[query_id]:
                    break
            ce.write(f"{query}\t{corpus[corpus_id]}\t1\n")
            ce.write(f"{query}\t{corpus[negative]}\t0\n")
            de.write(f"{query}\t{corpus[corpus_id]}\n")
            positives += 1
    print(f"scifact train: {len(judged)} queries, {len(qrels)} judged pairs"
          + (f" ({skipped} with score <= 0 skipped)" if skipped else "")
          + f"; {out / 'ce_pairs.tsv'}: {2 * positives} lines ({positives} positive,"
          f" {positives} negative); {out / 'de_pairs.tsv'}: {positives} lines",
          file=sys.stderr)


if __name__ == "__main__":
    main()
