#!/usr/bin/env python3
"""Prints repro's and PyTorch's documents/s and their ratio from the rounds `make bench`
leaves in a directory: `repro-N.json` (`repro bench --json`) and `pytorch-N.json`
(`scripts/bench_pytorch.py`), one timed run each, run alternately.

The ratio is that of the two medians; the paired ratios (round by round, both measured
within a minute of each other) show how much of it a shared machine's drift could explain.

    python3 scripts/bench_ratio.py target/bench
"""
import json
import pathlib
import statistics
import sys


def rates(path):
    data = json.loads(path.read_text())
    if "depths" in data:  # repro bench
        full = max(data["depths"], key=lambda row: row["depth"])
        seconds = full["seconds"]
        return [data["settings"]["documents"] / s for s in seconds], data
    return data["runs"], data


def main():
    directory = pathlib.Path(sys.argv[1])
    rounds = sorted(int(p.stem.split("-")[1]) for p in directory.glob("repro-*.json"))
    if not rounds:
        sys.exit(f"error: no repro-N.json in {directory}")
    ours, theirs, paired = [], [], []
    for number in rounds:
        repro_rates, repro = rates(directory / f"repro-{number}.json")
        pytorch_rates, pytorch = rates(directory / f"pytorch-{number}.json")
        ours += repro_rates
        theirs += pytorch_rates
        paired.append(statistics.median(repro_rates) / statistics.median(pytorch_rates))
    line = "{:<8} {:>8.2f} documents/s  (min {:.2f}, max {:.2f}, {} runs)  {}"
    print(line.format("repro", statistics.median(ours), min(ours), max(ours), len(ours),
                      f"{repro['features']}, {repro['threads']} threads"))
    print(line.format("pytorch", statistics.median(theirs), min(theirs), max(theirs),
                      len(theirs), f"torch {pytorch['torch']}, {pytorch['threads']} threads"))
    print(f"ratio repro / pytorch (medians): {statistics.median(ours) / statistics.median(theirs):.2f}")
    print("paired ratios by round: " + " ".join(f"{r:.2f}" for r in paired)
          + f"  (median {statistics.median(paired):.2f})")


if __name__ == "__main__":
    main()
