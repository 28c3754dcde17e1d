#!/usr/bin/env python3
"""Prints repro's and PyTorch's documents/s (medians of their runs) and their ratio, from
`repro bench --json` and `scripts/bench_pytorch.py` outputs."""
import json
import sys


def main():
    repro = json.load(open(sys.argv[1]))
    pytorch = json.load(open(sys.argv[2]))
    full = max(repro["depths"], key=lambda row: row["depth"])
    ours = full["documents_per_second"]
    theirs = pytorch["documents_per_second"]
    print(f"repro   ({repro['features']}, {repro['threads']} threads): "
          f"{ours['median']:.2f} documents/s (min {ours['min']:.2f}, max {ours['max']:.2f})")
    print(f"pytorch (torch {pytorch['torch']}, {pytorch['threads']} threads): "
          f"{theirs['median']:.2f} documents/s (min {theirs['min']:.2f}, max {theirs['max']:.2f})")
    print(f"ratio repro / pytorch: {ours['median'] / theirs['median']:.2f}")


if __name__ == "__main__":
    main()
