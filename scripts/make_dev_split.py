#!/usr/bin/env python3
"""Holds out a share of a BEIR dataset's TRAIN queries as a dev split, for choosing training
recipes without ever reading test judgments.

Writes OUT/qrels/train.tsv (the remaining train queries) and OUT/qrels/dev.tsv (the held-out
ones, chosen by a seeded shuffle of the train query ids); OUT/corpus.jsonl and
OUT/queries.jsonl are symbolic links to the source's (read in place, never copied). The
source's test judgments are not read and OUT has none.

    python3 scripts/make_dev_split.py --source ../shared/data/scifact --out target/scifact-dev
"""
import argparse
import pathlib
import random
import sys


def read_qrels(path):
    lines = path.read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line.strip()]
    return header, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    header, rows = read_qrels(args.source / "qrels" / "train.tsv")
    queries = sorted({row[0] for row in rows})
    random.Random(args.seed).shuffle(queries)
    held_out = set(queries[: round(len(queries) * args.fraction)])

    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = args.out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((args.source / name).resolve())
    for split, keep in (("train", lambda q: q not in held_out), ("dev", lambda q: q in held_out)):
        kept = [row for row in rows if keep(row[0])]
        text = "\n".join([header] + ["\t".join(row) for row in kept]) + "\n"
        (args.out / "qrels" / f"{split}.tsv").write_text(text)
        print(f"{split}: {len({row[0] for row in kept})} queries, {len(kept)} judgments",
              file=sys.stderr)


if __name__ == "__main__":
    main()
