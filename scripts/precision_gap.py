#!/usr/bin/env python3
"""bf16 against f32, cell by cell, from `repro compare EXPERIMENT --json` on stdin (an
experiment that sweeps `encode.precision`, e.g. experiments/bf16_quality.toml).

Pairs every bf16 cell with the f32 cell of the same other parameters and prints, per
dataset, the largest |bf16 − f32| of each measure and the cell where it occurs, then every
pair's nDCG@10 (`--all`). Exits 1 when a gap exceeds `--tolerance` (default 0.002, the
issue's bound on nDCG@10).

    repro compare bf16_quality --json | python3 scripts/precision_gap.py
"""
import argparse
import json
import sys

PRECISION = "encode.precision"
MEASURES = ["ndcg_cut_10", "mrr_cut_10", "success_10", "recall_100"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--all", action="store_true", help="print every pair")
    args = parser.parse_args()
    rows = [row for row in json.load(sys.stdin) if row.get("state") == "succeeded"]
    parameters = sorted({key for row in rows for key in row
                         if "." in key or key in ("dataset", "model", "input", "layer",
                                                  "pooling")} - {PRECISION})
    by_cell = {}
    for row in rows:
        cell = tuple((key, json.dumps(row.get(key))) for key in parameters)
        by_cell.setdefault(cell, {})[row.get(PRECISION) or "f32"] = row
    pairs = [(dict(cell), both["f32"], both["bf16"]) for cell, both in by_cell.items()
             if "f32" in both and "bf16" in both]
    if not pairs:
        sys.exit("error: no cell has both an f32 and a bf16 result")
    worst_ndcg = 0.0
    for dataset in sorted({json.loads(cell["dataset"]) for cell, _, _ in pairs}):
        mine = [p for p in pairs if json.loads(p[0]["dataset"]) == dataset]
        print(f"{dataset}: {len(mine)} cells")
        for measure in MEASURES:
            gaps = [(abs(bf16[measure] - f32[measure]), cell, f32[measure], bf16[measure])
                    for cell, f32, bf16 in mine
                    if f32.get(measure) is not None and bf16.get(measure) is not None]
            if not gaps:
                continue
            gap, cell, f32, bf16 = max(gaps, key=lambda g: g[0])
            where = ", ".join(f"{k}={json.loads(cell[k])}" for k in ("input", "layer", "pooling"))
            print(f"  {measure:<12} max |bf16 − f32| {gap:.4f}  ({where}: {f32:.4f} → {bf16:.4f})")
            if measure == "ndcg_cut_10":
                worst_ndcg = max(worst_ndcg, gap)
        if args.all:
            for cell, f32, bf16 in sorted(mine, key=lambda p: (p[0]["input"], p[0]["layer"],
                                                                p[0]["pooling"])):
                where = " ".join(json.loads(cell[k]).__str__() for k in ("input", "layer",
                                                                          "pooling"))
                print(f"    {where:<28} {f32['ndcg_cut_10']:.4f} {bf16['ndcg_cut_10']:.4f} "
                      f"{bf16['ndcg_cut_10'] - f32['ndcg_cut_10']:+.4f}")
    verdict = "within" if worst_ndcg <= args.tolerance else "BEYOND"
    print(f"largest nDCG@10 gap {worst_ndcg:.4f}: {verdict} the tolerance {args.tolerance}")
    sys.exit(0 if worst_ndcg <= args.tolerance else 1)


if __name__ == "__main__":
    main()
