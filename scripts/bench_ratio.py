#!/usr/bin/env python3
"""Prints documents/s of repro and of PyTorch at each precision, and their ratios, from the
rounds `make bench` leaves in a directory: `repro-N.json` (`repro bench --json`, one timed
run of each precision it measured), `pytorch-N.json` (`scripts/bench_pytorch.py`, f32) and,
when present, `pytorch-bf16-N.json` (the same with bf16 autocast), run alternately.

Each ratio is that of two medians; the paired ratios (round by round, both measured within a
minute of each other) show how much of it a shared machine's drift could explain.

    python3 scripts/bench_ratio.py target/bench
"""
import json
import pathlib
import statistics
import sys


def repro_rates(path):
    """documents/s of every precision at the deepest depth: {"repro f32": [...], ...}."""
    data = json.loads(path.read_text())
    deepest = max(row["depth"] for row in data["depths"])
    rates, features = {}, {}
    for row in data["depths"]:
        if row["depth"] == deepest:
            name = "repro " + row.get("precision", "f32")
            rates[name] = [data["settings"]["documents"] / s for s in row["seconds"]]
            features[name] = row.get("features", data["features"])
    return rates, features, data


def pytorch_rates(path, name):
    data = json.loads(path.read_text())
    return {name: data["runs"]}, data


def main():
    directory = pathlib.Path(sys.argv[1])
    rounds = sorted(int(p.stem.split("-")[1]) for p in directory.glob("repro-*.json"))
    if not rounds:
        sys.exit(f"error: no repro-N.json in {directory}")
    runs, per_round, notes = {}, [], {}
    for number in rounds:
        this_round = {}
        found, features, repro = repro_rates(directory / f"repro-{number}.json")
        notes.update({name: f"{features[name]}, {repro['threads']} threads" for name in found})
        for file, name in [(f"pytorch-{number}.json", "pytorch f32"),
                           (f"pytorch-bf16-{number}.json", "pytorch bf16")]:
            if (directory / file).exists():
                more, pytorch = pytorch_rates(directory / file, name)
                found.update(more)
                notes[name] = f"torch {pytorch['torch']}, {pytorch['threads']} threads"
        for name, rates in found.items():
            runs.setdefault(name, []).extend(rates)
            this_round[name] = statistics.median(rates)
        per_round.append(this_round)
    line = "{:<13} {:>8.2f} documents/s  (min {:.2f}, max {:.2f}, {} runs)  {}"
    for name, rates in runs.items():
        print(line.format(name, statistics.median(rates), min(rates), max(rates), len(rates),
                          notes[name]))
    pairs = [("repro f32", "pytorch f32"), ("repro bf16", "repro f32"),
             ("repro bf16", "pytorch f32"), ("repro bf16", "pytorch bf16"),
             ("pytorch bf16", "pytorch f32")]
    for ours, theirs in pairs:
        if ours not in runs or theirs not in runs:
            continue
        ratio = statistics.median(runs[ours]) / statistics.median(runs[theirs])
        paired = [r[ours] / r[theirs] for r in per_round if ours in r and theirs in r]
        print(f"ratio {ours} / {theirs} (medians): {ratio:.2f}; paired by round: "
              + " ".join(f"{p:.2f}" for p in paired)
              + f" (median {statistics.median(paired):.2f})")


if __name__ == "__main__":
    main()
